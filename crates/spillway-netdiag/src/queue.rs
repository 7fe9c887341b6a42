//! Accept-queue depth and limit of a listening socket we hold, via `getsockopt(TCP_INFO)`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::NetdiagError;

/// The kernel accept queue of one listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections completed by the kernel and waiting for `accept()`.
    pub depth: u32,
    /// The effective backlog: min(listen() argument, net.core.somaxconn).
    pub limit: u32,
}

impl ListenQueue {
    /// The kernel refuses new connections once depth exceeds the limit (depth > limit),
    /// so depth == limit is already the last free slot; both count as full here.
    pub fn is_full(&self) -> bool {
        self.depth >= self.limit
    }
}

// Offsets in struct tcp_info (include/uapi/linux/tcp.h): seven u8 fields, one pad byte,
// then u32s: rto, ato, snd_mss, rcv_mss, unacked, sacked. Read as bytes so this works the
// same on glibc and musl, whose `libc::tcp_info` definitions differ.
const TCPI_STATE: usize = 0;
const TCPI_UNACKED: usize = 24;
const TCPI_SACKED: usize = 28;
const TCP_LISTEN: u8 = 10;

/// Reads the accept-queue depth and limit of a listening TCP socket.
///
/// For a listener the kernel reports the queue in `tcpi_unacked` and the backlog in
/// `tcpi_sacked`. Cheap (one syscall, no allocation): meant to be called every second.
/// Fails with [`NetdiagError::NotListening`] if the socket is not in LISTEN state.
pub fn listener_queue(fd: BorrowedFd<'_>) -> Result<ListenQueue, NetdiagError> {
    let mut buf = [0u8; 104];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(NetdiagError::TcpInfo(io::Error::last_os_error()));
    }
    if (len as usize) < TCPI_SACKED + 4 {
        return Err(NetdiagError::Malformed(format!("tcp_info of {len} bytes")));
    }
    let state = buf[TCPI_STATE];
    if state != TCP_LISTEN {
        return Err(NetdiagError::NotListening(state));
    }
    let u32_at = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    Ok(ListenQueue {
        depth: u32_at(TCPI_UNACKED),
        limit: u32_at(TCPI_SACKED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    /// A listener with backlog 5 via libc, since std always passes 128.
    fn listen_with_backlog(backlog: i32) -> TcpListener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: re-calling listen(2) on a socket we own just changes its backlog.
        let rc = unsafe { libc::listen(l.as_raw_fd(), backlog) };
        assert_eq!(rc, 0);
        l
    }

    #[test]
    fn queue_fills_while_nobody_accepts() {
        let l = listen_with_backlog(5);
        let addr = l.local_addr().unwrap();
        assert_eq!(
            listener_queue(l.as_fd()).unwrap(),
            ListenQueue { depth: 0, limit: 5 }
        );
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let q = listener_queue(l.as_fd()).unwrap();
        assert_eq!(q, ListenQueue { depth: 3, limit: 5 });
        assert!(!q.is_full());
        drop(clients);
    }

    #[test]
    fn connected_socket_is_not_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(matches!(
            listener_queue(c.as_fd()),
            Err(NetdiagError::NotListening(1))
        ));
    }

    #[test]
    fn non_socket_fd_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            listener_queue(f.as_fd()),
            Err(NetdiagError::TcpInfo(_))
        ));
    }
}
