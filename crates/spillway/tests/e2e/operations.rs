//! What an operator meets around the request path, through the real binary: the
//! open-files limit, the admin endpoint's guards, an unusable `$TMPDIR`, the pid file,
//! connection counts, rate-limited warnings, and what a client's header names cost a
//! worker on CPython 3.12+.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::lifecycle::{count, get_ok, local, status, try_get, wait_admin, RELOADED};
use crate::support::{eventually, free_port, Conn, Response, Server, Spillway};

const ECHO: &str = "apps/echo.py:app";

/// `(soft, hard)` open-files limits of a process.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one_for_the_front_only() {
    let srv = Spillway::new(ECHO)
        .wrap("prlimit", ["--nofile=1024:8192", "--"])
        .start();
    let worker = srv.get("/").json().get("pid").u64() as u32;
    assert_eq!(nofile(srv.pid), (8192, 8192), "{}", srv.report());
    let said = srv.stderr_lines_with("open-files limit");
    assert!(
        said.iter()
            .any(|l| l.contains("soft_limit=8192") && l.contains("soft_limit_was=1024")),
        "{}",
        srv.report()
    );
    // Python code may still use select(): workers keep the limit the front was given.
    assert_eq!(nofile(worker), (1024, 8192), "{}", srv.report());
}

#[test]
fn running_out_of_descriptors_is_named_and_not_blamed_on_the_application() {
    let srv = Spillway::new(ECHO)
        .wrap("prlimit", ["--nofile=64:64", "--"])
        .args(["--max-connections", "1000"])
        .start();
    assert!(
        srv.stderr_contains("below what --max-connections needs"),
        "{}",
        srv.report()
    );
    let worker = srv.get("/").json().get("pid").u64() as i32;
    // More connections than descriptors: accept() fails with EMFILE.
    let held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect_timeout(&srv.addr(), Duration::from_secs(2)).ok())
        .collect();
    assert!(
        srv.stderr_contains("accept failed, out of file descriptors"),
        "{}",
        srv.report()
    );
    // The worker dies; its replacement cannot get a socket. That is no crash loop of the
    // application's, however often it is tried.
    // SAFETY: kill(2) with the pid of the worker that just answered.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    let retried = "cannot start a worker, out of file descriptors";
    assert!(
        srv.wait_output(Duration::from_secs(20), |e, _| e.matches(retried).count()
            >= 6),
        "{}",
        srv.report()
    );
    assert!(!srv.stderr().contains("CRASH LOOP"), "{}", srv.report());
    drop(held);
    assert!(
        eventually(Duration::from_secs(20), || {
            let s = TcpStream::connect_timeout(&srv.addr(), Duration::from_secs(2));
            s.is_ok_and(|s| {
                let mut c = Conn::tcp(s);
                c.send_request("GET", "/", &[], b"");
                c.try_read_response().is_ok_and(|r| r.status == 200)
            })
        }),
        "not serving once descriptors were free again\n{}",
        srv.report()
    );
}

/// One request to the admin endpoint on a new connection with `headers` (Host included).
fn admin_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let s = TcpStream::connect_timeout(&local(port), Duration::from_secs(5)).expect("connect");
    let mut c = Conn::tcp(s);
    let mut h = vec![("Connection", "close"), ("Content-Length", "0")];
    h.extend_from_slice(headers);
    c.request(method, path, &h, b"")
}

#[test]
fn the_admin_endpoint_refuses_rebinding_hosts_and_cross_site_reloads() {
    let srv = Spillway::new("apps/lifecycle.py:app")
        .args(["--admin-hosts", "admin.example"])
        .with_admin()
        .start();
    let admin = srv.admin();
    wait_admin(&srv, admin);
    let own = format!("127.0.0.1:{admin}");
    for host in [own.as_str(), "localhost", "admin.example:9000", "[::1]:1"] {
        for path in ["/status", "/metrics"] {
            let r = admin_request(admin, "GET", path, &[("Host", host)]);
            assert_eq!(r.status, 200, "{host} {path}: {r}");
        }
    }
    for host in [
        "evil.example",
        "evil.example:9000",
        "admin.example.evil.example",
    ] {
        for path in ["/status", "/metrics"] {
            let r = admin_request(admin, "GET", path, &[("Host", host)]);
            assert_eq!(r.status, 403, "{host} {path}: {r}");
        }
        // Health checks answer whatever the name.
        let r = admin_request(admin, "GET", "/healthz", &[("Host", host)]);
        assert_eq!(r.status, 200, "{host}: {r}");
    }
    let h = own.as_str();
    for refused in [
        vec![("Host", h), ("Origin", "https://evil.example")],
        vec![("Host", h), ("Origin", "null")],
        vec![("Host", h), ("Sec-Fetch-Site", "cross-site")],
        vec![
            ("Host", h),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        vec![("Host", h), ("Content-Type", "text/plain")],
        vec![("Host", "evil.example")],
    ] {
        let r = admin_request(admin, "POST", "/reload", &refused);
        assert_eq!(r.status, 403, "{refused:?}: {r}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(admin).get("generation").u64(), 1, "{}", srv.report());
    assert_eq!(count(&srv, "reloading workers"), 0, "{}", srv.report());
    let r = admin_request(
        admin,
        "POST",
        "/reload",
        &[("Host", h), ("Origin", &format!("http://{own}"))],
    );
    assert_eq!(r.status, 202, "{r}");
    assert!(
        eventually(Duration::from_secs(30), || status(admin)
            .get("generation")
            .u64()
            == 2),
        "{}",
        srv.report()
    );
}

#[test]
fn reload_requests_while_one_is_under_way_join_it() {
    let srv = Spillway::new("apps/lifecycle.py:app").with_admin().start();
    let admin = srv.admin();
    wait_admin(&srv, admin);
    assert!(
        eventually(Duration::from_secs(30), || status(admin)
            .get("ready")
            .bool()
            == Some(true)),
        "{}",
        srv.report()
    );
    let own = format!("127.0.0.1:{admin}");
    for _ in 0..8 {
        let r = admin_request(admin, "POST", "/reload", &[("Host", own.as_str())]);
        assert_eq!(r.status, 202, "{r}");
    }
    assert!(srv.stderr_contains(RELOADED), "{}", srv.report());
    // Anything queued would start within this second.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&srv, "reloading workers"), 1, "{}", srv.report());
    assert_eq!(count(&srv, RELOADED), 1, "{}", srv.report());
    assert_eq!(status(admin).get("generation").u64(), 2, "{}", srv.report());
    assert_eq!(
        count(&srv, "joins that one"),
        7,
        "every other request joined\n{}",
        srv.report()
    );
}

#[test]
fn admin_connections_are_limited_and_cut_when_slow_or_idle() {
    let srv = Spillway::new(ECHO).with_admin().start();
    let admin = srv.admin();
    wait_admin(&srv, admin);
    // Half-sent heads, more than the admin endpoint takes at once.
    let mut slow: Vec<Conn> = (0..40)
        .map(|_| {
            let s = TcpStream::connect_timeout(&local(admin), Duration::from_secs(5)).unwrap();
            let mut c = Conn::tcp(s);
            c.send(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            c
        })
        .collect();
    // Over the limit: refused at once, not held.
    let r = try_get(local(admin), "/healthz").expect("an answer");
    assert_eq!(r.status, 503, "{r}");
    let started = Instant::now();
    for c in slow.iter_mut() {
        assert!(
            c.closed_within(Duration::from_secs(15)).unwrap_or(true),
            "a half-sent head was held open for {:?}",
            started.elapsed()
        );
    }
    let r = get_ok(local(admin), "/healthz");
    assert_eq!(r.text(), "ok\n");
    // A keep-alive connection left idle after its response.
    let mut idle = {
        let s = TcpStream::connect_timeout(&local(admin), Duration::from_secs(5)).unwrap();
        let mut c = Conn::tcp(s);
        let r = c.request("GET", "/healthz", &[("Host", "127.0.0.1")], b"");
        assert_eq!(r.status, 200, "{r}");
        c
    };
    assert!(
        idle.closed_within(Duration::from_secs(15)).unwrap_or(true),
        "an idle admin connection was kept open"
    );
}

#[test]
fn an_unusable_tmpdir_makes_held_bodies_stream_with_one_warning() {
    let missing = crate::support::test_dir().join("no-such-dir");
    let srv = Spillway::new(ECHO).env("TMPDIR", &missing).start();
    let body = crate::support::pseudo_random(300 * 1024, 7);
    for _ in 0..5 {
        let r = srv.post("/", "application/octet-stream", &body);
        assert_eq!(r.status, 200, "{r}\n{}", srv.report());
        assert_eq!(
            r.json().get("body_len").u64(),
            body.len() as u64,
            "{}",
            srv.report()
        );
    }
    assert_eq!(
        count(&srv, "cannot hold request bodies in a temporary file"),
        1,
        "{}",
        srv.report()
    );
    assert!(!srv.stderr().contains("ERROR"), "{}", srv.report());
}

fn read_pid(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn the_pid_file_is_exclusive_and_never_removed_once_another_owns_it() {
    let first = Spillway::new(ECHO);
    let pid_file: PathBuf = first.dir().join("spillway.pid");
    let mut first = first.arg("--pid-file").arg(&pid_file).start();
    assert!(
        eventually(Duration::from_secs(10), || read_pid(&pid_file)
            == first.pid.to_string()),
        "{}",
        first.report()
    );

    let second = Spillway::new(ECHO)
        .bind(format!("127.0.0.1:{}", free_port()))
        .arg("--pid-file")
        .arg(&pid_file)
        .run();
    assert!(!second.status.success(), "{second}");
    let line = format!("held by a running server (pid {})", first.pid);
    assert!(second.stderr.contains(&line), "{second}");
    assert_eq!(read_pid(&pid_file), first.pid.to_string());

    // Removed by hand and taken by a third server: the first must leave it alone.
    std::fs::remove_file(&pid_file).unwrap();
    let third = Spillway::new(ECHO)
        .bind(format!("127.0.0.1:{}", free_port()))
        .arg("--pid-file")
        .arg(&pid_file)
        .start();
    assert!(
        eventually(Duration::from_secs(10), || read_pid(&pid_file)
            == third.pid.to_string()),
        "{}",
        third.report()
    );
    first.signal("TERM");
    crate::support::lifecycle::wait_exit_ok(&mut first, Duration::from_secs(30));
    assert_eq!(read_pid(&pid_file), third.pid.to_string());
}

fn connections_open(srv: &Server) -> (u64, String) {
    let status = status(srv.admin()).get("connections").u64();
    let metrics = get_ok(local(srv.admin()), "/metrics").text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("spillway_connections_open "))
        .unwrap_or("")
        .to_owned();
    (status, line)
}

#[test]
fn status_and_metrics_count_no_connection_per_listener() {
    let srv = Spillway::new(ECHO)
        .bind(format!("127.0.0.1:{}", free_port()))
        .bind(format!("127.0.0.1:{}", free_port()))
        .with_admin()
        .start();
    wait_admin(&srv, srv.admin());
    let (n, line) = connections_open(&srv);
    assert_eq!(n, 0, "{}", srv.report());
    assert_eq!(line, "spillway_connections_open 0");
    let mut c = srv.connect();
    assert_eq!(c.get("/").status, 200);
    let (n, line) = connections_open(&srv);
    assert_eq!(n, 1, "{}", srv.report());
    assert_eq!(line, "spillway_connections_open 1");
}

#[test]
fn warnings_for_untrusted_proxy_protocol_peers_are_rate_limited() {
    let srv = Spillway::new(ECHO)
        .args(["--proxy-protocol", "--forwarded-allow-ips", "10.9.9.9"])
        .start();
    for _ in 0..50 {
        let mut s = TcpStream::connect_timeout(&srv.addr(), Duration::from_secs(5)).unwrap();
        let _ = s.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\n");
        let mut c = Conn::tcp(s);
        assert!(c.closed_within(Duration::from_secs(5)).unwrap_or(true));
    }
    assert!(srv.stderr_contains("untrusted peer"), "{}", srv.report());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&srv, "untrusted peer"), 1, "{}", srv.report());
}

/// A CPython 3.12 or newer from pyenv.
fn python_312_or_newer() -> PathBuf {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))
        .expect("PYENV_ROOT or HOME");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .map(|d| d.flatten().map(|e| e.path().join("bin/python3")).collect())
        .unwrap_or_default();
    found.sort();
    found
        .into_iter()
        .find(|p| {
            p.is_file()
                && std::process::Command::new(p)
                    .args(["-c", "import sys; sys.exit(sys.version_info < (3, 12))"])
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .expect("a CPython 3.12+ under pyenv (interned strings are immortal from 3.12)")
}

/// `(allocated blocks, interned probe keys, probe keys)` after a request with the
/// header names `names`.
fn probe(srv: &Server, names: &[String]) -> (i64, usize, usize) {
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let r = srv.request("GET", "/", &headers, b"");
    assert_eq!(r.status, 200, "{r}\n{}", srv.report());
    let text = r.text();
    let (blocks, keys) = text.split_once(' ').expect("blocks keys");
    let (interned, all) = keys.split_once('/').expect("n/m");
    (
        blocks.parse().unwrap(),
        interned.parse().unwrap(),
        all.parse().unwrap(),
    )
}

#[test]
fn header_names_a_client_makes_up_do_not_stay_in_a_python_3_12_worker() {
    let srv = Spillway::new("apps/interning.py:app")
        .arg("--python")
        .arg(python_312_or_newer())
        .args(["--threads", "1"])
        .start();
    let names =
        |round: usize| -> Vec<String> { (0..50).map(|j| format!("X-Probe-{round}-{j}")).collect() };
    for round in 0..10 {
        probe(&srv, &names(round));
    }
    let (before, _, _) = probe(&srv, &[]);
    for round in 10..110 {
        probe(&srv, &names(round));
    }
    let (after, _, _) = probe(&srv, &[]);
    let mut checked = names(200);
    checked.push("X-Check-Interned".into());
    let (_, interned, n) = probe(&srv, &checked);
    assert_eq!(n, 50);
    assert_eq!(
        interned, 0,
        "environ keys from client header names were interned"
    );
    // 5,000 distinct names: interned, each would stay as a block for the worker's life.
    assert!(
        after - before < 1500,
        "the worker grew by {} blocks over 5,000 distinct header names\n{}",
        after - before,
        srv.report()
    );
}
