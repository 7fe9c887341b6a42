//! Resolves the serve options: flag > `SPILLWAY_*` environment (both already merged by
//! clap) > config file > default, then validates everything once into the typed
//! `ServerConfig` the front reads. Every error is one line naming the option and what is
//! allowed.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use spillway_server::{AccessLog, BindAddr, ServerConfig, WorkerCommand};

use crate::cli::ServeArgs;

/// A configuration mistake, reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read or is not TOML.
    #[error("config file {path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A key or value is not allowed.
    #[error("{key}: {msg}")]
    Value {
        /// The option (`--threads`, or `threads` in the file).
        key: String,
        /// What is wrong and what is allowed.
        msg: String,
    },
}

fn bad(key: &str, msg: impl Into<String>) -> SettingsError {
    SettingsError::Value {
        key: key.to_owned(),
        msg: msg.into(),
    }
}

/// Keys a config file may hold (dashes and underscores are equivalent).
const FILE_KEYS: &[&str] = &[
    "app",
    "bind",
    "workers",
    "threads",
    "backlog",
    "keep_alive",
    "header_timeout",
    "graceful_timeout",
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "chdir",
    "pythonpath",
    "virtualenv",
    "env",
    "root_path",
    "access_log",
    "log_level",
    "front_threads",
    "max_queue",
    "queue_timeout",
    "max_connections",
    "timeout",
    "max_requests",
    "max_requests_jitter",
    "max_worker_memory",
    "admin",
    "agent_check",
    "drain_delay",
    "pid_file",
    "reload",
    "proxy_protocol",
    "forwarded_allow_ips",
];

/// Log levels accepted by `--log-level`.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Fills options not given by flag or environment from the config file.
pub fn merge_file(args: &mut ServeArgs) -> Result<(), SettingsError> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| SettingsError::File {
        path: shown.clone(),
        msg: e.to_string(),
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| SettingsError::File {
            path: shown.clone(),
            msg: e.message().replace('\n', " "),
        })?;
    for (raw_key, value) in table {
        let key = raw_key.replace('-', "_");
        if !FILE_KEYS.contains(&key.as_str()) {
            return Err(SettingsError::File {
                path: shown,
                msg: format!(
                    "unknown key '{raw_key}' (allowed: {})",
                    FILE_KEYS.join(", ")
                ),
            });
        }
        let ctx = format!("{shown}: {key}");
        match key.as_str() {
            "app" => fill(&mut args.app, || string(&ctx, value)),
            "bind" => fill_vec(&mut args.bind, || strings(&ctx, value)),
            "workers" => fill(&mut args.workers, || int(&ctx, value, 1, 1024)),
            "threads" => fill(&mut args.threads, || int(&ctx, value, 1, 1024)),
            "backlog" => fill(&mut args.backlog, || int(&ctx, value, 1, 1_000_000)),
            "keep_alive" => fill(&mut args.keep_alive, || int(&ctx, value, 1, 86_400)),
            "header_timeout" => fill(&mut args.header_timeout, || int(&ctx, value, 1, 3_600)),
            "graceful_timeout" => fill(&mut args.graceful_timeout, || int(&ctx, value, 0, 86_400)),
            "limit_request_line" => fill(&mut args.limit_request_line, || {
                int(&ctx, value, 64, 1_048_576)
            }),
            "limit_request_fields" => fill(&mut args.limit_request_fields, || {
                int(&ctx, value, 1, 10_000)
            }),
            "limit_request_field_size" => fill(&mut args.limit_request_field_size, || {
                int(&ctx, value, 64, 1_048_576)
            }),
            "chdir" => fill(&mut args.chdir, || string(&ctx, value).map(PathBuf::from)),
            "pythonpath" => fill_vec(&mut args.pythonpath, || {
                strings(&ctx, value).map(|v| v.into_iter().map(PathBuf::from).collect())
            }),
            "virtualenv" => fill(&mut args.virtualenv, || {
                string(&ctx, value).map(PathBuf::from)
            }),
            "env" => fill_vec(&mut args.env, || env_table(&ctx, value)),
            "root_path" => fill(&mut args.root_path, || string(&ctx, value)),
            "access_log" => fill(&mut args.access_log, || string(&ctx, value)),
            "log_level" => fill(&mut args.log_level, || string(&ctx, value)),
            "front_threads" => fill(&mut args.front_threads, || int(&ctx, value, 1, 256)),
            "max_queue" => fill(&mut args.max_queue, || int(&ctx, value, 0, 1_000_000)),
            "queue_timeout" => fill(&mut args.queue_timeout, || int(&ctx, value, 1, 3_600)),
            "max_connections" => fill(&mut args.max_connections, || {
                int(&ctx, value, 1, 10_000_000)
            }),
            "timeout" => fill(&mut args.timeout, || int(&ctx, value, 1, 86_400)),
            "max_requests" => fill(&mut args.max_requests, || int(&ctx, value, 0, i64::MAX)),
            "max_requests_jitter" => fill(&mut args.max_requests_jitter, || {
                int(&ctx, value, 0, i64::MAX)
            }),
            "max_worker_memory" => fill(&mut args.max_worker_memory, || {
                int(&ctx, value, 0, 1_048_576)
            }),
            _ => Ok(()),
        }?;
    }
    Ok(())
}

fn fill<T>(
    slot: &mut Option<T>,
    get: impl FnOnce() -> Result<T, SettingsError>,
) -> Result<(), SettingsError> {
    let v = get()?;
    if slot.is_none() {
        *slot = Some(v);
    }
    Ok(())
}

fn fill_vec<T>(
    slot: &mut Vec<T>,
    get: impl FnOnce() -> Result<Vec<T>, SettingsError>,
) -> Result<(), SettingsError> {
    let v = get()?;
    if slot.is_empty() {
        *slot = v;
    }
    Ok(())
}

fn string(key: &str, v: toml::Value) -> Result<String, SettingsError> {
    match v {
        toml::Value::String(s) => Ok(s),
        other => Err(bad(
            key,
            format!("expected a string, got {}", other.type_str()),
        )),
    }
}

fn strings(key: &str, v: toml::Value) -> Result<Vec<String>, SettingsError> {
    match v {
        toml::Value::String(s) => Ok(vec![s]),
        toml::Value::Array(a) => a.into_iter().map(|x| string(key, x)).collect(),
        other => Err(bad(
            key,
            format!(
                "expected a string or a list of strings, got {}",
                other.type_str()
            ),
        )),
    }
}

fn int<T: TryFrom<i64>>(key: &str, v: toml::Value, min: i64, max: i64) -> Result<T, SettingsError> {
    match v {
        toml::Value::Integer(i) if (min..=max).contains(&i) => {
            T::try_from(i).map_err(|_| bad(key, format!("expected an integer from {min} to {max}")))
        }
        toml::Value::Integer(i) => Err(bad(
            key,
            format!("{i} is out of range: expected an integer from {min} to {max}"),
        )),
        other => Err(bad(
            key,
            format!(
                "expected an integer from {min} to {max}, got {}",
                other.type_str()
            ),
        )),
    }
}

fn env_table(key: &str, v: toml::Value) -> Result<Vec<String>, SettingsError> {
    match v {
        toml::Value::Table(t) => t
            .into_iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => Ok(format!("{k}={s}")),
                other => Err(bad(
                    key,
                    format!("value of {k} must be a string, got {}", other.type_str()),
                )),
            })
            .collect(),
        other => strings(key, other),
    }
}

/// The validated result: the front's config, the log level and the worker's needs.
pub struct Settings {
    /// For the front.
    pub server: ServerConfig,
    /// Log level name.
    pub log_level: String,
    /// Event-loop threads of the front.
    pub front_threads: usize,
}

fn parse_bind(s: &str) -> Result<Vec<BindAddr>, SettingsError> {
    let key = "--bind";
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad(
                key,
                format!("'{s}': unix: needs a path, e.g. unix:/run/spillway.sock"),
            ));
        }
        return Ok(vec![BindAddr::Unix(PathBuf::from(path))]);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(vec![BindAddr::Tcp(sa)]);
    }
    let with_host = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    match with_host.to_socket_addrs() {
        Ok(addrs) => {
            let mut v: Vec<BindAddr> = addrs.map(BindAddr::Tcp).collect();
            v.dedup();
            if v.is_empty() {
                Err(bad(key, format!("'{s}' resolves to no address")))
            } else {
                Ok(v)
            }
        }
        Err(_) => Err(bad(
            key,
            format!("'{s}' is not HOST:PORT, [IPv6]:PORT or unix:/path"),
        )),
    }
}

fn existing_dir(key: &str, p: &Path) -> Result<PathBuf, SettingsError> {
    match std::fs::canonicalize(p) {
        Ok(c) if c.is_dir() => Ok(c),
        Ok(_) => Err(bad(key, format!("{} is not a directory", p.display()))),
        Err(e) => Err(bad(key, format!("{}: {e}", p.display()))),
    }
}

/// Validates the merged options into [`Settings`].
pub fn resolve(args: ServeArgs) -> Result<Settings, SettingsError> {
    let app = args.app.ok_or_else(|| {
        bad(
            "APP",
            "missing: give module:callable, module:factory() or path/to/file.py:callable",
        )
    })?;
    if app.trim().is_empty() {
        return Err(bad("APP", "is empty: give module:callable"));
    }
    let bind_specs = if args.bind.is_empty() {
        vec!["127.0.0.1:8000".to_owned()]
    } else {
        args.bind
    };
    let mut binds = Vec::new();
    for b in &bind_specs {
        for a in parse_bind(b)? {
            if !binds.contains(&a) {
                binds.push(a);
            }
        }
    }
    let workers = match args.workers {
        Some(w) => w as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let threads = args.threads.unwrap_or(4);
    let log_level = args
        .log_level
        .unwrap_or_else(|| "info".to_owned())
        .to_ascii_lowercase();
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        return Err(bad(
            "--log-level",
            format!("'{log_level}' is not one of {}", LOG_LEVELS.join(", ")),
        ));
    }
    let root_path = match args.root_path {
        None => String::new(),
        Some(r) => {
            let trimmed = r.trim_end_matches('/').to_owned();
            if !trimmed.is_empty() && !trimmed.starts_with('/') {
                return Err(bad(
                    "--root-path",
                    format!("'{r}' must start with /, e.g. /identity"),
                ));
            }
            trimmed
        }
    };
    let access_log = match args.access_log.as_deref() {
        None | Some("") => None,
        Some("-") => Some(AccessLog::Stdout),
        Some(p) => Some(AccessLog::File(PathBuf::from(p))),
    };
    let chdir = args
        .chdir
        .as_deref()
        .map(|d| existing_dir("--chdir", d))
        .transpose()?;
    let chdir_for_reload = chdir.clone();
    // VIRTUAL_ENV (an activated venv) counts only when nothing else named one.
    let venv = args.virtualenv.or_else(|| {
        std::env::var_os("VIRTUAL_ENV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let venv = match venv {
        None => None,
        Some(v) => {
            let dir = existing_dir("--virtualenv", &v)?;
            if !dir.join("pyvenv.cfg").is_file() {
                return Err(bad(
                    "--virtualenv",
                    format!(
                        "{} is not a virtualenv (no pyvenv.cfg); create one with python3 -m venv",
                        v.display()
                    ),
                ));
            }
            Some(dir)
        }
    };
    let mut env = Vec::new();
    for kv in &args.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                env.push((OsString::from(k), OsString::from(v)))
            }
            _ => return Err(bad("--env", format!("'{kv}' is not KEY=VALUE"))),
        }
    }
    let admin = match args.admin.as_deref() {
        None => None,
        Some(a) => match parse_bind(a)
            .map_err(|_| bad("--admin", format!("'{a}' is not HOST:PORT or unix:/path")))?
            .into_iter()
            .next()
        {
            Some(b) => Some(b),
            None => return Err(bad("--admin", format!("'{a}' resolves to no address"))),
        },
    };
    let agent_check = match args.agent_check.as_deref() {
        None => None,
        Some(a) => match parse_bind(a) {
            Ok(v) => match v.into_iter().next() {
                Some(BindAddr::Tcp(sa)) => Some(sa),
                _ => {
                    return Err(bad(
                        "--agent-check",
                        format!("'{a}' must be a TCP HOST:PORT"),
                    ))
                }
            },
            Err(_) => return Err(bad("--agent-check", format!("'{a}' is not HOST:PORT"))),
        },
    };
    let program = std::env::current_exe()
        .map_err(|e| bad("spillway", format!("cannot find our own executable: {e}")))?;
    let mut wargs: Vec<OsString> = vec![
        "__worker".into(),
        "--fd".into(),
        "3".into(),
        "--app".into(),
        app.clone().into(),
        "--threads".into(),
        threads.to_string().into(),
        "--log-level".into(),
        log_level.clone().into(),
    ];
    if workers > 1 {
        wargs.push("--multiprocess".into());
    }
    for p in &args.pythonpath {
        wargs.push("--pythonpath".into());
        wargs.push(p.clone().into());
    }
    if let Some(v) = &venv {
        wargs.push("--virtualenv".into());
        wargs.push(v.clone().into());
    }
    let server = ServerConfig {
        app,
        binds,
        workers,
        threads,
        backlog: args.backlog.unwrap_or(4096),
        keep_alive: Duration::from_secs(args.keep_alive.unwrap_or(75)),
        header_timeout: Duration::from_secs(args.header_timeout.unwrap_or(10)),
        limit_request_line: args.limit_request_line.unwrap_or(4094) as usize,
        limit_request_fields: args.limit_request_fields.unwrap_or(100) as usize,
        limit_request_field_size: args.limit_request_field_size.unwrap_or(8190) as usize,
        root_path,
        access_log,
        graceful_timeout: Duration::from_secs(args.graceful_timeout.unwrap_or(30)),
        worker_command: WorkerCommand {
            program,
            args: wargs,
            env,
            cwd: chdir,
        },
        max_queue: args.max_queue.unwrap_or(1024) as usize,
        queue_timeout: Duration::from_secs(args.queue_timeout.unwrap_or(30)),
        max_connections: args.max_connections.unwrap_or(10_000) as usize,
        timeout: Duration::from_secs(args.timeout.unwrap_or(60)),
        max_requests: args.max_requests.unwrap_or(0),
        max_requests_jitter: args.max_requests_jitter.unwrap_or(0),
        max_worker_memory: args.max_worker_memory.filter(|&m| m > 0).map(|m| m << 20),
        admin,
        agent_check,
        drain_delay: Duration::from_secs(args.drain_delay.unwrap_or(5)),
        pid_file: args.pid_file.clone(),
        reload_roots: if args.reload {
            let cwd = match &chdir_for_reload {
                Some(d) => d.clone(),
                None => std::env::current_dir()
                    .map_err(|e| bad("--reload", format!("no working directory: {e}")))?,
            };
            spillway_server::reload_roots(&cwd, &args.pythonpath)
        } else {
            Vec::new()
        },
        proxy_protocol: args.proxy_protocol,
        forwarded_allow_ips: match args.forwarded_allow_ips.as_deref() {
            None => spillway_server::trusted::TrustedProxies::default(),
            Some(list) => spillway_server::trusted::TrustedProxies::parse(list)
                .map_err(|e| bad("--forwarded-allow-ips", e.to_string()))?,
        },
        notify: spillway_server::StateNotifier::none(),
    };
    Ok(Settings {
        server,
        log_level,
        front_threads: args.front_threads.unwrap_or(1) as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse_every_documented_form() {
        assert_eq!(
            parse_bind("127.0.0.1:8000").unwrap(),
            vec![BindAddr::Tcp("127.0.0.1:8000".parse().unwrap())]
        );
        assert_eq!(
            parse_bind("[::]:9000").unwrap(),
            vec![BindAddr::Tcp("[::]:9000".parse().unwrap())]
        );
        assert_eq!(
            parse_bind("unix:/tmp/x.sock").unwrap(),
            vec![BindAddr::Unix("/tmp/x.sock".into())]
        );
        assert_eq!(
            parse_bind(":8080").unwrap(),
            vec![BindAddr::Tcp("0.0.0.0:8080".parse().unwrap())]
        );
        assert!(parse_bind("nonsense").is_err());
        assert!(parse_bind("unix:").is_err());
    }

    #[test]
    fn file_values_are_checked_with_the_key_in_the_message() {
        let e = int::<u16>("f: threads", toml::Value::Integer(0), 1, 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads") && e.contains("1 to 1024"), "{e}");
        let e = string("f: app", toml::Value::Integer(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn file_fills_only_what_flags_left_open() {
        let dir = std::env::temp_dir().join(format!("spillway-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.toml");
        std::fs::write(&f, "threads = 7\nkeep-alive = 5\nenv = { A = \"b\" }\n").unwrap();
        let mut args = ServeArgs {
            config: Some(f.clone()),
            threads: Some(2),
            ..Default::default()
        };
        merge_file(&mut args).unwrap();
        assert_eq!(args.threads, Some(2));
        assert_eq!(args.keep_alive, Some(5));
        assert_eq!(args.env, vec!["A=b".to_owned()]);
        std::fs::write(&f, "thread = 7\n").unwrap();
        let mut args = ServeArgs {
            config: Some(f),
            ..Default::default()
        };
        let e = merge_file(&mut args).unwrap_err().to_string();
        assert!(
            e.contains("unknown key 'thread'") && e.contains("threads"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
