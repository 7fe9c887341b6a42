//! Tells the workers while requests wait in the front's queue. A request queues here only
//! when every worker is full, and a worker cannot see this queue: this is its signal to
//! grow its thread pool (if its threads are blocked outside the GIL; the worker decides).

use std::sync::Arc;
use std::time::Duration;

use crate::admission::dispatch::Workers;
use crate::workers::supervisor::Supervisor;

/// How often the workers hear about a queue that persists.
const EVERY: Duration = Duration::from_millis(5);

/// Runs until aborted: idle while the queue is empty, a report every [`EVERY`] while it
/// is not, and one last report when it empties.
pub(crate) async fn run(workers: Arc<Workers>, sup: Arc<Supervisor>) {
    loop {
        workers.queue_grew().await;
        loop {
            let (waiting, oldest) = workers.queue_state();
            for w in sup.workers() {
                w.backlog(waiting, oldest);
            }
            if waiting == 0 {
                break;
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}
