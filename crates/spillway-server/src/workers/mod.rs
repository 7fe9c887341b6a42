//! Worker supervision: starting worker processes (`spawn`), keeping `--workers` of them
//! running across generations (`supervisor`), and telling them when requests queue
//! (`backlog`).

pub mod backlog;
pub mod served;
pub mod spawn;
pub mod supervisor;
