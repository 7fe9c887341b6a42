//! The front: owns every listening socket and client connection, parses HTTP, admits
//! requests into one fair queue, dispatches each request to a worker process over frames,
//! and supervises those workers. It never links Python.
//!
//! A request's path, from accept to response:
//! `accept` takes the connection; `conn` reads a head (`h1::head`, strict) and turns it
//! into a frame head (`request`); `dispatch::Exchange` gets a thread from the pool
//! (`pool`, the admission queue), opens a stream on that worker's `link`, sends the body
//! under credit and receives the response, which `conn` writes (`h1::response`). The
//! `supervisor` keeps the workers (`spawn`) running; `server` runs the whole in phases.

mod accept;
mod access_log;
mod admin;
mod agent;
mod backlog;
pub mod config;
mod conn;
mod devreload;
mod dispatch;
pub mod error;
mod h1;
mod link;
mod listener;
mod monitor;
mod pool;
pub mod proxy_protocol;
mod request;
mod server;
mod spawn;
mod state;
mod supervisor;
pub mod systemd;
pub mod trusted;

pub use config::{AccessLog, BindAddr, ServerConfig, StateNotifier, Threads, WorkerCommand};
pub use devreload::roots_for as reload_roots;
pub use listener::somaxconn;
pub use server::{controller, serve, serve_with, Control, Controller, Controls};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The application failed to import at start (the traceback is in the log above).
    #[error("could not load APP '{0}' (see the traceback above)")]
    AppLoad(String),
    /// Workers could not be started at all.
    #[error("could not start workers: {0}")]
    WorkerStart(String),
    /// The access log could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    /// The pid file could not be written.
    #[error("cannot write the pid file: {0}")]
    PidFile(std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}
