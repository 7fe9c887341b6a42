//! Tells the workers how many requests all of them have finished, and how many threads the
//! others run. A worker sizes its thread pool by what more threads complete, but its own
//! count can rise by taking work from the others (a bigger share of a lock or a file they
//! all contend for, or of the clients' requests); the sum says whether the whole rose, as
//! long as the others' threads stayed the same meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::workers::supervisor::Supervisor;

/// How often the workers hear the count while requests finish. A worker measures a level
/// over 200 ms or more and takes the count's arrival times as its clock, so a late report
/// shortens that window a little but does not skew its rate.
const EVERY: Duration = Duration::from_millis(20);

/// Runs until aborted: a report every [`EVERY`] while the count moves, none while idle.
pub(crate) async fn run(sup: Arc<Supervisor>) {
    let mut total: u64 = 0;
    let mut sent: u64 = 0;
    // Each worker's count when last seen: the total only grows, also when a worker with a
    // large count exits (a plain sum would then fall).
    let mut seen: HashMap<u32, u64> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let workers = sup.workers();
        for w in &workers {
            let n = w.served();
            let before = seen.insert(w.pid, n).unwrap_or(0);
            total += n.saturating_sub(before);
        }
        seen.retain(|pid, _| workers.iter().any(|w| w.pid == *pid));
        if total == sent {
            continue;
        }
        sent = total;
        let threads: Vec<u32> = workers.iter().map(|w| u32::from(w.threads())).collect();
        let all: u32 = threads.iter().sum();
        for (w, own) in workers.iter().zip(threads) {
            w.served_all(total, all - own);
        }
    }
}
