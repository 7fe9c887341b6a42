//! TCP connection states as the kernel numbers them (include/net/tcp_states.h).

use std::fmt;

/// A TCP socket state. `SynRecv` also covers the kernel's request sockets
/// (`TCP_NEW_SYN_RECV`): half-open connections sitting in a listener's SYN queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcpState {
    /// Connected; for a server-side socket not yet accepted it sits in the accept queue.
    Established,
    /// Our SYN is out, waiting for SYN-ACK.
    SynSent,
    /// SYN received, SYN-ACK sent, waiting for the final ACK (SYN queue).
    SynRecv,
    /// We closed first; waiting for the peer's ACK of our FIN.
    FinWait1,
    /// We closed first; our FIN is ACKed, waiting for the peer's FIN.
    FinWait2,
    /// We closed first and both FINs are done; held for 2*MSL.
    TimeWait,
    /// Closed.
    Close,
    /// The peer closed; the local application has not closed its socket yet.
    CloseWait,
    /// The peer closed, then we closed; waiting for the last ACK.
    LastAck,
    /// A listening socket.
    Listen,
    /// Both sides closed at once.
    Closing,
}

impl TcpState {
    /// Maps the kernel's state number; `None` for numbers this crate does not know.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        Some(match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            // 12 is TCP_NEW_SYN_RECV, the request socket of a listener's SYN queue.
            3 | 12 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            _ => return None,
        })
    }

    /// The name `ss` and `netstat` print, e.g. `CLOSE_WAIT`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_map_to_names() {
        assert_eq!(TcpState::from_kernel(10), Some(TcpState::Listen));
        assert_eq!(
            TcpState::from_kernel(8).map(TcpState::name),
            Some("CLOSE_WAIT")
        );
        assert_eq!(TcpState::from_kernel(12), Some(TcpState::SynRecv));
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }
}
