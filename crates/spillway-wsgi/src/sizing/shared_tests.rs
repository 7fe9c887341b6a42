//! Two workers sizing their pools against one resource they share (a SQLite file lock):
//! each worker's own throughput rises when it takes a bigger share from the other, and
//! only the front's count of all completions shows that the whole does not.

use super::*;

const OPEN: ThreadLimits = ThreadLimits {
    min: 1,
    max: 128,
    pinned: None,
    idle_exit: Duration::from_secs(10),
};

/// The lock completes this many requests per second, whoever holds it.
const LOCK_RATE: f64 = 1250.0;
const TICK: Duration = Duration::from_millis(5);
/// The front reports all completions every 20 ms.
const REPORT_EVERY: u32 = 4;

/// Runs two workers with 100 clients each for `secs`; returns the larger target each
/// reached over the last half of the run, and the decisions.
fn run_two(front_reports: bool, secs: f64) -> ([u16; 2], String) {
    let t0 = Instant::now();
    // The second worker started a little later: two workers' probes do not line up.
    let t1 = t0 + Duration::from_millis(370);
    let mut pools = [Sizing::new(OPEN, t0), Sizing::new(OPEN, t1)];
    pools[0].first_request_done(t0);
    pools[1].first_request_done(t1);
    let mut credit = [0.0f64; 2];
    let mut last_done = [t0; 2];
    let mut total: u64 = 0;
    // The front's last report: the count, when, and each worker's threads then.
    let mut heard: Option<(u64, Instant, [u16; 2])> = None;
    let mut peak = [0u16; 2];
    let mut log = Vec::new();
    let ticks = (secs / TICK.as_secs_f64()) as u32;
    for i in 1..=ticks {
        let now = t0 + TICK * i;
        let busy = [pools[0].target(), pools[1].target()];
        let all_busy = f64::from(busy[0] + busy[1]);
        // Every request queues for the one lock: the time a request holds its thread is
        // the time the lock takes to serve everyone ahead of it.
        let service = Duration::from_secs_f64(all_busy / LOCK_RATE);
        for w in 0..2 {
            credit[w] += LOCK_RATE * f64::from(busy[w]) / all_busy * TICK.as_secs_f64();
            while credit[w] >= 1.0 {
                credit[w] -= 1.0;
                pools[w].done(now - service, now, Route::default());
                last_done[w] = now;
                total += 1;
            }
        }
        if front_reports && i % REPORT_EVERY == 0 {
            heard = Some((total, now, [pools[0].target(), pools[1].target()]));
        }
        for w in 0..2 {
            let s = Sample {
                now,
                fresh: true,
                since_done: now - last_done[w],
                front_full: false,
                busy: busy[w],
                oldest_wait: Some(Duration::from_millis(50)),
                cpu: 0.2,
                host_busy: 0.5,
                gil_wait: Duration::ZERO,
                all_served: heard.map(|(requests, at, threads)| Heard {
                    requests,
                    at,
                    other_threads: u32::from(threads[1 - w]),
                }),
            };
            if let Some(d) = pools[w].decide(&s) {
                log.push(format!(
                    "{:.2}s w{w} {} -> {} [{}] {}",
                    (now - t0).as_secs_f64(),
                    d.from,
                    d.to,
                    d.rule.name(),
                    d.why
                ));
            }
            if f64::from(i) > f64::from(ticks) / 2.0 {
                peak[w] = peak[w].max(pools[w].target());
            }
        }
    }
    (peak, log.join("\n"))
}

#[test]
fn workers_sharing_a_lock_do_not_grow_by_taking_each_others_share() {
    let (peak, log) = run_two(true, 30.0);
    assert!(
        peak.iter().all(|&p| p <= 4),
        "threads reached {peak:?} (1 is best: the lock serves one at a time)\n{log}"
    );
}

#[test]
fn without_the_fronts_count_a_worker_grows_into_the_others_share() {
    // The same run without the front's count: this is why the front sends it. (If this
    // ever stops growing, the test above no longer shows the count doing anything.)
    let (peak, log) = run_two(false, 30.0);
    assert!(
        peak.iter().any(|&p| p > 4),
        "threads reached {peak:?}\n{log}"
    );
}
