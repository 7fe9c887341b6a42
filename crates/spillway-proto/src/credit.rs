//! Credit windows: the flow control of request and response bodies, shared by the front and
//! the worker so that both ends do the same arithmetic.
//!
//! A sender holds a [`SendWindow`]: bytes it may still send. A receiver holds a
//! [`RecvWindow`]: bytes it has granted and not yet received, and the rule for when to
//! grant more. Each body direction starts with an implicit grant both sides know
//! ([`crate::INITIAL_REQUEST_WINDOW`] or zero for `Expect: 100-continue`, and
//! [`crate::INITIAL_RESPONSE_WINDOW`]), so small bodies need no credit frame at all.
//! Grants are batched: a receiver replenishes only once half its window is used, so a
//! stream of small chunks does not cost a credit frame (and a wake-up) per chunk.

/// Largest credit a window may hold; a grant beyond it is a protocol error (as in HTTP/2).
pub const MAX_WINDOW: u64 = (1 << 31) - 1;

/// A peer broke the credit rules: the connection to it cannot be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// A grant would take the window above [`MAX_WINDOW`].
    #[error("credit grant of {grant} on a window of {window} exceeds {MAX_WINDOW}")]
    Overflow {
        /// Credit held before the grant.
        window: u64,
        /// The grant.
        grant: u64,
    },
    /// More bytes arrived than were granted.
    #[error("{received} body bytes arrived with only {granted} granted")]
    Overrun {
        /// Credit outstanding when the bytes arrived.
        granted: u64,
        /// Bytes that arrived.
        received: u64,
    },
}

/// What a sender may still send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    available: u64,
}

impl SendWindow {
    /// A window holding the implicit initial grant.
    pub fn new(initial: u32) -> SendWindow {
        SendWindow {
            available: initial as u64,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Takes credit for up to `want` bytes and returns how many may be sent (0: wait for
    /// a grant).
    pub fn take(&mut self, want: usize) -> usize {
        let n = (want as u64).min(self.available);
        self.available -= n;
        n as usize
    }

    /// Adds a grant from the receiver.
    pub fn grant(&mut self, bytes: u32) -> Result<(), CreditError> {
        let next = self.available + bytes as u64;
        if next > MAX_WINDOW {
            return Err(CreditError::Overflow {
                window: self.available,
                grant: bytes as u64,
            });
        }
        self.available = next;
        Ok(())
    }
}

/// What a receiver has granted and not yet received, and when it should grant more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWindow {
    /// The window the receiver keeps open.
    target: u64,
    /// Granted (explicitly or implicitly) and not yet received.
    outstanding: u64,
}

impl RecvWindow {
    /// A receiver keeping `target` bytes open, of which `initial` are granted implicitly.
    pub fn new(target: u32, initial: u32) -> RecvWindow {
        RecvWindow {
            target: target as u64,
            outstanding: (initial as u64).min(target as u64),
        }
    }

    /// Bytes granted and not yet received.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Records `n` bytes received; more than was granted is the sender's error.
    pub fn received(&mut self, n: usize) -> Result<(), CreditError> {
        let n = n as u64;
        if n > self.outstanding {
            return Err(CreditError::Overrun {
                granted: self.outstanding,
                received: n,
            });
        }
        self.outstanding -= n;
        Ok(())
    }

    /// The grant to send now, if any: once half the window is used up, everything used
    /// is granted again in one frame.
    pub fn replenish(&mut self) -> Option<u32> {
        if self.outstanding * 2 > self.target {
            return None;
        }
        let grant = self.target - self.outstanding;
        if grant == 0 {
            return None;
        }
        self.outstanding = self.target;
        Some(grant as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_window_hands_out_at_most_what_was_granted() {
        let mut w = SendWindow::new(10);
        assert_eq!(w.take(4), 4);
        assert_eq!(w.take(100), 6);
        assert_eq!(w.take(1), 0, "exhausted: the sender must wait");
        w.grant(3).unwrap();
        assert_eq!(w.available(), 3);
        assert_eq!(w.take(usize::MAX), 3);
    }

    #[test]
    fn expect_continue_starts_with_nothing_to_send() {
        let mut w = SendWindow::new(0);
        assert_eq!(w.take(1), 0);
        w.grant(1).unwrap();
        assert_eq!(w.take(5), 1);
    }

    #[test]
    fn grants_past_the_maximum_are_refused_and_change_nothing() {
        let mut w = SendWindow::new(u32::MAX);
        assert!(matches!(
            w.grant(u32::MAX),
            Err(CreditError::Overflow { .. })
        ));
        let mut w = SendWindow::new(1 << 30);
        w.grant(1 << 30).unwrap_err();
        assert_eq!(w.available(), 1 << 30);
        w.grant((1 << 30) - 1).unwrap();
        assert_eq!(w.available(), MAX_WINDOW);
    }

    #[test]
    fn receiver_replenishes_once_half_the_window_is_used() {
        let mut r = RecvWindow::new(100, 100);
        r.received(40).unwrap();
        assert_eq!(r.replenish(), None, "60 of 100 still open");
        r.received(10).unwrap();
        assert_eq!(r.replenish(), Some(50), "half used: grant it back at once");
        assert_eq!(r.outstanding(), 100);
        assert_eq!(r.replenish(), None, "nothing used since");
    }

    #[test]
    fn receiver_with_a_small_initial_grant_tops_up_to_its_target() {
        // wsgi.input: 64 KiB travel with the head, the worker keeps 256 KiB open once the
        // application reads.
        let mut r = RecvWindow::new(256, 64);
        assert_eq!(r.replenish(), Some(192));
        r.received(256).unwrap();
        assert_eq!(r.replenish(), Some(256));
        // Expect: 100-continue: nothing is granted until the application reads.
        let mut r = RecvWindow::new(256, 0);
        assert_eq!(r.outstanding(), 0);
        assert_eq!(r.replenish(), Some(256));
    }

    #[test]
    fn bytes_beyond_the_grant_are_an_overrun() {
        let mut r = RecvWindow::new(100, 10);
        assert_eq!(
            r.received(11),
            Err(CreditError::Overrun {
                granted: 10,
                received: 11
            })
        );
        r.received(10).unwrap();
        assert!(r.received(1).is_err());
    }

    #[test]
    fn sender_and_receiver_agree_over_a_long_transfer() {
        // A 10 MB body in 7 KiB pieces: the sender never sends without credit, the
        // receiver never sees an overrun, and every byte arrives.
        let mut tx = SendWindow::new(64 * 1024);
        let mut rx = RecvWindow::new(256 * 1024, 64 * 1024);
        let (mut left, mut delivered) = (10_000_000usize, 0usize);
        let mut grants = 0;
        while left > 0 {
            let n = tx.take(left.min(7 * 1024));
            if n == 0 {
                let g = rx.replenish().expect("a blocked sender must get a grant");
                tx.grant(g).unwrap();
                grants += 1;
                continue;
            }
            rx.received(n).unwrap();
            delivered += n;
            left -= n;
            if let Some(g) = rx.replenish() {
                tx.grant(g).unwrap();
                grants += 1;
            }
        }
        assert_eq!(delivered, 10_000_000);
        assert!(grants < 100, "grants are batched, got {grants}");
    }
}
