//! Log lines a client or a failing resource can repeat at will (an untrusted PROXY peer,
//! an unusable `$TMPDIR`) are written at most once per period; the next one written says
//! how many were left out in between, so nothing is hidden and the log cannot be flooded.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Answer;

/// One kind of log line, written at most once per `period`.
pub(crate) struct Throttle {
    period: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle letting one line through per `period`.
    pub const fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many were left out
    /// since the last line; `None` when it is to be left out (and counted).
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.last.is_some_and(|t| now.duration_since(t) < self.period) {
            s.suppressed += 1;
            return None;
        }
        s.last = Some(now);
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// Logs a request body refused to a client (broken, too slow, over a limit): one WARN line
/// a second at most, with how many were left out, since a client can cause these at will.
pub(crate) fn client_body_refused(client: &str, answer: Answer, why: &str) {
    static BODY_REFUSED: Throttle = Throttle::new(Duration::from_secs(1));
    if let Some(left_out) = BODY_REFUSED.allow() {
        tracing::warn!(
            client,
            status = answer.status(),
            error = %answer,
            why,
            left_out,
            "request body refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_then_the_count_of_those_left_out() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.allow(), Some(2));
        assert_eq!(t.allow(), None);
    }
}
