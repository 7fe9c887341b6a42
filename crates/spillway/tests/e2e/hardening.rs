//! What hostile clients and misbehaving applications found, through the real binary:
//! workers that die while a child holds their link, fork or signal themselves; requests
//! that run past `--timeout` in Python and in C; slow and broken request bodies; log
//! lines a client tries to forge; and a planted pid-file symlink.
//!
//! The app (`apps/hostile.py`) records its calls in `$TEST_DIR/calls` and the processes
//! it starts in `$TEST_DIR/children`, which the tests kill when they are done.

use std::time::{Duration, Instant};

use crate::support::{eventually, Conn, Response, Server, Spillway, IO_TIMEOUT};

const APP: &str = "apps/hostile.py:app";

/// Kills the processes the app started when the test ends, however it ends.
struct Children(std::path::PathBuf);

impl Children {
    fn of(srv: &Server) -> Children {
        Children(srv.dir().to_path_buf())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for pid in recorded_children(&self.0) {
            // SAFETY: kill(2) with a pid the app recorded; at worst it is gone already.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn child_pids(srv: &Server) -> Vec<i32> {
    recorded_children(srv.dir())
}

fn recorded_children(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("children"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn calls(srv: &Server) -> String {
    std::fs::read_to_string(srv.dir().join("calls")).unwrap_or_default()
}

fn pid_of(res: &Response) -> u32 {
    assert_eq!(res.status, 200, "{res}");
    res.json().get("pid").u64() as u32
}

/// Whether `pid` is gone or a zombie (exited, not yet reaped by its parent).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A request that ends its worker answers 502 at once, and the next one is served by a
/// new worker, even though a process the application started still holds the old
/// worker's link to the front.
fn assert_death_noticed_at_once(srv: &Server, target: &str) {
    let old = pid_of(&srv.get("/pid"));
    let started = Instant::now();
    let res = srv.get(target);
    let took = started.elapsed();
    assert_eq!(res.status, 502, "{target}: {res}\n{}", srv.report());
    // --timeout is 30 s: a death seen only when the link closes would answer 504 then.
    assert!(
        took < Duration::from_secs(5),
        "{target}: 502 took {took:?}\n{}",
        srv.report()
    );
    assert!(
        !child_pids(srv).is_empty(),
        "the app started no child:\n{}",
        calls(srv)
    );
    let mut new = None;
    let served = eventually(IO_TIMEOUT, || {
        let res = srv.get("/pid");
        if res.status == 200 {
            new = Some(pid_of(&res));
        }
        new.is_some()
    });
    assert!(served, "no worker served after {target}\n{}", srv.report());
    assert_ne!(new, Some(old), "{}", srv.report());
}

#[test]
fn a_worker_that_dies_while_its_children_hold_its_link_is_noticed_at_once() {
    let srv = Spillway::new(APP)
        .args(["--threads", "2", "--timeout", "30"])
        .start();
    let _children = Children::of(&srv);
    // A child started with every fd inherited (`os.system('… &')`, Popen(close_fds=False)).
    assert_death_noticed_at_once(&srv, "/exit-with-child");
    // A forked child, which keeps every fd whatever close-on-exec says.
    assert_death_noticed_at_once(&srv, "/exit-with-fork");
    assert!(
        srv.stderr_contains("worker died; its in-flight requests got 502"),
        "{}",
        srv.report()
    );
}

#[test]
fn a_forked_child_that_returns_from_the_application_exits() {
    let mut srv = Spillway::new(APP).args(["--threads", "2"]).start();
    let _children = Children::of(&srv);
    let res = srv.get("/fork");
    assert_eq!(res.status, 200, "{res}");
    let child = res.json().get("child").u64() as i32;
    assert!(child > 0, "the parent did not answer: {res}");
    assert!(
        eventually(Duration::from_secs(10), || exited(child)),
        "the forked child {child} is still running\n{}",
        srv.report()
    );
    // The worker goes on serving, and the server stops cleanly.
    assert_eq!(srv.get("/pid").status, 200);
    srv.signal("TERM");
    assert!(srv.wait_exit(IO_TIMEOUT).is_some(), "{}", srv.report());
    assert!(exited(child));
}

#[test]
fn a_worker_that_sends_itself_a_fatal_signal_dies_and_is_replaced() {
    let srv = Spillway::new(APP).args(["--threads", "2"]).start();
    let old = pid_of(&srv.get("/pid"));
    let res = srv.get("/segv");
    assert_eq!(res.status, 502, "{res}\n{}", srv.report());
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e.contains("killed by signal 11")),
        "{}",
        srv.report()
    );
    // faulthandler printed the Python stack of the crash.
    assert!(
        srv.stderr_contains("Segmentation fault"),
        "{}",
        srv.report()
    );
    let mut new = None;
    assert!(eventually(IO_TIMEOUT, || {
        let r = srv.get("/pid");
        new = (r.status == 200).then(|| pid_of(&r));
        new.is_some()
    }));
    assert_ne!(new, Some(old));
}

#[test]
fn a_request_running_python_past_the_timeout_is_interrupted_and_its_thread_serves_again() {
    let srv = Spillway::new(APP)
        .args([
            "--threads",
            "1",
            "--timeout",
            "2",
            "--graceful-timeout",
            "2",
        ])
        .start();
    let pid = pid_of(&srv.get("/pid"));
    let res = srv.get("/spin");
    assert_eq!(res.status, 504, "{res}");
    // The worker's only thread is free again: the next request is served by the same
    // worker (a thread left spinning would get it replaced instead).
    let res = srv.get("/pid");
    assert_eq!(pid_of(&res), pid, "{}", srv.report());
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e.contains("request interrupted")),
        "{}",
        srv.report()
    );
    // The application's `finally:` ran.
    assert!(calls(&srv).contains("/spin-finally"), "{}", calls(&srv));
    std::thread::sleep(Duration::from_secs(3));
    let err = srv.stderr();
    assert!(!err.contains("replacing worker"), "{}", srv.report());
    assert!(!err.contains("Traceback"), "{}", srv.report());
    assert_eq!(pid_of(&srv.get("/pid")), pid);
}

#[test]
fn a_request_stuck_in_c_code_holding_the_gil_gets_its_worker_replaced() {
    let srv = Spillway::new(APP)
        .args([
            "--threads",
            "2",
            "--timeout",
            "2",
            "--graceful-timeout",
            "2",
        ])
        .start();
    let old = pid_of(&srv.get("/pid"));
    let res = srv.get("/regex");
    assert_eq!(res.status, 504, "{res}");
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e
            .lines()
            .any(|l| l.contains("replacing worker") && l.contains("stuck"))),
        "{}",
        srv.report()
    );
    let mut new = None;
    assert!(
        eventually(IO_TIMEOUT, || {
            let r = srv.get("/pid");
            new = (r.status == 200).then(|| pid_of(&r)).filter(|&p| p != old);
            new.is_some()
        }),
        "no new worker served\n{}",
        srv.report()
    );
}

/// Starts `POST /upload` with a body of `len` bytes on a new connection and sends `sent`
/// of them.
fn start_upload(srv: &Server, len: usize, sent: usize) -> Conn {
    let mut c = srv.connect();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    c.send(head.as_bytes());
    c.send(&vec![b'u'; sent]);
    c
}

#[test]
fn slow_uploads_hold_no_python_thread() {
    let srv = Spillway::new(APP)
        .args(["--threads", "2", "--queue-timeout", "2"])
        .start();
    // Two clients trickle their bodies: before buffering they held both threads.
    let mut slow: Vec<Conn> = (0..2).map(|_| start_upload(&srv, 100, 1)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let res = srv.get("/pid");
    assert_eq!(res.status, 200, "{res}\n{}", srv.report());
    assert!(
        !calls(&srv).contains("/upload"),
        "an upload reached the app before its body was here:\n{}",
        calls(&srv)
    );
    for c in &mut slow {
        c.send(&[b'u'; 99]);
        let res = c.read_response();
        assert_eq!(res.status, 200, "{res}");
        assert_eq!(res.json().get("length").u64(), 100, "{res}");
    }
}

#[test]
fn the_request_timeout_counts_from_when_the_application_starts() {
    // 3 MiB at about 1 MiB/s with --timeout 2: the upload takes longer than the timeout.
    let srv = Spillway::new(APP)
        .args(["--threads", "1", "--timeout", "2"])
        .start();
    let len = 3 << 20;
    let mut c = start_upload(&srv, len, 0);
    let piece = vec![b'u'; 64 << 10];
    let started = Instant::now();
    for _ in 0..len / piece.len() {
        c.send(&piece);
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(started.elapsed() > Duration::from_secs(2));
    let res = c.read_response();
    assert_eq!(res.status, 200, "{res}\n{}", srv.report());
    assert_eq!(res.json().get("length").u64(), len as u64, "{res}");
}

#[test]
fn a_body_that_stops_arriving_gets_408_whether_held_or_streamed() {
    let srv = Spillway::new(APP)
        .args([
            "--threads",
            "2",
            "--body-timeout",
            "1",
            "--body-buffer",
            "1K",
        ])
        .start();
    // Held by the front (within --body-buffer): the app never runs.
    let mut held = start_upload(&srv, 100, 10);
    let res = held.read_response();
    assert_eq!(res.status, 408, "{res}");
    assert!(held.closed_within(Duration::from_secs(5)).unwrap_or(true));
    assert!(!calls(&srv).contains("/upload"), "{}", calls(&srv));
    // Streamed to the app (over --body-buffer): the app sees the client leave.
    let mut streamed = start_upload(&srv, 100_000, 5000);
    let res = streamed.read_response();
    assert_eq!(res.status, 408, "{res}");
    assert!(calls(&srv).contains("/upload"), "{}", calls(&srv));
    assert_eq!(srv.get("/pid").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!srv.stderr_contains("Traceback"), "{}", srv.report());
}

/// Malformed chunked bodies: sizes with a prefix, a sign or too many digits, whitespace
/// after the size, bare CR or LF line ends, an empty or over-long extension.
const BAD_CHUNKS: &[&str] = &[
    "0x5\r\nhello\r\n0\r\n\r\n",
    "+5\r\nhello\r\n0\r\n\r\n",
    "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "5 \r\nhello\r\n0\r\n\r\n",
    "5\nhello\r\n0\r\n\r\n",
    "5\rhello\r\n0\r\n\r\n",
    "5\r\nhello\n0\r\n\r\n",
    "5;\r\nhello\r\n0\r\n\r\n",
];

fn send_bad_chunked(srv: &Server, chunks: &str) -> Response {
    let mut c = srv.connect();
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}")
            .as_bytes(),
    );
    c.read_response()
}

#[test]
fn malformed_chunked_bodies_get_400_and_no_traceback() {
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(20_000));
    // Held by the front: refused before the app runs.
    let held = Spillway::new(APP).args(["--threads", "2"]).start();
    for chunks in BAD_CHUNKS.iter().copied().chain([long_ext.as_str()]) {
        let res = send_bad_chunked(&held, chunks);
        assert_eq!(res.status, 400, "{chunks:?}: {res}");
    }
    assert!(!calls(&held).contains("/upload"), "{}", calls(&held));
    assert_eq!(held.get("/pid").status, 200);

    // Streamed (--body-buffer 0): the app is reading when the framing breaks.
    let streamed = Spillway::new(APP)
        .args(["--threads", "2", "--body-buffer", "0"])
        .start();
    for chunks in BAD_CHUNKS {
        let res = send_bad_chunked(&streamed, chunks);
        assert_eq!(res.status, 400, "{chunks:?}: {res}");
    }
    assert_eq!(streamed.get("/pid").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    for srv in [&held, &streamed] {
        let err = srv.stderr();
        assert!(!err.contains("Traceback"), "{}", srv.report());
        assert!(!err.contains("ERROR"), "{}", srv.report());
        let warns = err.lines().filter(|l| l.contains("WARN")).count();
        assert!(
            warns <= 3,
            "client errors are not rate-limited:\n{}",
            srv.report()
        );
    }
}

#[test]
fn a_client_cannot_forge_a_log_line() {
    let (b, access) = {
        let b = Spillway::new(APP).args(["--threads", "1"]);
        let path = b.dir().join("access.log");
        (b.arg("--access-log").arg(&path), path)
    };
    let srv = b.start();
    let forged = "1999-01-01T00:00:00.000000Z  INFO worker ready FORGED";
    let target = format!("/raise%0a{}%0d%1b[2J", forged.replace(' ', "%20"));
    let mut c = srv.connect();
    let res = c.request("POST", &target, &[], b"x");
    assert_eq!(res.status, 500, "{res}");
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e.contains("application error")),
        "{}",
        srv.report()
    );
    let err = srv.stderr();
    assert!(
        !err.lines().any(|l| l.starts_with("1999-")),
        "a client wrote a line of its own into the log:\n{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "an escape sequence reached the log:\n{err}"
    );
    assert!(err.contains("FORGED"), "{err}");
    // The access log escapes what it quotes.
    assert!(eventually(IO_TIMEOUT, || std::fs::read_to_string(&access)
        .is_ok_and(|t| t.contains("/raise"))));
    let text = std::fs::read_to_string(&access).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn the_pid_file_replaces_a_planted_symlink_and_leaves_its_target_alone() {
    let b = Spillway::new(APP);
    let victim = b.dir().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let pid_file = b.dir().join("spillway.pid");
    std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
    let mut srv = b.arg("--pid-file").arg(&pid_file).start();
    // The pid file is written before the workers start; a SIGTERM then is a clean stop.
    assert!(
        eventually(IO_TIMEOUT, || std::fs::symlink_metadata(&pid_file)
            .is_ok_and(|m| m.file_type().is_file())),
        "the pid file is still a link\n{}",
        srv.report()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        srv.pid.to_string()
    );
    srv.signal("TERM");
    assert!(srv.wait_exit(IO_TIMEOUT).is_some(), "{}", srv.report());
    assert!(!pid_file.exists(), "the pid file was not removed at exit");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn a_client_that_closes_its_write_side_mid_body_loses_nothing_else() {
    // A half-close during the body is the client leaving: no 500, no traceback.
    let srv = Spillway::new(APP).args(["--threads", "1"]).start();
    let mut c = start_upload(&srv, 1000, 10);
    c.shutdown_write();
    let _ = c.closed_within(Duration::from_secs(5));
    assert_eq!(srv.get("/pid").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!srv.stderr_contains("Traceback"), "{}", srv.report());
}
