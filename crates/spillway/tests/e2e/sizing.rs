//! Threads that size themselves: a worker grows its pool while requests wait on I/O and
//! shrinks it when idle; `--threads N` pins it; a new worker serves its first request
//! alone (warm start), so lazy, thread-unsafe initialisation never sees concurrency.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::lifecycle::{get_ok, status, try_get};
use crate::support::{eventually, Spillway};

const WAIT: Duration = Duration::from_secs(30);

/// Threads of the one worker, as /status reports them.
fn threads(admin: u16) -> u64 {
    status(admin).get("workers").arr()[0].get("threads").u64()
}

/// `n` concurrent GETs of `path`, each on its own connection; the statuses.
fn burst(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || try_get(addr, &path).map_or(0, |r| r.status))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
}

#[test]
fn threads_grow_while_requests_wait_on_io_and_shrink_when_idle() {
    let srv = Spillway::new("examples/slow.py:app")
        .env("SLOW_MS", "100")
        .args(["--thread-idle-timeout", "1"])
        .with_admin()
        .start();
    let admin = srv.admin();
    get_ok(srv.addr(), "/");
    assert!(eventually(WAIT, || threads(admin) == 1), "{}", srv.report());
    // 40 clients of an API that waits 100 ms on its database: one thread would take 4 s
    // per round; a grown pool takes a few hundred milliseconds.
    let started = Instant::now();
    let mut peak = 1;
    for _ in 0..5 {
        let statuses = burst(srv.addr(), "/", 40);
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        peak = peak.max(threads(admin));
    }
    assert!(peak >= 8, "threads peaked at {peak}\n{}", srv.report());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the pool did not grow in time: {:?}",
        started.elapsed()
    );
    assert!(srv.stderr_contains("threads 1 -> "), "{}", srv.report());
    assert!(srv.stderr_contains("blocked outside the GIL"));
    // Idle, the threads leave again, down to --min-threads.
    assert!(
        eventually(WAIT, || threads(admin) == 1),
        "threads stayed at {}\n{}",
        threads(admin),
        srv.report()
    );
    assert!(srv.stderr_contains("found no work for 1 s"));
}

#[test]
fn pinned_threads_stay_pinned_under_load() {
    let srv = Spillway::new("examples/slow.py:app")
        .env("SLOW_MS", "50")
        .args(["--threads", "3"])
        .with_admin()
        .start();
    let admin = srv.admin();
    for _ in 0..3 {
        let statuses = burst(srv.addr(), "/", 20);
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    }
    assert!(eventually(WAIT, || threads(admin) == 3), "{}", srv.report());
    let st = status(admin);
    let w = &st.get("workers").arr()[0];
    assert_eq!(w.get("threads_target").u64(), 3, "{w}");
    assert_eq!(
        w.get("request_limit").u64(),
        3,
        "a pinned pool is not pipelined: {w}"
    );
    let changes = srv.stderr_lines_with("threads 1 -> ");
    assert!(
        changes.iter().all(|l| l.contains("warm start over")),
        "only the warm start may change a pinned pool: {changes:#?}"
    );
}

/// 200 requests at once to a worker that has served nothing, against an application whose
/// lazy initialisation breaks when entered twice: none may fail.
fn first_requests_all_succeed(addr: SocketAddr) {
    let statuses = burst(addr, "/", 200);
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    assert_eq!(failed, 0, "{failed} of 200 failed: {statuses:?}");
}

#[test]
fn warm_start_keeps_thread_unsafe_lazy_init_safe_at_start_and_after_reload() {
    let srv = Spillway::new("apps/lazy_init.py:app")
        .args(["--threads", "8"])
        .with_admin()
        .start();
    let admin = srv.admin();
    // Ready, but no request yet: the first 200 arrive together.
    assert!(eventually(WAIT, || crate::support::lifecycle::readyz(
        admin
    ) == Some(200)));
    first_requests_all_succeed(srv.addr());
    let c = get_ok(srv.addr(), "/concurrency").json();
    assert_eq!(c.get("entered_while_building").u64(), 0, "{c}");
    assert!(
        c.get("max_active").u64() > 1,
        "after warm start the pool opens to its 8 threads: {c}"
    );
    // A reload starts a fresh worker: warm start again.
    srv.signal("HUP");
    assert!(
        srv.stderr_contains("reload: new generation serving"),
        "{}",
        srv.report()
    );
    first_requests_all_succeed(srv.addr());
    let c = get_ok(srv.addr(), "/concurrency").json();
    assert_eq!(c.get("entered_while_building").u64(), 0, "{c}");
}

#[test]
fn warm_start_serialises_the_first_request_of_a_self_sizing_worker() {
    let srv = Spillway::new("apps/lazy_init.py:app").with_admin().start();
    first_requests_all_succeed(srv.addr());
    let c = get_ok(srv.addr(), "/concurrency").json();
    assert_eq!(c.get("entered_while_building").u64(), 0, "{c}");
}
