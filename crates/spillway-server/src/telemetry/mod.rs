//! What a request and the server tell the operator's tools while running: counters and
//! histograms (`metrics`), the access log, `X-Request-Id`, `Server-Timing`, and the
//! rate limit on repeatable log lines (`throttle`).

pub mod access_log;
pub mod metrics;
pub mod request_id;
pub mod server_timing;
pub mod throttle;
