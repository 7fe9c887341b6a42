//! Listeners and workers: unix sockets, IPv6, several binds, requests spread over workers.

use crate::support::{unix_socket_path, Listener, Spillway};
use std::thread;

#[test]
fn two_workers_with_one_thread_serve_two_slow_requests_in_parallel() {
    let srv = Spillway::new("apps/rendezvous.py:app")
        .workers(2)
        .arg("--threads")
        .arg("1")
        .start();
    // Each request waits for the other to arrive: both can only succeed concurrently,
    // and with one thread per worker they must be on different workers.
    let results: Vec<crate::support::Response> = thread::scope(|s| {
        let a = s.spawn(|| srv.get("/meet?me=a&other=b"));
        let b = s.spawn(|| srv.get("/meet?me=b&other=a"));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let mut pids = Vec::new();
    for res in &results {
        assert_eq!(res.status, 200, "{res}");
        let j = res.json();
        assert_eq!(
            j.get("met").bool(),
            Some(true),
            "requests did not run in parallel: {j}"
        );
        pids.push(j.get("pid").u64());
    }
    assert_ne!(pids[0], pids[1], "both requests ran in the same worker");
    assert!(
        !pids.contains(&(srv.pid as u64)),
        "the front must not run Python"
    );
}

#[test]
fn one_worker_with_two_threads_serves_two_requests_in_parallel() {
    let srv = Spillway::new("apps/rendezvous.py:app")
        .arg("--threads")
        .arg("2")
        .start();
    let results: Vec<crate::support::Response> = thread::scope(|s| {
        let a = s.spawn(|| srv.get("/meet?me=c&other=d"));
        let b = s.spawn(|| srv.get("/meet?me=d&other=c"));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let pids: Vec<u64> = results
        .iter()
        .map(|r| {
            let j = r.json();
            assert_eq!(j.get("met").bool(), Some(true), "{j}");
            j.get("pid").u64()
        })
        .collect();
    assert_eq!(pids[0], pids[1]);
}

#[test]
fn more_requests_than_threads_wait_and_all_complete() {
    // 1 worker x 1 thread, 8 concurrent clients: the extra requests queue in the front.
    let srv = Spillway::new("examples/slow.py:app")
        .arg("--threads")
        .arg("1")
        .env("SLOW_MS", "20")
        .start();
    let results: Vec<crate::support::Response> = thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| srv.get("/?ms=20"))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json().get("slept_ms").u64(), 20);
    }
}

#[test]
fn unix_socket_bind_is_served() {
    let path = unix_socket_path();
    let srv = Spillway::new("apps/echo.py:app")
        .bind(format!("unix:{}", path.display()))
        .start();
    assert_eq!(srv.listeners, vec![Listener::Unix(path.clone())]);
    let mut conn = srv.connect_unix(&path);
    let res = conn.get("/over-unix");
    assert_eq!(res.status, 200, "{res}");
    let env = res.json().get("environ").clone();
    assert_eq!(env.get("PATH_INFO").s(), "/over-unix");
    assert_eq!(
        env.get("REMOTE_ADDR").s(),
        "",
        "REMOTE_ADDR for a unix socket client"
    );
    // Keep-alive works there too.
    let res = conn.get("/again");
    assert_eq!(res.status, 200, "{res}");
}

#[test]
fn several_binds_are_all_served() {
    let path = unix_socket_path();
    let srv = Spillway::new("apps/echo.py:app")
        .bind("127.0.0.1:0")
        .bind(format!("unix:{}", path.display()))
        .start();
    assert_eq!(srv.get("/tcp").status, 200);
    assert_eq!(srv.connect_unix(&path).get("/unix").status, 200);
}

#[test]
fn ipv6_bind_is_served() {
    let srv = Spillway::new("apps/echo.py:app").bind("[::1]:0").start();
    let res = srv.get("/v6");
    assert_eq!(res.status, 200, "{res}");
    let env = res.json().get("environ").clone();
    assert_eq!(env.get("REMOTE_ADDR").s(), "::1");
    assert_eq!(env.get("SERVER_NAME").s(), "::1");
}

#[test]
fn startup_logs_listener_and_backlog() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--backlog")
        .arg("1000000")
        .start();
    // somaxconn caps a huge backlog: the log must say so with both numbers.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !somaxconn.is_empty() && somaxconn.parse::<u64>().unwrap_or(0) < 1_000_000 {
        assert!(
            srv.wait_output(std::time::Duration::from_secs(10), |e, _| e
                .contains("1000000")
                && e.contains(&somaxconn)),
            "backlog 1000000 capped by somaxconn {somaxconn} is not logged with both numbers\n{}",
            srv.report()
        );
    }
    assert_eq!(srv.get("/").status, 200);
}

#[test]
fn workers_run_under_sched_batch_unless_told_normal() {
    let batch = Spillway::new("apps/scheduling.py:app").start();
    let res = batch.get("/");
    assert_eq!((res.status, res.text().as_str()), (200, "batch"), "{res}");
    let front = std::fs::read_to_string(format!("/proc/{}/stat", batch.pid)).unwrap();
    // Field 41 (policy), counted after the command name's closing parenthesis.
    let policy = front[front.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(38)
        .unwrap()
        .to_string();
    assert_eq!(policy, "0", "the front keeps the default policy");
    drop(batch);
    let normal = Spillway::new("apps/scheduling.py:app")
        .args(["--worker-scheduling", "normal"])
        .start();
    let res = normal.get("/");
    assert_eq!((res.status, res.text().as_str()), (200, "other"), "{res}");
}

#[test]
fn an_unknown_worker_scheduling_is_refused_naming_what_is_allowed() {
    let out = Spillway::new("apps/scheduling.py:app")
        .args(["--worker-scheduling", "realtime"])
        .run();
    crate::cli::one_line_naming(&out, "--worker-scheduling");
    assert!(
        out.stderr.contains("batch") && out.stderr.contains("normal"),
        "{out}"
    );
}
