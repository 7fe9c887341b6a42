//! Overload and faults through the real binary: the admission queue (503 + Retry-After),
//! clients that leave while queued, the connection limit, the kernel listen-queue watch,
//! request timeouts and stuck workers, worker death and crash loops, and recycling.
//!
//! The app (`apps/overload.py`) appends one line per call to `$TEST_DIR/calls`, so a test
//! can tell whether the application ran at all; `/wait?file=F` holds a Python thread until
//! the test creates `F`, which makes "the worker is busy" a state the test controls
//! instead of a race.

use crate::support::{eventually, Conn, Response, Server, Spillway, IO_TIMEOUT};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = "apps/overload.py:app";

/// What the app recorded so far: one line `<path> <token> <pid>` per call.
fn calls(srv: &Server) -> String {
    std::fs::read_to_string(srv.dir().join("calls")).unwrap_or_default()
}

/// Whether the app was called with `token`.
fn was_called(srv: &Server, token: &str) -> bool {
    calls(srv)
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(token))
}

/// Waits until the app was called with `token` and returns the pid that ran it.
fn wait_called(srv: &Server, token: &str) -> u32 {
    let mut pid = None;
    let seen = eventually(IO_TIMEOUT, || {
        pid = calls(srv).lines().find_map(|l| {
            let mut parts = l.split(' ');
            let _path = parts.next();
            (parts.next() == Some(token)).then(|| parts.next().unwrap().parse().unwrap())
        });
        pid.is_some()
    });
    assert!(
        seen,
        "the app was not called with token {token} within {IO_TIMEOUT:?}\ncalls:\n{}\n{}",
        calls(srv),
        srv.report()
    );
    pid.unwrap()
}

/// Lets every `/wait?file=name` request finish.
fn release(srv: &Server, name: &str) {
    std::fs::write(srv.dir().join(name), b"go").expect("write release file");
}

/// Sends `GET target` on `conn` without reading the answer.
fn send_get(conn: &mut Conn, target: &str) {
    conn.send_request("GET", target, &[], b"");
}

/// The pid a 200 answer of the app reports.
fn pid_of(res: &Response) -> u32 {
    assert_eq!(res.status, 200, "{res}");
    res.json().get("pid").u64() as u32
}

/// The `Retry-After` of a 503, which must be a whole number of seconds, at least 1.
fn retry_after(res: &Response) -> u64 {
    let v = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After:\n{res}"));
    let secs: u64 = v
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not delta-seconds: {v:?}\n{res}"));
    assert!(secs >= 1, "Retry-After: {secs}\n{res}");
    secs
}

/// A 503 refusal from the admission queue: Retry-After, a short body, the connection kept.
fn assert_refused(res: &Response) {
    assert_eq!(res.status, 503, "{res}");
    retry_after(res);
    assert!(!res.body.is_empty(), "503 without a body:\n{res}");
    assert!(res.body.len() < 1024, "503 body is not short:\n{res}");
    assert!(
        !res.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "a refused request must not close its connection:\n{res}"
    );
}

/// Of several connections that each sent one request, the first to be answered (polled
/// in turn, bounded by [`IO_TIMEOUT`]) and its answer.
fn first_answered(conns: &mut [Conn]) -> (usize, Response) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        for (i, c) in conns.iter_mut().enumerate() {
            match c.poll_response(Duration::from_millis(50)) {
                Ok(Some(res)) => return (i, res),
                Ok(None) => {}
                Err(e) => panic!("connection {i}: {e}"),
            }
        }
    }
    panic!(
        "none of {} connections was answered within {IO_TIMEOUT:?}",
        conns.len()
    );
}

/// The access log line of the request whose target ends in `token=<token>`.
fn access_line(path: &Path, token: &str) -> Option<String> {
    let needle = format!("token={token} HTTP/1.1\"");
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.contains(&needle))
        .map(str::to_string)
}

/// Waits for the access log line of `token`.
fn wait_access_line(srv: &Server, path: &Path, token: &str) -> String {
    let mut line = None;
    let found = eventually(Duration::from_secs(10), || {
        line = access_line(path, token);
        line.is_some()
    });
    assert!(
        found,
        "no access log line for token={token}\naccess log:\n{}\n{}",
        std::fs::read_to_string(path).unwrap_or_default(),
        srv.report()
    );
    line.unwrap()
}

/// The `queue=<ms>ms` value of an access log line.
fn queue_ms(line: &str) -> f64 {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("queue="))
        .unwrap_or_else(|| panic!("no queue= in access log line {line:?}"));
    v.trim_end_matches("ms")
        .parse()
        .unwrap_or_else(|_| panic!("bad queue= value in {line:?}"))
}

/// The numeric value of `key=` in a log line.
fn field_u64(line: &str, key: &str) -> Option<u64> {
    let i = line.find(&format!("{key}="))?;
    let v = &line[i + key.len() + 1..];
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    v[..end].parse().ok()
}

/// A server builder with an access log in its scratch directory.
fn with_access_log(b: Spillway) -> (Spillway, PathBuf) {
    let path = b.dir().join("access.log");
    (b.arg("--access-log").arg(&path), path)
}

/// `GET target` on a new connection until it is not a 503 (the queue may still be full
/// for a moment), at most 50 times over 30 s.
fn get_admitted(srv: &Server, target: &str) -> Response {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut last = None;
    for _ in 0..50 {
        let res = srv.get(target);
        if res.status != 503 || Instant::now() >= deadline {
            return res;
        }
        last = Some(res);
        std::thread::sleep(Duration::from_millis(200));
    }
    last.unwrap()
}

/// Waits until a request lands on a worker other than `old` (every answer must be a 200).
fn wait_new_worker(srv: &Server, old: &[u32]) -> u32 {
    let deadline = Instant::now() + IO_TIMEOUT;
    for i in 0..300 {
        let res = srv.get(&format!("/pid?token=probe{i}"));
        let pid = pid_of(&res);
        if !old.contains(&pid) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "requests still go to {old:?} after {IO_TIMEOUT:?}\n{}",
            srv.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("requests still go to {old:?}\n{}", srv.report());
}

fn kill_worker(pid: u32) {
    let st = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -KILL {pid} failed");
}

#[test]
fn queue_full_gets_503_with_retry_after_and_the_connection_stays_usable() {
    let (b, log) = with_access_log(Spillway::new(APP).args([
        "--threads",
        "1",
        "--max-queue",
        "1",
        "--queue-timeout",
        "30",
    ]));
    let srv = b.start();
    // The only Python thread is busy until we say so.
    let mut busy = srv.connect();
    send_get(&mut busy, "/wait?file=go&token=busy");
    wait_called(&srv, "busy");

    // Two more requests: one fits in the queue (length 1), the other is refused at once.
    let mut conns = vec![srv.connect(), srv.connect()];
    send_get(&mut conns[0], "/pid?token=q0");
    send_get(&mut conns[1], "/pid?token=q1");
    let (refused_i, refused) = first_answered(&mut conns);
    assert_refused(&refused);
    let (refused_token, queued_token) = if refused_i == 0 {
        ("q0", "q1")
    } else {
        ("q1", "q0")
    };
    let mut refused_conn = conns.remove(refused_i);
    let mut queued_conn = conns.pop().unwrap();

    // The refused connection stays open and usable: while the queue is still full, a
    // second request on it is refused the same way.
    let again = refused_conn.get("/pid?token=again");
    assert_refused(&again);

    release(&srv, "go");
    assert_eq!(busy.read_response().status, 200);
    let queued = queued_conn.read_response();
    assert_eq!(queued.status, 200, "{queued}");
    // Now there is room: the same connection gets a normal answer.
    let later = refused_conn.get("/pid?token=later");
    assert_eq!(later.status, 200, "{later}");

    for t in [refused_token, "again"] {
        assert!(
            !was_called(&srv, t),
            "a refused request ran: {t}\n{}",
            calls(&srv)
        );
    }
    // The queued request waited at least until the refusal above; the access log says so.
    let line = wait_access_line(&srv, &log, queued_token);
    assert!(line.contains(" 200 "), "{line}");
    assert!(
        queue_ms(&line) > 0.0,
        "queued request logged without queue time: {line}"
    );
    let line = wait_access_line(&srv, &log, refused_token);
    assert!(line.contains(" 503 "), "{line}");
    queue_ms(&line);
}

#[test]
fn queue_wait_exceeded_gets_503_and_the_request_never_runs() {
    let srv = Spillway::new(APP)
        .args(["--threads", "1", "--queue-timeout", "1"])
        .start();
    let mut busy = srv.connect();
    send_get(&mut busy, "/wait?file=go&token=busy");
    wait_called(&srv, "busy");

    let mut waiter = srv.connect();
    let t0 = Instant::now();
    send_get(&mut waiter, "/pid?token=late");
    let res = waiter.read_response();
    let waited = t0.elapsed();
    assert_refused(&res);
    assert!(
        waited >= Duration::from_millis(900),
        "503 after {waited:?}, before the 1 s queue timeout"
    );
    assert!(
        waited < Duration::from_secs(20),
        "the queue-timeout 503 came {waited:?} after the request"
    );

    release(&srv, "go");
    assert_eq!(busy.read_response().status, 200);
    // Same connection, a worker free now: served.
    let next = waiter.get("/pid?token=next");
    assert_eq!(next.status, 200, "{next}");
    assert!(
        !was_called(&srv, "late"),
        "the timed-out request ran anyway\n{}",
        calls(&srv)
    );
}

#[test]
fn queue_timeout_refusal_logs_the_time_spent_queued() {
    let (b, log) =
        with_access_log(Spillway::new(APP).args(["--threads", "1", "--queue-timeout", "1"]));
    let srv = b.start();
    let mut busy = srv.connect();
    send_get(&mut busy, "/wait?file=go&token=busy");
    wait_called(&srv, "busy");
    let res = srv.get("/pid?token=late");
    assert_eq!(res.status, 503, "{res}");
    release(&srv, "go");
    assert_eq!(busy.read_response().status, 200);
    let line = wait_access_line(&srv, &log, "late");
    assert!(
        queue_ms(&line) >= 900.0,
        "a request that waited the 1 s queue timeout is logged with {line:?}"
    );
}

#[test]
fn client_gone_while_queued_is_never_run() {
    let srv = Spillway::new(APP)
        .args(["--threads", "1", "--max-queue", "1"])
        .start();
    let mut busy = srv.connect();
    send_get(&mut busy, "/wait?file=go&token=busy");
    wait_called(&srv, "busy");

    // One of these two is queued for sure: the other is refused because the queue is full.
    let mut conns = vec![srv.connect(), srv.connect()];
    send_get(&mut conns[0], "/pid?token=gone0");
    send_get(&mut conns[1], "/pid?token=gone1");
    let (refused_i, refused) = first_answered(&mut conns);
    assert_refused(&refused);
    let queued_token = if refused_i == 0 { "gone1" } else { "gone0" };
    // The queued request's client goes away.
    drop(conns.remove(1 - refused_i));

    release(&srv, "go");
    assert_eq!(busy.read_response().status, 200);
    // FIFO with one thread: had the abandoned request been dispatched, it would have run
    // before this one.
    let after = get_admitted(&srv, "/pid?token=after");
    assert_eq!(after.status, 200, "{after}");
    assert!(
        !was_called(&srv, queued_token),
        "a request whose client had gone while it was queued was run\ncalls:\n{}\n{}",
        calls(&srv),
        srv.report()
    );
}

#[test]
fn connection_limit_stops_accepting_and_resumes_below_low_water() {
    let srv = Spillway::new(APP).args(["--max-connections", "2"]).start();
    let mut c1 = srv.connect();
    assert_eq!(c1.get("/pid?token=c1").status, 200);
    let mut c2 = srv.connect();
    assert_eq!(c2.get("/pid?token=c2").status, 200);
    assert!(
        srv.stderr_contains("connection limit reached"),
        "{}",
        srv.report()
    );

    // The kernel completes the handshake, but the front does not accept this one.
    let mut c3 = srv.connect();
    send_get(&mut c3, "/pid?token=c3");
    let early = c3
        .poll_response(Duration::from_millis(1500))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(early.is_none(), "served past --max-connections: {early:?}");
    assert!(!was_called(&srv, "c3"));

    // Below 90% of the limit the front accepts again and the waiting request is served.
    drop(c1);
    let res = c3.read_response();
    assert_eq!(res.status, 200, "{res}");
    assert!(srv.stderr_contains("accepting again"), "{}", srv.report());
    // c2 is untouched.
    assert_eq!(c2.get("/pid?token=c2b").status, 200);
}

/// `ListenOverflows` of this network namespace, if readable.
fn listen_overflows() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = s.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[test]
fn kernel_listen_queue_overflow_is_logged() {
    let srv = Spillway::new(APP)
        .args(["--max-connections", "1", "--backlog", "1"])
        .start();
    let addr = srv.addr();
    let mut held = srv.connect();
    assert_eq!(held.get("/pid?token=held").status, 200);
    assert!(
        srv.stderr_contains("connection limit reached"),
        "{}",
        srv.report()
    );

    // The front accepts nothing more; a backlog of 1 lets the kernel queue two more
    // connections and drop the SYNs of the rest.
    let before = listen_overflows();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()
            })
        })
        .collect();
    // Keep the connections that made it into the kernel queue open until the end.
    let _queued: Vec<TcpStream> = attempts
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    let after = listen_overflows();
    let caused = matches!((before, after), (Some(b), Some(a)) if a > b);
    if !caused {
        eprintln!(
            "ListenOverflows did not grow ({before:?} -> {after:?}): overflow not provoked here; nothing to check"
        );
        return;
    }

    let needle = "kernel dropped connection attempts";
    assert!(
        srv.wait_output(Duration::from_secs(15), |e, _| e.contains(needle)),
        "ListenOverflows grew {before:?} -> {after:?} but the front did not warn\n{}",
        srv.report()
    );
    let line = srv.stderr_lines_with(needle).remove(0);
    assert!(line.contains("WARN"), "{line}");
    assert!(
        field_u64(&line, "listen_overflows").is_some_and(|n| n > 0),
        "no listen_overflows count: {line}"
    );
    // Our listener with its accept queue depth/limit, e.g. `127.0.0.1:4711 2/1`.
    let ours = format!("{addr} ");
    let i = line
        .find(&ours)
        .unwrap_or_else(|| panic!("listener {addr} not named: {line}"));
    let depth_limit: String = line[i + ours.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '/')
        .collect();
    let parts: Vec<&str> = depth_limit.split('/').collect();
    assert!(
        parts.len() == 2 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "no depth/limit after the listener: {line}"
    );
    drop(held);
}

#[test]
fn hung_request_gets_504_and_its_worker_is_replaced_while_other_threads_serve() {
    let srv = Spillway::new(APP)
        .args([
            "--threads",
            "2",
            "--timeout",
            "4",
            "--graceful-timeout",
            "3",
        ])
        .start();
    let mut hung = srv.connect();
    send_get(&mut hung, "/hang?token=hung");
    let old = wait_called(&srv, "hung");

    // The other thread of the same worker serves normally during the hang.
    let res = srv.get("/sleep?ms=200&token=during");
    assert_eq!(pid_of(&res), old, "{res}");

    let res = hung.read_response();
    assert_eq!(res.status, 504, "{res}");
    assert!(!res.body.is_empty(), "{res}");
    assert!(
        srv.stderr_contains("request timed out; 504"),
        "{}",
        srv.report()
    );
    // One thread stuck, one healthy: requests keep being served.
    let res = srv.get("/pid?token=after504");
    assert_eq!(res.status, 200, "{res}");

    // Stuck past --graceful-timeout: replaced, and the stuck thread's process killed.
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e
            .lines()
            .any(|l| l.contains("replacing worker") && l.contains("stuck"))),
        "the worker with a stuck thread was not replaced\n{}",
        srv.report()
    );
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e.contains("killing drained worker")),
        "{}",
        srv.report()
    );
    let new = wait_new_worker(&srv, &[old]);
    assert_ne!(new, old);
}

#[test]
fn os_exit_in_a_handler_fails_only_its_own_request_with_502() {
    let srv = Spillway::new(APP)
        .workers(2)
        .args(["--threads", "1"])
        .start();
    // One worker holds a request that must not be affected by the other's death.
    let mut busy = srv.connect();
    send_get(&mut busy, "/wait?file=go&token=busy");
    let survivor = wait_called(&srv, "busy");

    let res = srv.get("/exit?token=exit");
    assert_eq!(res.status, 502, "{res}");
    let dead = wait_called(&srv, "exit");
    assert_ne!(dead, survivor);
    assert!(srv.stderr_contains("worker died"), "{}", srv.report());

    // The survivor is still busy, so this runs on the dead worker's successor.
    let res = srv.get("/pid?token=next");
    let new = pid_of(&res);
    assert!(
        new != dead && new != survivor,
        "next request served by {new}; dead {dead}, survivor {survivor}"
    );

    release(&srv, "go");
    let res = busy.read_response();
    assert_eq!(pid_of(&res), survivor, "{res}");
}

#[test]
fn sigkilled_worker_fails_its_in_flight_requests_and_queued_ones_are_served() {
    let srv = Spillway::new(APP).args(["--threads", "2"]).start();
    let mut a = srv.connect();
    send_get(&mut a, "/wait?file=never&token=a");
    let mut b = srv.connect();
    send_get(&mut b, "/wait?file=never&token=b");
    let pid = wait_called(&srv, "a");
    assert_eq!(wait_called(&srv, "b"), pid);
    // Both threads busy: this one waits in the front's queue, not in the worker.
    let mut queued = srv.connect();
    send_get(&mut queued, "/pid?token=queued");

    kill_worker(pid);
    for (name, c) in [("a", &mut a), ("b", &mut b)] {
        let res = c.read_response();
        assert_eq!(res.status, 502, "in-flight request {name}: {res}");
    }
    let res = queued.read_response();
    let new = pid_of(&res);
    assert_ne!(new, pid, "{res}");
    assert!(srv.stderr_contains("worker died"), "{}", srv.report());
    // The connections of the failed requests are still usable.
    let res = a.get("/pid?token=a2");
    assert_eq!(pid_of(&res), new, "{res}");
}

#[test]
fn crash_loop_is_reported_and_restarts_back_off() {
    let srv = Spillway::new(APP).args(["--threads", "1"]).start();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut deaths = 0;
    for i in 0..12 {
        if srv.stderr().contains("CRASH LOOP") || Instant::now() >= deadline {
            break;
        }
        let res = srv.get(&format!("/exit?token=e{i}"));
        assert_eq!(res.status, 502, "death {i}: {res}");
        deaths += 1;
        // Let the front log the death before deciding whether to go on.
        srv.wait_output(Duration::from_secs(5), |e, _| {
            e.matches("worker died").count() >= deaths
        });
    }
    assert!(
        srv.wait_output(Duration::from_secs(10), |e, _| e.contains("CRASH LOOP")),
        "{deaths} deaths and no CRASH LOOP\n{}",
        srv.report()
    );
    let line = srv.stderr_lines_with("CRASH LOOP").remove(0);
    assert!(
        line.contains("ERROR"),
        "a crash loop must be reported loudly: {line}"
    );
    let backoffs: Vec<u64> = srv
        .stderr_lines_with("restarting worker after backoff")
        .iter()
        .filter_map(|l| field_u64(l, "backoff_ms"))
        .collect();
    assert!(
        backoffs.len() >= 2,
        "backoff not logged: {backoffs:?}\n{}",
        srv.report()
    );
    assert!(
        backoffs.windows(2).all(|w| w[1] > w[0]),
        "restart backoff does not grow: {backoffs:?}\n{}",
        srv.report()
    );
    // The server still serves once a worker is back.
    let res = srv.get("/pid?token=alive");
    assert_eq!(res.status, 200, "{res}");
}

#[test]
fn max_requests_recycles_workers_under_load_without_errors() {
    let srv = Spillway::new(APP)
        .args([
            "--threads",
            "2",
            "--max-requests",
            "50",
            "--max-requests-jitter",
            "10",
        ])
        .start();
    let deadline = Instant::now() + Duration::from_secs(120);
    let results: Vec<(Vec<u32>, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let srv = &srv;
                s.spawn(move || {
                    let mut pids = Vec::new();
                    let mut errors = Vec::new();
                    let mut conn = srv.connect();
                    for i in 0..100 {
                        if Instant::now() >= deadline {
                            errors.push(format!("thread {t}: deadline after {i} requests"));
                            break;
                        }
                        // 10 ms each: the run lasts long enough for several
                        // successors to start (a retiring worker serves on until its
                        // successor is ready).
                        let target = format!("/sleep?ms=10&token=t{t}r{i}");
                        conn.send_request("GET", &target, &[], b"");
                        match conn.try_read_response() {
                            Ok(res) if res.status == 200 => {
                                pids.push(res.json().get("pid").u64() as u32)
                            }
                            Ok(res) => errors.push(format!("thread {t} request {i}: {res}")),
                            Err(e) => {
                                errors.push(format!("thread {t} request {i}: {e}"));
                                conn = srv.connect();
                            }
                        }
                    }
                    (pids, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let errors: Vec<&String> = results.iter().flat_map(|(_, e)| e).collect();
    assert!(
        errors.is_empty(),
        "errors during recycling: {errors:#?}\n{}",
        srv.report()
    );
    let mut pids: Vec<u32> = results
        .iter()
        .flat_map(|(p, _)| p.iter().copied())
        .collect();
    assert_eq!(pids.len(), 400);
    pids.sort_unstable();
    pids.dedup();
    assert!(
        pids.len() >= 3,
        "400 requests with --max-requests 50 were served by only {pids:?}\n{}",
        srv.report()
    );
    assert!(srv.stderr_contains("replacing worker"), "{}", srv.report());
    // Each replacement was decided after N plus a jitter of 0..=J requests.
    let limits: Vec<u64> = srv
        .stderr_lines_with("served max-requests (")
        .iter()
        .filter_map(|l| {
            let v = &l[l.find("served max-requests (")? + "served max-requests (".len()..];
            v[..v.find(')')?].parse().ok()
        })
        .collect();
    assert!(
        !limits.is_empty(),
        "no max-requests reason logged\n{}",
        srv.report()
    );
    assert!(
        limits.iter().all(|n| (50..=60).contains(n)),
        "max-requests 50 with jitter 10 gave limits {limits:?}"
    );
}

#[test]
fn worker_over_memory_limit_is_replaced_without_client_errors() {
    let srv = Spillway::new(APP)
        .args(["--threads", "1", "--max-worker-memory", "100"])
        .start();
    let first = pid_of(&srv.get("/pid?token=first"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut replaced = false;
    for i in 0..40 {
        let res = srv.get(&format!("/grow?mib=60&token=g{i}"));
        assert_eq!(res.status, 200, "request {i}: {res}");
        if srv
            .stderr()
            .lines()
            .any(|l| l.contains("replacing worker") && l.contains("resident memory"))
        {
            replaced = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        replaced,
        "worker over --max-worker-memory not replaced\n{}",
        srv.report()
    );
    let new = wait_new_worker(&srv, &[first]);
    assert_ne!(new, first);
}
