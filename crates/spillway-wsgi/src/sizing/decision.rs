//! The decisions of the sizing controller: the rule that made one, and its numbers.

/// The rule behind a decision, named in the log and in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    WarmStart,
    ProbeUp,
    Gain,
    NoGain,
    ProbeDown,
    FewerSuffice,
    FewerLose,
    Stalled,
    Unused,
    GilContention,
    Idle,
}

impl Rule {
    /// The rule's name, as the log and `/status` show it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::WarmStart => "warm-start",
            Rule::ProbeUp => "probe-up",
            Rule::Gain => "gain",
            Rule::NoGain => "no-gain",
            Rule::ProbeDown => "probe-down",
            Rule::FewerSuffice => "fewer-suffice",
            Rule::FewerLose => "fewer-lose",
            Rule::Stalled => "stalled",
            Rule::Unused => "unused",
            Rule::GilContention => "gil-contention",
            Rule::Idle => "idle",
        }
    }
}

/// A decision: the thread target from one count to another (the same for a verdict that
/// keeps it), the rule, and why in numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub from: u16,
    pub to: u16,
    pub rule: Rule,
    pub why: String,
}
