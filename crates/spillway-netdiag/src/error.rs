//! The one error type of this crate, naming what was being read when it failed.

use std::io;
use std::path::PathBuf;

/// Why a TCP fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetdiagError {
    /// A file under /proc could not be read.
    #[error("reading {path}: {source}")]
    Proc {
        /// The file that failed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A /proc file had content this crate does not understand.
    #[error("parsing {what}: {detail}")]
    Parse {
        /// Which file or structure.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A netlink `sock_diag` socket call failed.
    #[error("netlink sock_diag {op}: {source}")]
    Netlink {
        /// The call or step that failed (socket, sendto, recv, kernel reply).
        op: &'static str,
        /// The OS error, or the errno the kernel put in its NLMSG_ERROR reply.
        #[source]
        source: io::Error,
    },
    /// A netlink reply was shorter or shaped differently than the kernel ABI says.
    #[error("malformed netlink sock_diag reply: {0}")]
    Malformed(String),
    /// `getsockopt(TCP_INFO)` failed on the given fd.
    #[error("getsockopt(TCP_INFO): {0}")]
    TcpInfo(#[source] io::Error),
    /// The fd given to `listener_queue` is a TCP socket but not in LISTEN state.
    #[error("socket is not listening (TCP state {0})")]
    NotListening(u8),
}

impl NetdiagError {
    pub(crate) fn proc(path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetdiagError::Proc {
            path: path.into(),
            source,
        }
    }
}
