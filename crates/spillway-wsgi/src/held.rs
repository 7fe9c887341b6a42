//! Finished responses held back while their thread goes straight on to the next queued
//! request, so several go to the front in one write and wake it once.
//!
//! Why: with requests queued, a thread finishing one response and writing it at once
//! costs a syscall and a wake-up of the front per response. Held back for at most
//! [`HOLD_AGE`] and [`HOLD_MAX`] bytes, and only when the pool says requests are short
//! (`Pool::may_hold_response`), responses of a busy worker travel in batches. Measured with
//! bench/hop on 2 cores: hello 15.5 -> 13.7 µs of CPU per request, Flask 93.3 -> 88.4.

use std::time::{Duration, Instant};

use bytes::BytesMut;

/// Most bytes of finished responses held back.
pub(crate) const HOLD_MAX: usize = 32 * 1024;
/// Longest a finished response is held back by its own thread; the reader sends on what
/// is older (it looks at least every millisecond while short requests run).
pub(crate) const HOLD_AGE: Duration = Duration::from_micros(200);

/// The responses held back, oldest first.
#[derive(Default)]
pub(crate) struct Held {
    buf: BytesMut,
    since: Option<Instant>,
}

impl Held {
    /// Offers the last frames of a response: held back when `more` (the thread takes a
    /// queued request next) and what is held is young and small; otherwise returned,
    /// after everything held, to be written now.
    pub fn offer(&mut self, frames: &[u8], more: bool, now: Instant) -> Option<BytesMut> {
        let young = self.since.is_none_or(|t| now.duration_since(t) < HOLD_AGE);
        if more && young && self.buf.len() + frames.len() <= HOLD_MAX {
            self.since.get_or_insert(now);
            self.buf.extend_from_slice(frames);
            return None;
        }
        self.buf.extend_from_slice(frames);
        self.take()
    }

    /// Everything held, to be written now.
    pub fn take(&mut self) -> Option<BytesMut> {
        self.since = None;
        (!self.buf.is_empty()).then(|| self.buf.split())
    }

    /// Everything held if the oldest has waited `age` or longer.
    pub fn take_stale(&mut self, age: Duration, now: Instant) -> Option<BytesMut> {
        if self.since.is_some_and(|t| now.duration_since(t) >= age) {
            self.take()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_wait_only_while_more_follow_and_go_out_in_order() {
        let t = Instant::now();
        let mut h = Held::default();
        assert!(h.offer(b"one;", true, t).is_none());
        assert!(h
            .offer(b"two;", true, t + Duration::from_micros(50))
            .is_none());
        let out = h.offer(b"three;", false, t + Duration::from_micros(60));
        assert_eq!(out.as_deref(), Some(&b"one;two;three;"[..]));
        assert!(h.take().is_none(), "nothing is left behind");
        // Alone, with nothing queued: straight out.
        assert_eq!(h.offer(b"x", false, t).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn holding_is_bounded_by_age_and_size() {
        let t = Instant::now();
        let mut h = Held::default();
        assert!(h.offer(b"a", true, t).is_none());
        let late = t + HOLD_AGE;
        assert_eq!(
            h.offer(b"b", true, late).as_deref(),
            Some(&b"ab"[..]),
            "too old: out"
        );
        let big = vec![b'z'; HOLD_MAX];
        assert!(h.offer(b"c", true, t).is_none());
        let out = h.offer(&big, true, t).expect("over the size bound: out");
        assert_eq!(out.len(), 1 + HOLD_MAX);
    }

    #[test]
    fn the_reader_takes_only_what_waited_long_enough() {
        let t = Instant::now();
        let mut h = Held::default();
        assert!(h.take_stale(HOLD_AGE, t).is_none(), "nothing held");
        assert!(h.offer(b"r", true, t).is_none());
        assert!(h
            .take_stale(HOLD_AGE, t + Duration::from_micros(10))
            .is_none());
        assert_eq!(
            h.take_stale(HOLD_AGE, t + HOLD_AGE).as_deref(),
            Some(&b"r"[..])
        );
        assert!(h.take_stale(HOLD_AGE, t + HOLD_AGE * 10).is_none());
    }
}
