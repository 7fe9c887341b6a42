//! Lifecycle end to end: reloads (SIGHUP, `spillway reload`, `POST /reload`, `--reload`),
//! reloads into a broken application, shutdown with drain delay and graceful finish, the
//! admin endpoint, the HAProxy agent-check, systemd socket activation and `sd_notify`.
//!
//! Every wait is a bounded loop with a generous deadline; nothing asserts how fast
//! something happens, only that it happens (or that the server waited at least as long as
//! it was told to).

use std::collections::HashSet;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::lifecycle::*;
use crate::support::{
    apps_dir, eventually, free_port, unix_socket_path, Conn, Listener, Response, Spillway,
};

fn lifecycle_app() -> String {
    std::fs::read_to_string(apps_dir().join("lifecycle.py")).expect("read lifecycle.py")
}

fn has_close(r: &Response) -> bool {
    r.header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
}

#[test]
fn keep_alive_connection_survives_sighup_and_reaches_the_new_generation() {
    let srv = Spillway::new("apps/lifecycle.py:app").with_admin().start();
    let admin = srv.admin();
    let mut conn = srv.connect();
    let first = conn.get("/");
    assert_eq!(first.status, 200, "{first}");
    assert!(!has_close(&first), "{first}");
    let old_pid = pid_of(&first);
    let gen1 = status(admin).get("generation").u64();

    srv.signal("HUP");
    wait_reloads(&srv, 1);

    let second = conn.get("/");
    assert_eq!(second.status, 200, "{second}\n{}", srv.report());
    let new_pid = pid_of(&second);
    assert_ne!(
        new_pid,
        old_pid,
        "after the reload the request on the kept-alive connection was served by the old worker\n{}",
        srv.report()
    );
    assert!(
        !has_close(&second),
        "a reload must not close client connections:\n{second}"
    );
    let st = status(admin);
    assert_eq!(st.get("generation").u64(), gen1 + 1, "{st}");
    let workers = st.get("workers").arr();
    assert!(
        workers
            .iter()
            .any(|w| w.get("pid").u64() == new_pid && w.get("generation").u64() == gen1 + 1),
        "worker {new_pid} of generation {} not in /status: {st}",
        gen1 + 1
    );
    // The same connection is still open and usable.
    let third = conn.get("/");
    assert_eq!(third.status, 200, "{third}");
    assert_eq!(pid_of(&third), new_pid);
    // The old worker goes away once it has nothing in flight.
    assert!(
        eventually(WAIT, || !status(admin)
            .get("workers")
            .arr()
            .iter()
            .any(|w| w.get("pid").u64() == old_pid)),
        "old worker {old_pid} never left\n{}",
        srv.report()
    );
}

#[test]
fn ten_reloads_under_load_from_fifty_connections_fail_nothing() {
    const CLIENTS: usize = 50;
    const RELOADS: usize = 10;
    const MAX_PER_CLIENT: usize = 20_000;
    let srv = Spillway::new("apps/lifecycle.py:app")
        .workers(2)
        .args(["--threads", "4"])
        .with_admin()
        .start();
    let admin = srv.admin();
    let gen0 = status(admin).get("generation").u64();
    let addr = srv.addr();
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let started = AtomicU64::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let pids: Mutex<HashSet<u64>> = Mutex::new(HashSet::new());
    let hard_deadline = Instant::now() + Duration::from_secs(120);

    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (stop, total, started, errors, pids) = (&stop, &total, &started, &errors, &pids);
            s.spawn(move || {
                let fail = |msg: String| {
                    let mut e = errors.lock().unwrap();
                    if e.len() < 20 {
                        e.push(format!("client {client}: {msg}"));
                    }
                };
                let mut conn = match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                    Ok(s) => Conn::tcp(s),
                    Err(e) => return fail(format!("connect: {e}")),
                };
                let mut mine = HashSet::new();
                let mut first = true;
                for i in 0..MAX_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) || Instant::now() > hard_deadline {
                        break;
                    }
                    conn.send_request("GET", &format!("/?c={client}&i={i}"), &[], b"");
                    match conn.try_read_response() {
                        Ok(r) if r.status == 200 => {
                            mine.insert(pid_of(&r));
                            if has_close(&r) {
                                fail(format!("request {i} answered with Connection: close:\n{r}"));
                                return;
                            }
                        }
                        Ok(r) => return fail(format!("request {i}: status {}:\n{r}", r.status)),
                        Err(e) => return fail(format!("request {i}: {e}")),
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                    if first {
                        started.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                    // Continuous, but leaves the two cores some room for the new workers.
                    std::thread::sleep(Duration::from_millis(5));
                }
                pids.lock().unwrap().extend(mine);
            });
        }

        let all_started = eventually(WAIT, || {
            started.load(Ordering::Relaxed) == CLIENTS as u64 || !errors.lock().unwrap().is_empty()
        });
        if all_started && errors.lock().unwrap().is_empty() {
            for n in 1..=RELOADS {
                srv.signal("HUP");
                if !srv.wait_output(WAIT, |e, _| e.matches(RELOADED).count() >= n) {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("reload {n} did not complete within {WAIT:?}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        } else {
            errors
                .lock()
                .unwrap()
                .push("not every client got a first response".into());
        }
        stop.store(true, Ordering::Relaxed);
    });

    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} failures during reloads, first ones:\n{}\n{}",
        errors.len(),
        errors.join("\n"),
        srv.report()
    );
    assert_eq!(count(&srv, RELOAD_FAILED), 0, "{}", srv.report());
    let st = status(admin);
    assert_eq!(
        st.get("generation").u64(),
        gen0 + RELOADS as u64,
        "{st}\n{}",
        srv.report()
    );
    let pids = pids.into_inner().unwrap();
    assert!(
        pids.len() > 2,
        "only workers {pids:?} answered across {RELOADS} reloads"
    );
    assert!(total.load(Ordering::Relaxed) >= (CLIENTS * RELOADS) as u64);
}

#[test]
fn reload_into_a_broken_application_keeps_the_old_generation_serving() {
    // The app file lives in the server's working directory, so it can be broken.
    let (b, app) = Spillway::new("app.py:app").file("app.py", &lifecycle_app());
    let srv = b.with_admin().start();
    let admin = srv.admin();
    let mut conn = srv.connect();
    let before = conn.get("/");
    assert_eq!(before.status, 200, "{before}");
    let old_pid = pid_of(&before);
    let gen1 = status(admin).get("generation").u64();

    std::fs::write(
        &app,
        "raise RuntimeError('spillway-test: this generation cannot import')\n",
    )
    .unwrap();
    srv.signal("HUP");
    assert!(
        srv.wait_output(WAIT, |e, _| e.contains(RELOAD_FAILED)),
        "no {RELOAD_FAILED:?} in the log\n{}",
        srv.report()
    );
    assert!(
        srv.stderr_contains("spillway-test: this generation cannot import"),
        "the import error (traceback) is not in the log\n{}",
        srv.report()
    );
    // The old generation answers, on the kept-alive connection and on new ones.
    for _ in 0..5 {
        let r = conn.get("/");
        assert_eq!(r.status, 200, "{r}\n{}", srv.report());
        assert_eq!(pid_of(&r), old_pid, "{r}");
        let r = get_ok(srv.addr(), "/");
        assert_eq!(pid_of(&r), old_pid, "{r}");
    }
    assert_eq!(readyz(admin), Some(200), "{}", srv.report());
    let st = status(admin);
    assert_eq!(st.get("generation").u64(), gen1, "{st}");
    assert_eq!(count(&srv, RELOADED), 0, "{}", srv.report());

    // Fixed, the next reload goes through.
    std::fs::write(&app, lifecycle_app().replace("\"v1\"", "\"v2\"")).unwrap();
    srv.signal("HUP");
    wait_reloads(&srv, 1);
    let r = conn.get("/");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json().get("version").s(), "v2", "{r}");
    assert_ne!(pid_of(&r), old_pid);
}

#[test]
fn reload_by_pid_file_and_by_admin_post() {
    let b = Spillway::new("apps/lifecycle.py:app");
    let pid_file = b.dir().join("spillway.pid");
    let mut srv = b.arg("--pid-file").arg(&pid_file).with_admin().start();
    let admin = srv.admin();
    assert!(
        eventually(WAIT, || std::fs::read_to_string(&pid_file)
            .is_ok_and(|s| s.trim() == srv.pid.to_string())),
        "pid file {pid_file:?} does not hold {}: {:?}",
        srv.pid,
        std::fs::read_to_string(&pid_file)
    );
    let gen1 = status(admin).get("generation").u64();
    let pid1 = pid_of(&get_ok(srv.addr(), "/"));

    let out = Spillway::bare()
        .no_defaults()
        .arg("reload")
        .arg("--pid-file")
        .arg(&pid_file)
        .run();
    assert!(out.status.success(), "{out}");
    wait_reloads(&srv, 1);
    assert_eq!(status(admin).get("generation").u64(), gen1 + 1);
    let pid2 = pid_of(&get_ok(srv.addr(), "/"));
    assert_ne!(pid1, pid2);

    let r = try_request(local(admin), "POST", "/reload").expect("POST /reload");
    assert!((200..300).contains(&r.status), "POST /reload:\n{r}");
    wait_reloads(&srv, 2);
    assert_eq!(status(admin).get("generation").u64(), gen1 + 2);
    let pid3 = pid_of(&get_ok(srv.addr(), "/"));
    assert!(pid3 != pid1 && pid3 != pid2);

    // GET does not reload.
    let r = try_get(local(admin), "/reload").expect("GET /reload");
    assert!(r.status >= 400, "GET /reload must not be accepted:\n{r}");

    srv.signal("TERM");
    wait_exit_ok(&mut srv, WAIT);
    assert!(
        !pid_file.exists(),
        "pid file {pid_file:?} left behind after exit"
    );
}

#[test]
fn sigterm_during_a_slow_request_finishes_it_then_exits_zero() {
    let mut srv = Spillway::new("apps/lifecycle.py:app")
        .args([
            "--threads",
            "2",
            "--drain-delay",
            "1",
            "--graceful-timeout",
            "30",
        ])
        .with_admin()
        .start();
    let admin = srv.admin();
    // An idle keep-alive connection, and one with a slow request in flight.
    let mut idle = srv.connect();
    let r = idle.get("/");
    assert_eq!(r.status, 200, "{r}");
    let mut slow = srv.connect();
    slow.send_request("GET", "/slow?s=4", &[], b"");
    assert!(
        eventually(WAIT, || status(admin)
            .get("workers")
            .arr()
            .iter()
            .any(|w| w.get("busy_threads").u64() >= 1)),
        "the slow request never showed as busy\n{}",
        srv.report()
    );
    srv.signal("TERM");
    let res = slow
        .try_read_response()
        .unwrap_or_else(|e| panic!("slow request broken by SIGTERM: {e}\n{}", srv.report()));
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.json().get("path").s(), "/slow");
    assert!(
        has_close(&res),
        "a response in flight during shutdown must say Connection: close:\n{res}"
    );
    // The idle connection is closed cleanly: EOF, no stray bytes.
    match idle.closed_within(WAIT) {
        Ok(true) => {}
        Ok(false) => panic!("idle keep-alive connection not closed\n{}", srv.report()),
        Err(e) => panic!("idle connection got data while closing: {e}"),
    }
    assert!(
        idle.leftover().is_empty(),
        "idle connection received {:?}",
        String::from_utf8_lossy(idle.leftover())
    );
    wait_exit_ok(&mut srv, Duration::from_secs(60));
}

#[test]
fn drain_delay_turns_readiness_and_agent_off_but_keeps_serving_new_connections() {
    const DELAY: u64 = 6;
    let agent = free_port();
    let mut srv = Spillway::new("apps/lifecycle.py:app")
        .args([
            "--drain-delay",
            &DELAY.to_string(),
            "--agent-check",
            &format!("127.0.0.1:{agent}"),
        ])
        .with_admin()
        .start();
    let admin = srv.admin();
    assert!(
        eventually(WAIT, || readyz(admin) == Some(200)),
        "/readyz never 200\n{}",
        srv.report()
    );
    let st = status(admin);
    assert_eq!(st.get("ready").bool(), Some(true), "{st}");
    assert_eq!(st.get("draining").bool(), Some(false), "{st}");
    assert_eq!(get_ok(local(admin), "/healthz").status, 200);
    assert!(
        eventually(WAIT, || agent_line(agent)
            .is_ok_and(|l| l == "up ready 100%\n")),
        "agent: {:?}",
        agent_line(agent)
    );

    let t0 = Instant::now();
    srv.signal("TERM");
    assert!(
        eventually(WAIT, || readyz(admin) == Some(503)),
        "/readyz not 503 after SIGTERM\n{}",
        srv.report()
    );
    let during = t0.elapsed();
    let agent_answer = agent_line(agent);
    let new_conn = try_get(srv.addr(), "/");
    let health = try_get(local(admin), "/healthz");
    let st = status(admin);
    assert!(
        t0.elapsed() < Duration::from_secs(DELAY),
        "the machine was too slow to look inside the {DELAY} s drain delay \
         (readiness turned after {during:?}); nothing was checked"
    );
    assert_eq!(agent_answer.as_deref(), Ok("drain\n"));
    let new_conn = new_conn.unwrap_or_else(|e| {
        panic!(
            "new connection during the drain delay: {e}\n{}",
            srv.report()
        )
    });
    assert_eq!(new_conn.status, 200, "{new_conn}");
    assert_eq!(health.map(|r| r.status), Ok(200));
    assert_eq!(st.get("draining").bool(), Some(true), "{st}");

    let st = srv
        .wait_exit(Duration::from_secs(DELAY + 30))
        .unwrap_or_else(|| panic!("no exit after the drain delay\n{}", srv.report()));
    assert_eq!(st.code(), Some(0), "{st}\n{}", srv.report());
    // The server may not stop before the delay it was given (a lower bound only).
    assert!(
        t0.elapsed() >= Duration::from_secs(DELAY) - Duration::from_millis(500),
        "exited {:?} after SIGTERM, before the {DELAY} s drain delay",
        t0.elapsed()
    );
}

#[test]
fn second_sigterm_or_sigquit_stops_at_once() {
    for second in ["TERM", "QUIT"] {
        let mut srv = Spillway::new("apps/lifecycle.py:app")
            .args(["--drain-delay", "120"])
            .with_admin()
            .start();
        let admin = srv.admin();
        assert!(eventually(WAIT, || readyz(admin) == Some(200)));
        srv.signal("TERM");
        assert!(
            eventually(WAIT, || readyz(admin) == Some(503)),
            "{}",
            srv.report()
        );
        srv.signal(second);
        assert!(
            srv.wait_exit(WAIT).is_some(),
            "SIGTERM then SIG{second} did not stop the server (drain delay 120 s)\n{}",
            srv.report()
        );
    }
}

#[test]
fn agent_check_weight_falls_as_the_queue_grows_and_says_drain_on_sigterm() {
    let agent = free_port();
    let srv = Spillway::new("apps/lifecycle.py:app")
        .workers(1)
        .args([
            "--threads",
            "1",
            "--drain-delay",
            "30",
            "--agent-check",
            &format!("127.0.0.1:{agent}"),
        ])
        .with_admin()
        .start();
    let admin = srv.admin();
    assert!(
        eventually(WAIT, || agent_line(agent)
            .is_ok_and(|l| l == "up ready 100%\n")),
        "agent: {:?}\n{}",
        agent_line(agent),
        srv.report()
    );
    // One request holds the only thread; three more wait in the queue.
    let mut conns: Vec<Conn> = (0..4).map(|_| srv.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send_request("GET", &format!("/wait?name=go&i={i}"), &[], b"");
    }
    // Nothing leaves the queue while "go" is missing: once 3 are queued the answer is
    // fixed.
    assert!(
        eventually(WAIT, || status(admin).get("queue").get("length").u64() == 3),
        "3 requests never queued on 1 thread: {}\n{}",
        status(admin),
        srv.report()
    );
    let last = agent_line(agent).unwrap_or_else(|e| e);
    // 100 * 1 / (1 + 3)
    assert_eq!(agent_weight(&last), Some(25), "{last:?}");
    let st = status(admin);
    assert!(
        st.get("queue").get("oldest_age_ms").num().is_some(),
        "queue.oldest_age_ms missing: {st}"
    );

    std::fs::write(srv.dir().join("go"), b"").unwrap();
    for c in &mut conns {
        let r = c.read_response();
        assert_eq!(r.status, 200, "{r}");
    }
    assert!(
        eventually(WAIT, || agent_line(agent)
            .is_ok_and(|l| l == "up ready 100%\n")),
        "agent did not return to 100%: {:?}",
        agent_line(agent)
    );

    srv.signal("TERM");
    assert!(
        eventually(WAIT, || agent_line(agent).is_ok_and(|l| l == "drain\n")),
        "agent did not say drain after SIGTERM: {:?}\n{}",
        agent_line(agent),
        srv.report()
    );
}

#[test]
fn no_ready_worker_means_maint_and_not_ready() {
    let agent = free_port();
    let srv = Spillway::new("apps/slow_import.py:app")
        .args(["--agent-check", &format!("127.0.0.1:{agent}")])
        .with_admin()
        .start();
    let admin = srv.admin();
    // The import waits for the file `go`: no worker is ready yet.
    assert!(
        eventually(WAIT, || agent_line(agent).is_ok()),
        "agent-check port never answered\n{}",
        srv.report()
    );
    assert_eq!(agent_line(agent).as_deref(), Ok("maint\n"));
    assert_eq!(readyz(admin), Some(503));
    assert_eq!(try_get(local(admin), "/healthz").map(|r| r.status), Ok(200));
    std::fs::write(srv.dir().join("go"), b"").unwrap();
    assert!(
        eventually(WAIT, || readyz(admin) == Some(200)),
        "{}",
        srv.report()
    );
    assert_eq!(agent_line(agent).as_deref(), Ok("up ready 100%\n"));
    assert_eq!(get_ok(srv.addr(), "/").text(), "ok");
}

#[test]
fn a_reload_asked_for_during_start_up_follows_once_the_workers_are_ready() {
    let srv = Spillway::new("apps/slow_import.py:app").start();
    // The import waits for the file `go`: the server is still starting.
    assert!(
        srv.wait_output(WAIT, |e, _| e.contains("listening")),
        "{}",
        srv.report()
    );
    srv.signal("HUP");
    assert!(
        srv.wait_output(WAIT, |e, _| e.contains("reload requested during start-up")),
        "{}",
        srv.report()
    );
    std::fs::write(srv.dir().join("go"), b"").unwrap();
    assert!(
        srv.wait_output(WAIT, |e, _| e.contains(RELOADED)),
        "the reload asked for during start-up never happened\n{}",
        srv.report()
    );
    assert_eq!(get_ok(srv.addr(), "/").text(), "ok");
}

#[test]
fn status_document_has_every_field() {
    let srv = Spillway::new("apps/lifecycle.py:app")
        .workers(2)
        .args(["--threads", "3"])
        .with_admin()
        .start();
    let admin = srv.admin();
    for _ in 0..4 {
        get_ok(srv.addr(), "/");
    }
    assert!(eventually(WAIT, || readyz(admin) == Some(200)));
    let mut st = status(admin);
    // Counters may trail the responses by a stats interval.
    assert!(
        eventually(WAIT, || {
            st = status(admin);
            st.get("workers").arr().len() == 2
                && st
                    .get("workers")
                    .arr()
                    .iter()
                    .map(|w| w.get("requests_served").u64())
                    .sum::<u64>()
                    >= 4
        }),
        "requests_served never reached 4: {st}"
    );
    for k in [
        "generation",
        "workers",
        "queue",
        "connections",
        "listeners",
        "ready",
        "draining",
    ] {
        assert!(st.has(k), "/status has no {k:?}: {st}");
    }
    assert!(st.get("generation").num().is_some(), "{st}");
    assert_eq!(st.get("ready").bool(), Some(true), "{st}");
    assert_eq!(st.get("draining").bool(), Some(false), "{st}");
    let workers = st.get("workers").arr();
    assert_eq!(workers.len(), 2, "{st}");
    for w in workers {
        for k in [
            "pid",
            "generation",
            "busy_threads",
            "requests_served",
            "rss_bytes",
            "stuck_threads",
        ] {
            assert!(w.get(k).num().is_some(), "worker has no numeric {k:?}: {w}");
        }
        assert!(w.get("rss_bytes").u64() > 0, "{w}");
        assert_ne!(w.get("pid").u64(), u64::from(srv.pid), "{w}");
    }
    let q = st.get("queue");
    for k in ["length", "oldest_age_ms"] {
        assert!(q.has(k), "queue has no {k:?}: {st}");
    }
    assert_eq!(q.get("length").u64(), 0, "{st}");
    assert!(st.get("connections").num().is_some(), "{st}");
    let listeners = st.get("listeners").arr();
    assert_eq!(listeners.len(), 1, "{st}");
    let l = &listeners[0];
    for k in [
        "listener",
        "accept_queue",
        "accept_queue_limit",
        "accept_queue_max_seen",
    ] {
        assert!(l.has(k), "listener has no {k:?}: {st}");
    }
    assert_eq!(l.get("listener").s(), srv.addr().to_string(), "{st}");
    assert!(l.get("accept_queue_limit").u64() > 0, "{st}");
}

#[test]
fn dev_reload_picks_up_a_changed_python_file() {
    // The server watches its working directory (its scratch dir): put the app there.
    let (b, app_in_cwd) = Spillway::new("app.py:app").file("app.py", &lifecycle_app());
    let srv = b.args(["--reload", "--drain-delay", "0"]).start();
    let r = get_ok(srv.addr(), "/");
    assert_eq!(r.json().get("version").s(), "v1");
    let pid1 = pid_of(&r);
    std::fs::write(
        &app_in_cwd,
        lifecycle_app().replace("\"v1\"", "\"v2-edited-on-disk\""),
    )
    .unwrap();
    let mut last = String::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            last = try_get(srv.addr(), "/")
                .map(|r| r.text())
                .unwrap_or_else(|e| e);
            last.contains("v2-edited-on-disk")
        }),
        "the edited file was never served; last answer {last}\n{}",
        srv.report()
    );
    assert!(srv.stderr_contains(RELOADED), "{}", srv.report());
    assert_ne!(pid_of(&get_ok(srv.addr(), "/")), pid1);
}

/// A launcher that does what systemd does for socket activation: the listening socket on
/// fd 3, `LISTEN_PID` = its own pid (kept by exec), `LISTEN_FDS`, `LISTEN_FDNAMES`.
pub(crate) const ACTIVATE_PY: &str = r#"
import os, socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(128)
fd = s.detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "http"
exe = sys.argv[2:]
os.execv(exe[0], exe)
"#;

#[test]
fn socket_activation_serves_on_the_inherited_listening_socket() {
    let activated = free_port();
    let ignored = free_port();
    let b = Spillway::new("apps/lifecycle.py:app");
    let launcher = b.dir().join("activate.py");
    std::fs::write(&launcher, ACTIVATE_PY).unwrap();
    let mut srv = b
        .bind(format!("127.0.0.1:{ignored}"))
        .args(["--drain-delay", "0"])
        .wrap(
            "python3",
            [launcher.into_os_string(), activated.to_string().into()],
        )
        .spawn();
    srv.listeners = vec![Listener::Tcp(local(activated))];
    if let Err(last) = wait_for_200(local(activated), "/") {
        panic!(
            "nothing served on the socket passed as fd 3 (LISTEN_FDS=1); last: {last}\n{}",
            srv.report()
        );
    }
    assert!(srv.is_running(), "{}", srv.report());
    // `--bind` is ignored under socket activation.
    assert!(
        TcpStream::connect_timeout(&local(ignored), Duration::from_secs(5)).is_err(),
        "--bind 127.0.0.1:{ignored} was bound although sockets were passed\n{}",
        srv.report()
    );
    // Keep-alive and a second connection work as usual.
    let mut c = srv.connect();
    for _ in 0..3 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{r}");
    }
    srv.signal("TERM");
    wait_exit_ok(&mut srv, WAIT);
}

/// Collects `sd_notify` datagrams until `pred` holds on one of them (bounded).
fn wait_notify(sock: &UnixDatagram, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = pred(&msg);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn sd_notify_ready_reloading_stopping() {
    let path = unix_socket_path();
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut srv = Spillway::new("apps/lifecycle.py:app")
        .args(["--drain-delay", "0"])
        .env("NOTIFY_SOCKET", &path)
        .start();
    let mut seen = Vec::new();
    let ok = wait_notify(&sock, &mut seen, |m| has_line(m, "READY=1"));
    assert!(
        ok,
        "no READY=1 on NOTIFY_SOCKET; got {seen:?}\n{}",
        srv.report()
    );
    assert!(
        seen.iter().all(|m| m.lines().all(|l| l.contains('='))),
        "malformed datagrams: {seen:?}"
    );
    get_ok(srv.addr(), "/");

    srv.signal("HUP");
    let ok = wait_notify(&sock, &mut seen, |m| has_line(m, "RELOADING=1"));
    assert!(
        ok,
        "no RELOADING=1 after SIGHUP; got {seen:?}\n{}",
        srv.report()
    );
    let ok = wait_notify(&sock, &mut seen, |m| has_line(m, "READY=1"));
    assert!(
        ok,
        "no READY=1 after the reload; got {seen:?}\n{}",
        srv.report()
    );

    srv.signal("TERM");
    let ok = wait_notify(&sock, &mut seen, |m| has_line(m, "STOPPING=1"));
    assert!(
        ok,
        "no STOPPING=1 after SIGTERM; got {seen:?}\n{}",
        srv.report()
    );
    wait_exit_ok(&mut srv, WAIT);
    assert!(
        seen.iter()
            .any(|m| m.lines().any(|l| l.starts_with("STATUS="))),
        "no STATUS= ever sent: {seen:?}"
    );
    let _ = std::fs::remove_file(&path);
}
