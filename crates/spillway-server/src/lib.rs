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
mod exposition;
mod h1;
mod link;
mod listener;
mod metrics;
mod monitor;
mod pool;
pub mod proxy_protocol;
mod request;
mod request_id;
mod server;
mod server_timing;
mod spawn;
mod state;
mod supervisor;
pub mod systemd;
mod tls;
pub mod trusted;

/// The HTTP/1.1 parsers, for the cargo-fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::h1::body::{BodyDecoder, Piece};
    use crate::h1::head::{self, Framing, HeadLimits};
    use std::mem::MaybeUninit;

    /// How a complete head frames its body: `None`, `Some(Some(n))` for a length,
    /// `Some(None)` for chunked.
    pub type BodyFraming = Option<Option<u64>>;

    /// A complete head's length and body framing, `Ok(None)` if it is incomplete, or the
    /// status of its refusal, under the default limits.
    pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, BodyFraming)>, u16> {
        let limits = HeadLimits {
            target: 4094,
            fields: 100,
            field_size: 8190,
        };
        let mut storage = [const { MaybeUninit::uninit() }; 101];
        match head::parse(buf, &limits, &mut storage) {
            Ok(Some(raw)) => Ok(Some((
                raw.len,
                match raw.framing {
                    Framing::None => None,
                    Framing::Length(n) => Some(Some(n)),
                    Framing::Chunked => Some(None),
                },
            ))),
            Ok(None) => head::check_partial(buf, &limits)
                .map(|()| None)
                .map_err(|a| a.status()),
            Err(a) => Err(a.status()),
        }
    }

    /// Decodes a chunked body fed in `pieces`, taking at most `max` bytes a step: the
    /// body and whether it ended, or the status of its refusal.
    pub fn decode_chunked(pieces: &[&[u8]], max: usize) -> Result<(Vec<u8>, bool), u16> {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut buf = bytes::BytesMut::new();
        let mut body = Vec::new();
        let mut next = pieces.iter();
        loop {
            match d.decode(&mut buf, max.max(1)).map_err(|a| a.status())? {
                Some(Piece::Data(b)) => {
                    assert!(!b.is_empty() && b.len() <= max.max(1));
                    body.extend_from_slice(&b);
                }
                Some(Piece::End) => return Ok((body, true)),
                None => match next.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Ok((body, false)),
                },
            }
        }
    }
}

pub use config::{
    AccessLog, AccessLogFormat, BindAddr, CertReqs, HttpVersions, ServerConfig, StateNotifier,
    Threads, TlsConfig, WorkerCommand,
};
pub use devreload::roots_for as reload_roots;
pub use listener::somaxconn;
pub use server::{controller, serve, serve_with, Control, Controller, Controls};
pub use server_timing::ServerTiming;
pub use tls::TlsError;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error (not a `source`: it is in the message already, and a reporter
        /// that walks the chain would print it twice).
        error: std::io::Error,
    },
    /// The application failed to import at start (the traceback is in the log above).
    #[error("could not load APP '{0}' (see the traceback above)")]
    AppLoad(String),
    /// Workers could not be started at all.
    #[error("could not start workers: {0}")]
    WorkerStart(String),
    /// The access log could not be opened.
    #[error("cannot open the access log {0}: {1}")]
    AccessLog(String, std::io::Error),
    /// The pid file could not be written.
    #[error("cannot write the pid file {0}: {1}")]
    PidFile(String, std::io::Error),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}
