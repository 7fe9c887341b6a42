//! Frames between the front and its workers: a small, versioned, length-prefixed binary
//! codec, and the credit windows that pace request and response bodies. No I/O happens
//! here: the front and the worker own their sockets and hand this crate buffers, so the
//! codec can be unit-tested and fuzzed on its own.
//!
//! Wire layout of every frame (all integers little-endian):
//!
//! ```text
//! +-------------+--------+---------------+------------------+
//! | length: u32 | kind:u8| stream: u32   | payload ...      |
//! +-------------+--------+---------------+------------------+
//!   length counts kind + stream + payload (so it is >= 5)
//! ```
//!
//! A `stream` names one request; several are in flight on one socket. Control frames use
//! stream 0. Variable-length fields are prefixed by their length (u16 for names and short
//! strings, u32 for values). Nothing is text or JSON: the hot path must stay cheap.
#![forbid(unsafe_code)]

mod credit;
mod decode;
mod encode;
mod frame;

pub use credit::{CreditError, RecvWindow, SendWindow, MAX_WINDOW};
pub use decode::{decode, FrameError};
pub use encode::{encode_body, EncodeError};
pub use frame::{
    BodyKind, Frame, Kind, LevelStats, Protocol, RequestHead, ResponseHead, Scheme, WorkerStats,
};

/// Version of this protocol; a front refuses a worker that speaks another one.
pub const PROTOCOL_VERSION: u16 = 5;

/// Magic bytes at the start of the `Hello` payload, to catch a stray process on the socket.
pub const HELLO_MAGIC: &[u8; 4] = b"SPWY";

/// Largest frame accepted (length field value); larger ones are a protocol error.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Largest header name (or other u16-prefixed field) a frame can carry.
pub const MAX_NAME_LEN: usize = u16::MAX as usize;

/// Most header pairs one head frame can carry.
pub const MAX_PAIRS: usize = u16::MAX as usize;

/// Largest body chunk an encoder should put in one frame, so a big chunk does not delay
/// frames of other streams for long.
pub const MAX_CHUNK: usize = 256 * 1024;

/// Request-body bytes the front may send before the worker grants credit, when the client
/// did not ask for `100 Continue`: small bodies then travel with the head, no round trip.
pub const INITIAL_REQUEST_WINDOW: u32 = 64 * 1024;

/// Request-body bytes a worker keeps granted ahead of the application's reads.
pub const REQUEST_WINDOW: u32 = 256 * 1024;

/// Response-body bytes a worker may send before the front grants more credit.
pub const INITIAL_RESPONSE_WINDOW: u32 = 256 * 1024;

/// Exit status of a worker whose application could not be imported; the front tells it
/// apart from a crash (at start-up it means: stop, the configuration is wrong).
pub const EXIT_APP_LOAD_FAILED: i32 = 3;

/// Bytes before the payload: length, kind, stream.
const HEADER_LEN: usize = 4 + 1 + 4;
