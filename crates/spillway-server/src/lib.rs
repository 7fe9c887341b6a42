//! The front: owns every listening socket and client connection, parses HTTP, admits
//! requests into one fair queue, dispatches each request to a worker process over frames,
//! and supervises those workers. It never links Python.
//!
//! A request's path, from accept to response:
//! `listeners::accept` takes the connection; `http::conn` reads a head (`h1::head`,
//! strict) and turns it into a frame head (`http::request`); `admission::dispatch::Exchange`
//! gets a thread from the pool (`admission::pool`, the queue), opens a stream on that
//! worker's `admission::link`, sends the body under credit and receives the response, which
//! `http::conn` writes (`h1::response`). `workers::supervisor` keeps the workers
//! (`workers::spawn`) running; `server` runs the whole in phases.
//!
//! The floor plan, each group importing only those after it: `server`; `ops` (admin
//! endpoint, agent-check, state, monitor, control); `listeners`; `http` (connections, TLS,
//! PROXY protocol, request heads); `workers` (supervision); `admission` (queue, exchange,
//! worker link); `h1` (the HTTP/1.1 codec); `telemetry` (metrics, logs, request ids);
//! `host` (systemd, open-files limit, pid file); and `config`, `error` under all.

mod admission;
pub mod config;
pub mod error;
mod h1;
mod host;
mod http;
mod listeners;
mod ops;
mod server;
mod telemetry;
mod workers;

pub use config::trusted;
pub use host::systemd;
pub use http::proxy_protocol;

/// The HTTP/1.1 parsers and the HTTP/2 request path, for the cargo-fuzz targets in
/// `fuzz/`; not an API.
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

    /// An HTTP/2 request's head (as h2 decoded it) to the frame head a worker gets, under
    /// the default limits: the frame's bytes, or the status of its refusal. The frame
    /// must decode back to the same head, and `:authority` must be its `HTTP_HOST`.
    pub fn h2_request(parts: &http::request::Parts, end_stream: bool) -> Result<Vec<u8>, u16> {
        let limits = HeadLimits {
            target: 4094,
            fields: 100,
            field_size: 8190,
        };
        let peer = crate::http::request::Peer {
            ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            remote_addr: bytes::Bytes::from_static(b"127.0.0.1"),
            remote_port: bytes::Bytes::from_static(b"40000"),
            server_name: bytes::Bytes::from_static(b"127.0.0.1"),
            server_port: bytes::Bytes::from_static(b"8000"),
            label: "127.0.0.1:40000".into(),
            tls: None,
        };
        let policy = crate::http::request::RequestPolicy {
            root_path: String::new(),
            limit_request_field_size: limits.field_size,
            forwarded_allow_ips: crate::config::trusted::TrustedProxies::parse("127.0.0.1")
                .expect("a valid address"),
        };
        let (head, _) =
            crate::http::conn::h2_head::head_of(parts, end_stream, &limits, &peer, &policy)
                .map_err(|a| a.status())?;
        if let Some(a) = parts.uri.authority() {
            let host = head
                .headers
                .iter()
                .find(|(k, _)| k.as_ref() == b"HTTP_HOST");
            assert_eq!(host.map(|(_, v)| v.as_ref()), Some(a.as_str().as_bytes()));
        }
        let frame = spillway_proto::Frame::RequestHead {
            stream: 1,
            head: Box::new(head),
        };
        let mut buf = bytes::BytesMut::new();
        if frame.encode(&mut buf).is_err() {
            return Err(431);
        }
        let wire = buf.to_vec();
        match spillway_proto::decode(&mut buf) {
            Ok(Some(back)) => assert_eq!(back, frame, "the frame did not decode to its head"),
            other => panic!("an encoded head did not decode: {other:?}"),
        }
        Ok(wire)
    }

    /// The largest HTTP/2 header list the front takes, under the default limits.
    pub fn h2_header_list() -> u32 {
        crate::http::conn::h2::header_list_limit(&HeadLimits {
            target: 4094,
            fields: 100,
            field_size: 8190,
        }) as u32
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
    AccessLog, AccessLogFormat, BindAddr, CertReqs, HttpVersions, ServerConfig, ServerTiming,
    StateNotifier, Threads, TlsConfig, WorkerCommand,
};
pub use http::tls::TlsError;
pub use listeners::listener::somaxconn;
pub use ops::control::{controller, Control, Controller, Controls};
pub use ops::devreload::roots_for as reload_roots;
pub use server::{serve, serve_with};

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
    /// Under socket activation, a `tls:` bind matches no socket systemd passed.
    #[error("socket activation: --bind tls:{bind} matches none of the sockets systemd passed ({passed}); pass a socket at that address, or drop the tls: binds to serve TLS on every TCP socket")]
    ActivatedTls {
        /// The `tls:` bind.
        bind: std::net::SocketAddr,
        /// The sockets passed.
        passed: String,
    },
    /// Another server holds the pid file.
    #[error("the pid file {path} is held by a running server (pid {pid}); stop it first or choose another --pid-file")]
    PidFileHeld {
        /// The pid file.
        path: String,
        /// The pid written in it.
        pid: String,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}
