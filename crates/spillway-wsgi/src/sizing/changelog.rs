//! Which sizing decisions make a log line, and when: consecutive changes by one rule are
//! merged (growth can take several steps a second), a change by another rule is a line of
//! its own.

use super::Decision;

/// Changes waiting to be logged: consecutive changes by the same rule are logged as one
/// (growth can take several steps a second), a change by another rule first logs what
/// was pending, so a line never names a rule that did not make its change.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    pending: Option<Decision>,
}

impl ChangeLog {
    /// Adds a decision; returns the lines due now (at most two). `quiet` says whether a
    /// line was logged too recently to log a same-rule change yet.
    pub fn push(&mut self, d: Decision, quiet: bool) -> Vec<Decision> {
        let mut out = Vec::new();
        match self.pending.take() {
            Some(mut p) if p.rule == d.rule => {
                p.to = d.to;
                p.why = d.why;
                self.pending = Some(p);
            }
            Some(p) => {
                out.push(p);
                self.pending = Some(d);
            }
            None => self.pending = Some(d),
        }
        if !quiet || !out.is_empty() {
            out.extend(self.pending.take());
        }
        out
    }

    /// The pending line, once the rate limit allows it.
    pub fn flush(&mut self) -> Option<Decision> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::Rule;

    #[test]
    fn a_growth_is_never_logged_with_the_reason_of_a_shrink() {
        let d = |from, to, rule, why: &str| Decision {
            from,
            to,
            rule,
            why: why.into(),
        };
        let mut log = ChangeLog::default();
        assert_eq!(log.push(d(1, 2, Rule::ProbeUp, "a"), false).len(), 1);
        // Within the rate limit, growth steps are held and merged…
        assert!(log.push(d(2, 4, Rule::ProbeUp, "b"), true).is_empty());
        assert!(log.push(d(4, 8, Rule::ProbeUp, "c"), true).is_empty());
        // …and a shrink by another rule logs them first, as what they were.
        let lines = log.push(d(8, 7, Rule::GilContention, "gil"), true);
        assert_eq!(
            lines,
            vec![
                d(2, 8, Rule::ProbeUp, "c"),
                d(8, 7, Rule::GilContention, "gil")
            ]
        );
        assert_eq!(log.flush(), None);
    }
}
