//! How long a client that streams its request body may keep a Python thread waiting:
//! no bytes for `--body-timeout`, or fewer on average than `--body-min-rate` bytes a
//! second, and it gets 408 (as nginx's `client_body_timeout` and Kestrel's minimum data
//! rate bound slow clients). Only the time the thread waits for the client counts: a
//! worker that reads slowly, or a body held by the front, costs the client nothing.

use std::time::{Duration, Instant};

/// Time a streamed body may trail the minimum rate before it counts (a slow start, TCP's
/// ramp-up).
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// Why a streamed body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// No bytes for `--body-timeout`.
    Silent,
    /// Fewer bytes than `--body-min-rate` asks for.
    TooSlow,
}

/// The client's side of a streamed request body, while the application waits for it.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    timeout: Duration,
    /// Bytes a second, on average over the waits; 0: no minimum.
    min_rate: u64,
    /// Waiting time before the current wait.
    waited: Duration,
    /// Bytes that came during waits.
    received: u64,
    /// When the current wait started, or the last bytes came in it.
    since: Option<Instant>,
    wait_started: Option<Instant>,
}

impl Upload {
    /// A body not waited for yet.
    pub fn new(timeout: Duration, min_rate: u64) -> Upload {
        Upload {
            timeout,
            min_rate,
            waited: Duration::ZERO,
            received: 0,
            since: None,
            wait_started: None,
        }
    }

    /// Whether the application now waits for the client (`waiting`); when the client must
    /// have sent more by, while it does.
    pub fn wait(&mut self, waiting: bool, now: Instant) -> Option<Instant> {
        if !waiting {
            if let Some(start) = self.wait_started.take() {
                self.waited += now.saturating_duration_since(start);
            }
            self.since = None;
            return None;
        }
        let start = *self.wait_started.get_or_insert(now);
        let since = *self.since.get_or_insert(now);
        let silent = since + self.timeout;
        if self.min_rate == 0 {
            return Some(silent);
        }
        // The wait may last until the bytes received cover the minimum rate over all the
        // waiting time, less the grace.
        let allowed = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64) + GRACE;
        let slow = start + allowed.saturating_sub(self.waited);
        Some(silent.min(slow))
    }

    /// Whether a wait is under way.
    pub fn is_waiting(&self) -> bool {
        self.wait_started.is_some()
    }

    /// `n` body bytes came from the client.
    pub fn received(&mut self, n: usize, now: Instant) {
        self.received += n as u64;
        if n > 0 && self.since.is_some() {
            self.since = Some(now);
        }
    }

    /// Why the wait that ended at `now` (its due time) ended the upload.
    pub fn stall(&self, now: Instant) -> Stall {
        match self.since {
            Some(since) if since + self.timeout <= now => Stall::Silent,
            _ => Stall::TooSlow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_client_is_due_at_the_body_timeout() {
        let t0 = Instant::now();
        let mut u = Upload::new(60 * SEC, 0);
        assert_eq!(u.wait(true, t0), Some(t0 + 60 * SEC));
        u.received(10, t0 + 30 * SEC);
        assert_eq!(u.wait(true, t0 + 30 * SEC), Some(t0 + 90 * SEC));
        assert_eq!(u.stall(t0 + 90 * SEC), Stall::Silent);
    }

    #[test]
    fn a_trickle_is_due_when_it_falls_below_the_minimum_rate() {
        let t0 = Instant::now();
        let mut u = Upload::new(60 * SEC, 1000);
        // Nothing yet: only the grace.
        assert_eq!(u.wait(true, t0), Some(t0 + GRACE));
        // 1 byte a second keeps it from being silent, not from being slow.
        for s in 1..5 {
            u.received(1, t0 + s * SEC);
            let due = u.wait(true, t0 + s * SEC).expect("waiting");
            assert!(due <= t0 + GRACE + SEC / 100, "{:?}", due - t0);
        }
        assert_eq!(u.stall(t0 + GRACE), Stall::TooSlow);
    }

    #[test]
    fn time_the_application_does_not_wait_is_not_counted() {
        let t0 = Instant::now();
        let mut u = Upload::new(60 * SEC, 1000);
        u.wait(true, t0);
        u.received(10_000, t0 + SEC);
        // The application is busy for a minute: not the client's time.
        assert_eq!(u.wait(false, t0 + SEC), None);
        let due = u.wait(true, t0 + 61 * SEC).expect("waiting");
        // 10 s of credit for 10 000 bytes, plus grace, less the 1 s already waited.
        assert_eq!(due, t0 + 61 * SEC + 14 * SEC);
    }

    #[test]
    fn a_fast_upload_is_never_due_before_its_silence_limit() {
        let t0 = Instant::now();
        let mut u = Upload::new(10 * SEC, 1000);
        u.wait(true, t0);
        u.received(1_000_000, t0 + SEC);
        assert_eq!(u.wait(true, t0 + SEC), Some(t0 + 11 * SEC));
    }
}
