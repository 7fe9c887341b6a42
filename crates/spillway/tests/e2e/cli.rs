//! The command line: APP forms, options, config file and environment precedence, errors.

use crate::support::{apps_dir, Spillway};

fn text_of(res: &crate::support::Response) -> String {
    assert_eq!(res.status, 200, "{res}");
    res.text()
}

#[test]
fn app_as_file_path_and_callable() {
    let srv = Spillway::new("apps/echo.py:app").start();
    assert_eq!(srv.get("/").status, 200);
}

#[test]
fn app_as_module_and_callable_with_pythonpath() {
    let srv = Spillway::new("echo:app")
        .arg("--pythonpath")
        .arg(apps_dir())
        .start();
    let res = srv.get("/mod");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.json().get("environ").get("PATH_INFO").s(), "/mod");
}

#[test]
fn app_as_factory_call() {
    let srv = Spillway::new("factory:create_app()")
        .arg("--pythonpath")
        .arg(apps_dir())
        .start();
    assert_eq!(text_of(&srv.get("/")), "made by create_app, calls=1\n");
    // The factory is called once per worker, not per request.
    assert_eq!(text_of(&srv.get("/")), "made by create_app, calls=1\n");
}

#[test]
fn pythonpath_is_repeatable() {
    let srv = Spillway::new("uses_helper:app")
        .arg("--pythonpath")
        .arg(apps_dir().join("pp1"))
        .arg("--pythonpath")
        .arg(apps_dir().join("pp2"))
        .start();
    assert_eq!(text_of(&srv.get("/")), "hello from helper_mod");
}

#[test]
fn chdir_sets_the_working_directory() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--chdir")
        .arg(apps_dir())
        .start();
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    let cwd = std::path::PathBuf::from(res.json().get("cwd").s());
    assert_eq!(
        cwd.canonicalize().unwrap(),
        apps_dir().canonicalize().unwrap()
    );
}

#[test]
fn sys_argv_is_harmless() {
    // argv.py parses sys.argv with argparse at import, like oslo.config: leaked server
    // flags would kill the import.
    let srv = Spillway::new("apps/argv.py:app")
        .arg("--threads")
        .arg("2")
        .arg("--keep-alive")
        .arg("5")
        .start();
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    let j = res.json();
    assert_eq!(j.get("argv").strs(), vec!["spillway"]);
    assert_eq!(j.get("argv_at_import").strs(), vec!["spillway"]);
}

#[test]
fn env_flag_sets_process_environment_of_the_app() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--env")
        .arg("APP_ONE=1")
        .arg("--env")
        .arg("APP_TWO=two=2")
        .start();
    let res = srv.get("/");
    let env = res.json().get("osenv").clone();
    assert_eq!(env.get("APP_ONE").s(), "1");
    assert_eq!(
        env.get("APP_TWO").s(),
        "two=2",
        "only the first '=' separates key and value"
    );
}

fn keep_alive_of(srv: &crate::support::Server) -> String {
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    res.header("keep-alive").unwrap_or("<none>").to_string()
}

const CONFIG: &str = r#"
bind = ["127.0.0.1:0"]
workers = 1
threads = 1
keep_alive = 5
env = ["APP_SOURCE=file", "APP_FILE_ONLY=yes"]
"#;

#[test]
fn config_file_values_are_used() {
    let (b, cfg) = Spillway::new("apps/echo.py:app")
        .no_defaults()
        .file("spillway.toml", CONFIG);
    let srv = b.arg("-c").arg(&cfg).start();
    assert_eq!(keep_alive_of(&srv), "timeout=5");
    let res = srv.get("/");
    let j = res.json();
    assert_eq!(
        j.get("environ").get("wsgi.multithread").bool(),
        Some(false),
        "threads = 1 from the file"
    );
    assert_eq!(j.get("osenv").get("APP_SOURCE").s(), "file");
}

#[test]
fn config_keys_may_use_dashes() {
    let (b, cfg) = Spillway::new("apps/echo.py:app").no_defaults().file(
        "spillway.toml",
        "bind = [\"127.0.0.1:0\"]\nworkers = 1\nkeep-alive = 6\n",
    );
    let srv = b.arg("--config").arg(&cfg).start();
    assert_eq!(keep_alive_of(&srv), "timeout=6");
}

#[test]
fn env_var_overrides_config_file() {
    let (b, cfg) = Spillway::new("apps/echo.py:app")
        .no_defaults()
        .file("spillway.toml", CONFIG);
    let srv = b
        .arg("-c")
        .arg(&cfg)
        .env("SPILLWAY_KEEP_ALIVE", "7")
        .env("SPILLWAY_THREADS", "2")
        .start();
    assert_eq!(keep_alive_of(&srv), "timeout=7");
    let res = srv.get("/");
    assert_eq!(
        res.json().get("environ").get("wsgi.multithread").bool(),
        Some(true),
        "SPILLWAY_THREADS=2 must override threads = 1"
    );
}

#[test]
fn flag_overrides_env_var_and_config_file() {
    let (b, cfg) = Spillway::new("apps/echo.py:app")
        .no_defaults()
        .file("spillway.toml", CONFIG);
    let srv = b
        .arg("-c")
        .arg(&cfg)
        .env("SPILLWAY_KEEP_ALIVE", "7")
        .env("SPILLWAY_THREADS", "2")
        .arg("--keep-alive")
        .arg("9")
        .arg("--threads")
        .arg("1")
        .arg("--env")
        .arg("APP_SOURCE=flag")
        .start();
    assert_eq!(keep_alive_of(&srv), "timeout=9");
    let j = srv.get("/").json();
    assert_eq!(
        j.get("environ").get("wsgi.multithread").bool(),
        Some(false),
        "--threads 1 wins"
    );
    assert_eq!(
        j.get("osenv").get("APP_SOURCE").s(),
        "flag",
        "--env wins over the file's env"
    );
}

/// Exactly one non-empty stderr line, naming `key`.
pub(crate) fn one_line_naming(out: &crate::support::Finished, key: &str) {
    assert!(!out.status.success(), "must fail:\n{out}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "expected ONE stderr line:\n{out}");
    assert!(
        lines[0].to_lowercase().contains(&key.to_lowercase()),
        "the line must name {key:?}:\n{out}"
    );
}

#[test]
fn unknown_config_key_is_rejected_in_one_line() {
    let (b, cfg) = Spillway::new("apps/echo.py:app")
        .no_defaults()
        .file("spillway.toml", "bind = [\"127.0.0.1:0\"]\nthreadz = 2\n");
    let out = b.arg("-c").arg(&cfg).run();
    one_line_naming(&out, "threadz");
    let line = out.stderr_lines()[0].to_string();
    assert!(
        line.contains("threads"),
        "the line should say what is allowed (e.g. `threads`):\n{out}"
    );
}

#[test]
fn bad_config_value_is_rejected_in_one_line() {
    let (b, cfg) = Spillway::new("apps/echo.py:app").no_defaults().file(
        "spillway.toml",
        "bind = [\"127.0.0.1:0\"]\nthreads = \"many\"\n",
    );
    let out = b.arg("-c").arg(&cfg).run();
    one_line_naming(&out, "threads");
}

#[test]
fn bad_env_value_is_rejected_in_one_line() {
    let out = Spillway::new("apps/echo.py:app")
        .env("SPILLWAY_THREADS", "lots")
        .run();
    one_line_naming(&out, "THREADS");
}

#[test]
fn bad_flag_value_is_rejected() {
    let out = Spillway::new("apps/echo.py:app")
        .arg("--threads")
        .arg("abc")
        .run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("--threads"), "{out}");
    let out = Spillway::new("apps/echo.py:app")
        .arg("--bind")
        .arg("not-an-address")
        .run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not-an-address"), "{out}");
}

#[test]
fn missing_config_file_is_an_error() {
    let out = Spillway::new("apps/echo.py:app")
        .arg("-c")
        .arg("/nonexistent/spillway.toml")
        .run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("/nonexistent/spillway.toml"), "{out}");
}

#[test]
fn broken_app_module_exits_non_zero_with_traceback_and_app_name() {
    let out = Spillway::new("apps/broken.py:app").run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("Traceback"), "{out}");
    assert!(
        out.stderr.contains("spillway_test_no_such_module_xyz"),
        "{out}"
    );
    assert!(out.stderr.contains("could not load APP '"), "{out}");
    assert!(out.stderr.contains("broken.py:app'"), "{out}");
}

#[test]
fn missing_callable_exits_non_zero_naming_the_app() {
    let out = Spillway::new("apps/echo.py:no_such_callable").run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("could not load APP '"), "{out}");
    assert!(out.stderr.contains("no_such_callable"), "{out}");
}

#[test]
fn missing_module_exits_non_zero_naming_the_app() {
    let out = Spillway::new("spillway_no_such_app_module:app").run();
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("could not load APP 'spillway_no_such_app_module:app'"),
        "{out}"
    );
}

#[test]
fn version_prints_the_version() {
    let out = Spillway::bare().arg("--version").run();
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("spillway"), "{out}");
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn help_lists_every_option_with_its_default() {
    let out = Spillway::bare().arg("--help").run();
    assert!(out.status.success(), "{out}");
    let help = out.stdout.clone();
    let options: &[(&str, Option<&str>)] = &[
        ("--bind", Some("127.0.0.1:8000")),
        ("--workers", None),
        ("--threads", None),
        ("--min-threads", Some("1")),
        ("--max-threads", Some("128")),
        ("--backlog", Some("4096")),
        ("--keep-alive", Some("75")),
        ("--header-timeout", Some("10")),
        ("--limit-request-line", Some("4094")),
        ("--limit-request-fields", Some("100")),
        ("--limit-request-field-size", Some("8190")),
        ("--chdir", None),
        ("--pythonpath", None),
        ("--virtualenv", None),
        ("--env", None),
        ("--root-path", None),
        ("--access-log", None),
        ("--log-level", None),
        ("--config", None),
        ("--version", None),
        ("--help", None),
    ];
    for (opt, default) in options {
        // The line that starts the option's entry (other entries' help may mention it).
        let Some(at) = help.match_indices(opt).map(|(i, _)| i).find(|&i| {
            let line_start = help[..i].rfind('\n').map_or(0, |n| n + 1);
            let lead = &help[line_start..i];
            lead.trim_start().is_empty() || lead.trim_start().ends_with(", ")
        }) else {
            panic!("--help does not list {opt}:\n{help}");
        };
        // The option's own section: up to the next line that starts an option.
        let rest = &help[at..];
        let end = ["\n  -", "\n      --"]
            .iter()
            .filter_map(|p| rest[1..].find(p))
            .min()
            .map(|e| e + 1)
            .unwrap_or(rest.len());
        let section = &rest[..end];
        if let Some(d) = default {
            assert!(
                section.contains(d),
                "--help for {opt} does not show its default {d}:\n{section}"
            );
        }
    }
    assert!(help.contains("-b, --bind"), "{help}");
    assert!(help.contains("-w, --workers"), "{help}");
    assert!(help.contains("-c, --config"), "{help}");
    assert!(
        help.to_lowercase().contains("cpu"),
        "--workers default (CPU count) not explained:\n{help}"
    );
}

#[test]
fn access_log_to_a_file() {
    let b = Spillway::new("apps/echo.py:app");
    let log = b.dir().join("access.log");
    let srv = b.arg("--access-log").arg(&log).start();
    assert_eq!(srv.get("/logged/path?x=1").status, 200);
    let mut content = String::new();
    let found = crate::support::eventually(std::time::Duration::from_secs(10), || {
        content = std::fs::read_to_string(&log).unwrap_or_default();
        content
            .lines()
            .any(|l| l.contains("GET") && l.contains("/logged/path") && l.contains("200"))
    });
    assert!(
        found,
        "no access log line with GET, /logged/path and 200 in {log:?}:\n{content}"
    );
}

#[test]
fn access_log_to_dash() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--access-log")
        .arg("-")
        .start();
    assert_eq!(srv.request("DELETE", "/gone", &[], b"").status, 200);
    assert!(
        srv.wait_output(std::time::Duration::from_secs(10), |err, out| {
            err.lines()
                .chain(out.lines())
                .any(|l| l.contains("DELETE") && l.contains("/gone") && l.contains("200"))
        }),
        "no access log line for DELETE /gone 200\nstdout:\n{}\n{}",
        srv.stdout(),
        srv.report()
    );
}

#[test]
fn bad_log_level_is_rejected() {
    let out = Spillway::new("apps/echo.py:app")
        .arg("--log-level")
        .arg("chatty")
        .run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("chatty"), "{out}");
}

#[test]
fn start_up_failures_name_what_failed_and_say_why_once() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = Spillway::new("apps/echo.py:app").bind(addr.as_str()).run();
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains(&addr), "{out}");
    assert_eq!(
        out.stderr.matches("Address already in use").count(),
        1,
        "the OS error is not printed exactly once:\n{out}"
    );

    for (flag, path) in [
        ("--access-log", "/nonexistent-spillway-dir/access.log"),
        ("--pid-file", "/nonexistent-spillway-dir/spillway.pid"),
    ] {
        let out = Spillway::new("apps/echo.py:app").arg(flag).arg(path).run();
        assert!(!out.status.success(), "{flag}: {out}");
        assert!(
            out.stderr.contains(path),
            "{flag} error does not name {path}:\n{out}"
        );
        assert!(out.stderr.contains("No such file or directory"), "{out}");
    }
}
