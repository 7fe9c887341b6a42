//! End-to-end tests: the real `spillway` binary started with real Python applications and
//! spoken to in raw HTTP on 127.0.0.1. One test binary (one link on a small machine); one
//! module per feature.

mod support;

mod bench_verdict;
mod cli;
mod dashboards;
mod doctor;
mod doctor_spillway;
mod environ;
mod flask;
mod haproxy;
mod hardening;
mod http;
mod input;
mod interpreter;
mod lifecycle;
mod logs;
mod metrics;
mod operations;
mod overload;
mod response;
mod server_timing;
mod sizing;
mod tls;
mod validate;
mod workers;
