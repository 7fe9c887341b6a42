//! Threads that size themselves: a worker grows its pool while more threads measurably
//! complete more requests, holds it where they would only queue inside the application
//! (requests wait in the front instead), and shrinks it when idle; `--threads N` pins it; a
//! new worker serves its first request alone (warm start), so lazy, thread-unsafe
//! initialisation never sees concurrency.

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

/// `n` clients sending GETs of `/` one after another for `d` (at most 500 each); the
/// statuses.
fn keep_busy(addr: SocketAddr, n: usize, d: Duration) -> Vec<u16> {
    let until = Instant::now() + d;
    let handles: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while Instant::now() < until && got.len() < 500 {
                    got.push(try_get(addr, "/").map_or(0, |r| r.status));
                }
                got
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
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
    assert!(srv.stderr_contains("[probe-up]"), "{}", srv.report());
    let st = status(admin);
    let w = &st.get("workers").arr()[0];
    let sizing = w.get("sizing");
    let measured = |level: &str| {
        sizing
            .get(level)
            .get("requests_per_second")
            .num()
            .is_some_and(|r| r > 0.0)
    };
    assert!(
        measured("current_level") || measured("previous_level"),
        "the levels measured are shown: {w}"
    );
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

#[test]
fn a_lock_bound_application_keeps_a_small_pool_and_requests_wait_in_the_front() {
    // A semaphore of 2 around 50 ms: past 2 threads, more only queue on the semaphore.
    let srv = Spillway::new("apps/locked.py:app")
        .env("LOCK_WIDTH", "2")
        .env("LOCK_MS", "50")
        .with_admin()
        .start();
    let admin = srv.admin();
    get_ok(srv.addr(), "/");
    let mut peak = 0;
    let mut front_max = 0;
    let mut worker_max = 0;
    // 40 clients for 8 s (the semaphore serves 40 requests/s), then in waves of 40.
    let clients = std::thread::spawn({
        let addr = srv.addr();
        move || keep_busy(addr, 40, Duration::from_secs(8))
    });
    while !clients.is_finished() {
        let st = status(admin);
        let w = &st.get("workers").arr()[0];
        peak = peak.max(w.get("threads").u64());
        front_max = front_max.max(st.get("queue").get("length").u64());
        worker_max = worker_max.max(w.get("queued_in_worker").u64());
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses = clients.join().unwrap_or_default();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    for _ in 0..3 {
        let statuses = burst(srv.addr(), "/", 40);
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        peak = peak.max(threads(admin));
    }
    assert!(
        peak <= 4,
        "the pool grew to {peak} threads on a lock of 2\n{}",
        srv.report()
    );
    assert!(
        srv.stderr_contains("[no-gain]") && srv.stderr_contains("added no throughput"),
        "the log names the rule that held the pool\n{}",
        srv.report()
    );
    assert!(
        front_max >= 20 && worker_max <= 4,
        "requests wait in the front ({front_max} at most), not in the worker ({worker_max})\n{}",
        srv.report()
    );
    let st = status(admin);
    let w = &st.get("workers").arr()[0];
    assert!(!w.get("sizing").get("rule").s().is_empty(), "{w}");
}

#[test]
fn workers_sharing_one_lock_keep_small_pools() {
    // One file lock for both workers, 20 ms per request: 50 requests/s whatever the
    // threads. A worker with more threads takes more of the lock and completes more, so its
    // own numbers say "grow"; the front's count of all workers' completions says the whole
    // did not rise.
    let path = std::env::temp_dir().join(format!(
        "spillway-e2e-shared-lock-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let srv = Spillway::new("apps/shared_lock.py:app")
        .env("SHARED_LOCK_PATH", &path)
        .env("LOCK_MS", "20")
        .workers(2)
        .with_admin()
        .start();
    let admin = srv.admin();
    get_ok(srv.addr(), "/");
    let mut peak = 0;
    let clients = std::thread::spawn({
        let addr = srv.addr();
        move || keep_busy(addr, 40, Duration::from_secs(10))
    });
    while !clients.is_finished() {
        for w in status(admin).get("workers").arr() {
            peak = peak.max(w.get("threads").u64());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses = clients.join().unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        peak <= 4,
        "a worker grew to {peak} threads on a lock both share\n{}",
        srv.report()
    );
}
