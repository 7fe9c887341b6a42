//! Resolves the serve options (flag > `SPILLWAY_*` environment > config file > default, as
//! `config_file` merged them) and validates everything once into the typed `ServerConfig`
//! the front reads. Every error is one line naming the option and what is allowed.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use spillway_server::{AccessLog, BindAddr, ServerConfig, WorkerCommand};

use crate::cli::ServeArgs;
use crate::interpreter::{self, Host, Interpreter};

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
    /// The command line itself (clap's own message, rendered by the caller).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

pub(crate) fn bad(key: &str, msg: impl Into<String>) -> SettingsError {
    SettingsError::Value {
        key: key.to_owned(),
        msg: msg.into(),
    }
}

/// The validated result: the front's config, the log level and the worker's needs.
pub struct Settings {
    /// For the front.
    pub server: ServerConfig,
    /// Log level name.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Event-loop threads of the front.
    pub front_threads: usize,
    /// The interpreter workers run in.
    pub interpreter: Interpreter,
}

fn parse_bind(key: &str, s: &str) -> Result<Vec<BindAddr>, SettingsError> {
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

/// TLS from --certfile, --keyfile, --ca-certs, --cert-reqs and the `tls:` binds.
fn tls_config(
    args: &ServeArgs,
    any_tls_bind: bool,
) -> Result<Option<spillway_server::TlsConfig>, SettingsError> {
    use spillway_server::CertReqs;
    let cert_reqs = match args.cert_reqs.to_ascii_lowercase().as_str() {
        "optional" | "1" => CertReqs::Optional,
        "required" | "2" => CertReqs::Required,
        _ => CertReqs::None,
    };
    let (certfile, keyfile) = match (&args.certfile, &args.keyfile) {
        (None, None) => {
            if any_tls_bind {
                return Err(bad(
                    "--bind",
                    "a tls: listener needs --certfile and --keyfile",
                ));
            }
            if args.ca_certs.is_some() || cert_reqs != CertReqs::None {
                return Err(bad(
                    "--ca-certs",
                    "client certificates need TLS: give --certfile and --keyfile",
                ));
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (Some(_), None) => return Err(bad("--keyfile", "missing: --certfile needs its key")),
        (None, Some(_)) => {
            return Err(bad(
                "--certfile",
                "missing: --keyfile needs its certificate",
            ))
        }
    };
    if cert_reqs != CertReqs::None && args.ca_certs.is_none() {
        return Err(bad(
            "--cert-reqs",
            "optional and required need --ca-certs, the CAs client certificates chain to",
        ));
    }
    for (key, p) in [
        ("--certfile", Some(&certfile)),
        ("--keyfile", Some(&keyfile)),
        ("--ca-certs", args.ca_certs.as_ref()),
    ] {
        if let Some(p) = p {
            if let Err(e) = std::fs::metadata(p) {
                return Err(bad(key, format!("{}: {e}", p.display())));
            }
        }
    }
    Ok(Some(spillway_server::TlsConfig {
        certfile,
        keyfile,
        ca_certs: args.ca_certs.clone(),
        cert_reqs,
        all_tcp: !any_tls_bind,
    }))
}

fn existing_dir(key: &str, p: &Path) -> Result<PathBuf, SettingsError> {
    match std::fs::canonicalize(p) {
        Ok(c) if c.is_dir() => Ok(c),
        Ok(_) => Err(bad(key, format!("{} is not a directory", p.display()))),
        Err(e) => Err(bad(key, format!("{}: {e}", p.display()))),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Validates the merged options into [`Settings`].
pub fn resolve(args: ServeArgs, host: &Host) -> Result<Settings, SettingsError> {
    let app = args.app.clone().ok_or_else(|| {
        bad(
            "APP",
            "missing: give module:callable, module:factory() or path/to/file.py:callable",
        )
    })?;
    if app.trim().is_empty() {
        return Err(bad("APP", "is empty: give module:callable"));
    }
    let binds = binds(&args.bind)?;
    let any_tls_bind = binds.iter().any(|b| matches!(b, BindAddr::Tls(_)));
    let tls = tls_config(&args, any_tls_bind)?;
    let workers = match args.workers {
        Some(w) => w as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let log_level = args.log_level.to_ascii_lowercase();
    let chdir = args
        .chdir
        .as_deref()
        .map(|d| existing_dir("--chdir", d))
        .transpose()?;
    if args.threads.is_none() && args.min_threads > args.max_threads {
        return Err(bad(
            "--min-threads",
            format!(
                "{} is above --max-threads {}; the pool sizes itself between the two",
                args.min_threads, args.max_threads
            ),
        ));
    }
    let (worker_command, interpreter) =
        worker_command(&args, host, &app, workers, &log_level, chdir.clone())?;
    let server = ServerConfig {
        app,
        binds,
        workers,
        threads: spillway_server::Threads {
            min: args.min_threads,
            max: args.max_threads,
            pinned: args.threads,
        },
        backlog: args.backlog,
        keep_alive: secs(args.keep_alive),
        header_timeout: secs(args.header_timeout),
        body_buffer: args.body_buffer,
        body_timeout: secs(args.body_timeout),
        body_min_rate: args.body_min_rate,
        limit_request_line: args.limit_request_line as usize,
        limit_request_fields: args.limit_request_fields as usize,
        limit_request_field_size: args.limit_request_field_size as usize,
        root_path: root_path(args.root_path.as_deref())?,
        tls,
        http: match args.http.to_ascii_lowercase().as_str() {
            "1" => spillway_server::HttpVersions::Http1,
            "2" => spillway_server::HttpVersions::Http2,
            _ => spillway_server::HttpVersions::Auto,
        },
        http2_max_streams: args.http2_max_streams,
        access_log_format: match args.access_log_format.to_ascii_lowercase().as_str() {
            "combined" => spillway_server::AccessLogFormat::Combined,
            "json" => spillway_server::AccessLogFormat::Json,
            _ => spillway_server::AccessLogFormat::Default,
        },
        access_log: match args.access_log.as_deref() {
            None | Some("") => None,
            Some("-") => Some(AccessLog::Stdout),
            Some(p) => Some(AccessLog::File(PathBuf::from(p))),
        },
        graceful_timeout: secs(args.graceful_timeout),
        worker_command,
        max_queue: args.max_queue as usize,
        queue_timeout: secs(args.queue_timeout),
        max_connections: args.max_connections as usize,
        timeout: secs(args.timeout),
        max_requests: args.max_requests,
        max_requests_jitter: args.max_requests_jitter,
        max_worker_memory: (args.max_worker_memory > 0).then_some(args.max_worker_memory << 20),
        admin: admin_addr(args.admin.as_deref())?,
        admin_hosts: admin_hosts(&args.admin_hosts)?,
        agent_check: agent_addr(args.agent_check.as_deref())?,
        drain_delay: secs(args.drain_delay),
        pid_file: args.pid_file.clone(),
        reload_roots: if args.reload {
            let cwd = match &chdir {
                Some(d) => d.clone(),
                None => std::env::current_dir()
                    .map_err(|e| bad("--reload", format!("no working directory: {e}")))?,
            };
            spillway_server::reload_roots(&cwd, &args.pythonpath)
        } else {
            Vec::new()
        },
        proxy_protocol: args.proxy_protocol,
        forwarded_allow_ips: spillway_server::trusted::TrustedProxies::parse(
            &args.forwarded_allow_ips,
        )
        .map_err(|e| bad("--forwarded-allow-ips", e.to_string()))?,
        server_timing: match args.server_timing.to_ascii_lowercase().as_str() {
            "off" => spillway_server::ServerTiming::Off,
            "all" => spillway_server::ServerTiming::All,
            _ => spillway_server::ServerTiming::Trusted,
        },
        notify: spillway_server::StateNotifier::none(),
    };
    Ok(Settings {
        server,
        log_level,
        log_format: args.log_format.to_ascii_lowercase(),
        front_threads: args.front_threads as usize,
        interpreter,
    })
}

/// Every `--bind`, `tls:` ones as TLS listeners; the same address twice is one listener.
fn binds(given: &[String]) -> Result<Vec<BindAddr>, SettingsError> {
    let mut binds = Vec::new();
    for b in given {
        let (b, tls) = match b.strip_prefix("tls:") {
            Some(rest) => (rest, true),
            None => (b.as_str(), false),
        };
        for a in parse_bind("--bind", b)? {
            let a = match (a, tls) {
                (BindAddr::Tcp(sa), true) => BindAddr::Tls(sa),
                (BindAddr::Unix(_), true) => {
                    return Err(bad("--bind", format!("'tls:{b}': TLS listeners are TCP")))
                }
                (a, _) => a,
            };
            // Port 0 asks for a new port each time.
            let ephemeral = matches!(a, BindAddr::Tcp(sa) | BindAddr::Tls(sa) if sa.port() == 0);
            if ephemeral || !binds.contains(&a) {
                binds.push(a);
            }
        }
    }
    Ok(binds)
}

fn root_path(r: Option<&str>) -> Result<String, SettingsError> {
    let Some(r) = r else {
        return Ok(String::new());
    };
    let trimmed = r.trim_end_matches('/').to_owned();
    if !trimmed.is_empty() && !trimmed.starts_with('/') {
        return Err(bad(
            "--root-path",
            format!("'{r}' must start with /, e.g. /identity"),
        ));
    }
    Ok(trimmed)
}

/// `--admin-hosts`: host names, without ports or wildcards.
fn admin_hosts(list: &str) -> Result<Vec<String>, SettingsError> {
    let mut names = Vec::new();
    for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let valid = n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(bad(
                "--admin-hosts",
                format!("'{n}' is not a host name (letters, digits, '-' and '.'; no port)"),
            ));
        }
        names.push(n.trim_end_matches('.').to_ascii_lowercase());
    }
    Ok(names)
}

fn admin_addr(a: Option<&str>) -> Result<Option<BindAddr>, SettingsError> {
    let Some(a) = a else { return Ok(None) };
    parse_bind("--admin", a)
        .map_err(|_| bad("--admin", format!("'{a}' is not HOST:PORT or unix:/path")))?
        .into_iter()
        .next()
        .map(Some)
        .ok_or_else(|| bad("--admin", format!("'{a}' resolves to no address")))
}

fn agent_addr(a: Option<&str>) -> Result<Option<SocketAddr>, SettingsError> {
    let Some(a) = a else { return Ok(None) };
    match parse_bind("--agent-check", a) {
        Ok(v) => match v.into_iter().next() {
            Some(BindAddr::Tcp(sa)) => Ok(Some(sa)),
            _ => Err(bad(
                "--agent-check",
                format!("'{a}' must be a TCP HOST:PORT"),
            )),
        },
        Err(_) => Err(bad("--agent-check", format!("'{a}' is not HOST:PORT"))),
    }
}

/// How the front starts a worker: the chosen interpreter, running the worker extension
/// module, told the application and what it needs to import it.
fn worker_command(
    args: &ServeArgs,
    host: &Host,
    app: &str,
    workers: usize,
    log_level: &str,
    cwd: Option<PathBuf>,
) -> Result<(WorkerCommand, Interpreter), SettingsError> {
    let venv = match &args.virtualenv {
        None => None,
        Some(v) => Some(virtualenv_dir("--virtualenv", v)?),
    };
    // VIRTUAL_ENV (an activated venv) counts only when nothing else named an interpreter.
    let venv_var = match std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        Some(v) if args.python.is_none() && venv.is_none() && host.python.is_none() => {
            Some(virtualenv_dir("VIRTUAL_ENV", Path::new(&v))?)
        }
        _ => None,
    };
    let interpreter = interpreter::choose(
        args.python.as_deref(),
        venv.as_deref(),
        venv_var.as_deref(),
        host,
    )
    .map_err(|e| bad(e.option, e.error.to_string()))?;
    let module = interpreter::worker_module(host).map_err(|e| bad("spillway", e.to_string()))?;
    let mut env = Vec::new();
    for kv in &args.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                env.push((OsString::from(k), OsString::from(v)))
            }
            _ => return Err(bad("--env", format!("'{kv}' is not KEY=VALUE"))),
        }
    }
    let mut wargs = interpreter::worker_argv(&module);
    wargs.extend::<[OsString; 16]>([
        "--fd".into(),
        "3".into(),
        "--app".into(),
        app.into(),
        "--min-threads".into(),
        args.min_threads.to_string().into(),
        "--max-threads".into(),
        args.max_threads.to_string().into(),
        "--thread-idle-timeout".into(),
        args.thread_idle_timeout.to_string().into(),
        "--scheduling".into(),
        args.worker_scheduling.to_ascii_lowercase().into(),
        "--log-level".into(),
        log_level.into(),
        "--log-format".into(),
        args.log_format.to_ascii_lowercase().into(),
    ]);
    if let Some(n) = args.threads {
        wargs.push("--threads".into());
        wargs.push(n.to_string().into());
    }
    if workers > 1 {
        wargs.push("--multiprocess".into());
    }
    for p in &args.pythonpath {
        wargs.push("--pythonpath".into());
        wargs.push(p.clone().into());
    }
    Ok((
        WorkerCommand {
            program: interpreter.executable.clone(),
            args: wargs,
            env,
            cwd,
        },
        interpreter,
    ))
}

/// A directory that is a virtualenv (it has `pyvenv.cfg`).
fn virtualenv_dir(key: &str, v: &Path) -> Result<PathBuf, SettingsError> {
    let dir = existing_dir(key, v)?;
    if !dir.join("pyvenv.cfg").is_file() {
        return Err(bad(
            key,
            format!(
                "{} is not a virtualenv (no pyvenv.cfg); create one with python3 -m venv",
                v.display()
            ),
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::parse;

    fn argv(a: &[&str]) -> Vec<OsString> {
        std::iter::once("spillway")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn config(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spillway-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        f
    }

    #[test]
    fn binds_parse_every_documented_form() {
        let p = |s| parse_bind("--bind", s);
        assert_eq!(
            p("127.0.0.1:8000").unwrap(),
            vec![BindAddr::Tcp("127.0.0.1:8000".parse().unwrap())]
        );
        assert_eq!(
            p("[::]:9000").unwrap(),
            vec![BindAddr::Tcp("[::]:9000".parse().unwrap())]
        );
        assert_eq!(
            p("unix:/tmp/x.sock").unwrap(),
            vec![BindAddr::Unix("/tmp/x.sock".into())]
        );
        assert_eq!(
            p(":8080").unwrap(),
            vec![BindAddr::Tcp("0.0.0.0:8080".parse().unwrap())]
        );
        assert!(p("nonsense").is_err());
        assert!(p("unix:").is_err());
    }

    #[test]
    fn defaults_come_from_the_option_definitions() {
        let cli = parse(argv(&["app:x"])).unwrap();
        assert_eq!(cli.serve.threads, None, "sized by load unless pinned");
        assert_eq!(cli.serve.max_threads, crate::cli::defaults::MAX_THREADS);
        assert_eq!(cli.serve.keep_alive, crate::cli::defaults::KEEP_ALIVE);
        assert_eq!(cli.serve.bind, vec![crate::cli::defaults::BIND.to_owned()]);
    }

    #[test]
    fn file_fills_only_what_flags_left_open() {
        let f = config(
            "fill.toml",
            "threads = 7\nkeep-alive = 5\nenv = { A = \"b\" }\nreload = true\napp = \"file:app\"\n",
        );
        let cli = parse(argv(&["--threads", "2", "-c", f.to_str().unwrap()])).unwrap();
        assert_eq!(cli.serve.threads, Some(2));
        assert_eq!(cli.serve.keep_alive, 5);
        assert_eq!(cli.serve.env, vec!["A=b".to_owned()]);
        assert!(cli.serve.reload);
        assert_eq!(cli.serve.app.as_deref(), Some("file:app"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_the_key() {
        let f = config("unknown.toml", "thread = 7\n");
        let e = parse(argv(&["x:y", "-c", f.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key 'thread'") && e.contains("threads"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let f = config("range.toml", "threads = 0\n");
        let e = parse(argv(&["x:y", "-c", f.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("range.toml: threads") && e.contains("1..=1024"),
            "{e}"
        );
        let f = config("type.toml", "keep_alive = [\"a\", 1.5]\n");
        let e = parse(argv(&["x:y", "-c", f.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep_alive") && e.contains("float"), "{e}");
    }

    #[test]
    fn field_size_is_capped_at_what_a_frame_carries() {
        assert!(parse(argv(&["x:y", "--limit-request-field-size", "65536"])).is_ok());
        let e = parse(argv(&["x:y", "--limit-request-field-size", "65537"])).unwrap_err();
        assert!(matches!(e, SettingsError::Clap(_)));
    }
}
