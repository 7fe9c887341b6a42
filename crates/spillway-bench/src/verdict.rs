//! The verdict of a run: which layer the slowest requests' time went to — the kernel's
//! accept queue (connects that needed SYN retransmits), the server's own queue, the
//! application, or what is left (network, the server's front, the response body) — with
//! the evidence, and how sure it is. The server's part is split by its `Server-Timing`
//! header when it sends one (Spillway does); without it the split is inferred, and said to be.

use serde::Serialize;

use crate::http1::Phases;

/// Requests kept for the verdict; past this a uniform random sample is kept (reservoir),
/// so a long run costs bounded memory and the tail still holds a thousand requests.
const KEPT: usize = 100_000;

/// A connect that took this long with a retransmit waited for the kernel to resend a SYN
/// (its first retransmission timeout is 1 s).
const SYN_WAIT_US: u64 = 900_000;

/// One request as the client lived it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// From the start of its wait (its connect, if it opened the connection) to the end
    /// of its response.
    pub total_us: u64,
    /// The connect it waited for (0 on a reused connection).
    pub connect_us: u64,
    /// SYN retransmits that connect needed.
    pub syn_retransmits: u32,
    /// Retransmits of the first request on a new connection: the client thought it was
    /// open, the server's kernel did not (its accept queue was full when the handshake's
    /// last ACK came, so the ACK was dropped), or the network lost it.
    pub data_retransmits: u32,
    pub timing: Option<Phases>,
}

/// A bounded, uniform sample of a run's requests.
pub(crate) struct Samples {
    kept: Vec<Sample>,
    seen: u64,
    rng: u64,
}

impl Samples {
    pub(crate) fn new() -> Samples {
        Samples {
            kept: Vec::new(),
            seen: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub(crate) fn add(&mut self, s: Sample) {
        self.seen += 1;
        if self.kept.len() < KEPT {
            self.kept.push(s);
            return;
        }
        // xorshift: the sample only needs to be unbiased, not unpredictable.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let slot = self.rng % self.seen;
        if let Some(k) = self.kept.get_mut(slot as usize) {
            *k = s;
        }
    }
}

/// Where the p99 went, as `--json` carries it (see `SCHEMA.md`).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `accept_queue`, `server_queue`, `application`, `network_front`, or `none` (no
    /// response to judge).
    pub layer: &'static str,
    /// `high` (measured: SYN retransmits, `Server-Timing`), `medium` or `low` (inferred).
    pub confidence: &'static str,
    /// One sentence naming the layer, with the numbers.
    pub summary: String,
    pub evidence: Vec<String>,
    pub tail: Option<Tail>,
}

/// The slowest 1 % of requests (end to end, connect included), on average.
#[derive(Debug, Clone, Serialize)]
pub struct Tail {
    /// The end-to-end p99: requests at or above it are the tail.
    pub p99_us: u64,
    pub requests: u64,
    pub mean_us: u64,
    /// Waiting for the connect.
    pub connect_us: u64,
    /// Tail requests whose connect needed SYN retransmits.
    pub with_syn_retransmits: u64,
    /// Tail requests sent on a new connection that had to be retransmitted.
    pub with_data_retransmits: u64,
    /// Tail requests with either: the accept queue's signature.
    pub with_retransmits: u64,
    /// Tail requests with a `Server-Timing` header; the three phases below average them.
    pub with_server_timing: u64,
    pub queue_us: Option<u64>,
    pub app_us: Option<u64>,
    /// The rest of those requests' time: network, the server's front, the response body.
    pub rest_us: Option<u64>,
}

fn ms(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else {
        format!("{:.1} ms", us as f64 / 1e3)
    }
}

fn mean(it: impl Iterator<Item = u64>) -> Option<u64> {
    let (sum, n) = it.fold((0u128, 0u64), |(s, n), v| (s + v as u128, n + 1));
    (n > 0).then(|| (sum / n as u128) as u64)
}

fn percent(part: u64, whole: u64) -> u64 {
    (part as u128 * 100 / whole.max(1) as u128) as u64
}

/// Connect times of connects that waited for SYN retransmits, by the whole second they
/// took: "1 s (12), 3 s (3)".
fn syn_clusters(samples: &[Sample]) -> Option<String> {
    let mut by_second = std::collections::BTreeMap::<u64, u64>::new();
    for s in samples
        .iter()
        .filter(|s| s.syn_retransmits > 0 && s.connect_us >= SYN_WAIT_US)
    {
        *by_second
            .entry((s.connect_us + 500_000) / 1_000_000)
            .or_default() += 1;
    }
    (!by_second.is_empty()).then(|| {
        by_second
            .iter()
            .map(|(sec, n)| format!("{sec} s ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

impl Verdict {
    /// No verdict, and why (`layer` is `none`).
    pub(crate) fn not_judged(why: &str) -> Verdict {
        Verdict {
            layer: "none",
            confidence: "low",
            summary: why.to_string(),
            evidence: Vec::new(),
            tail: None,
        }
    }

    /// The verdict on a run's sample.
    pub(crate) fn judge(samples: &Samples, unanswered: u64) -> Verdict {
        let all = &samples.kept;
        if all.is_empty() {
            return Verdict::not_judged("no response arrived: there is no latency to attribute");
        }
        let mut totals: Vec<u64> = all.iter().map(|s| s.total_us).collect();
        totals.sort_unstable();
        let p99 = totals[(totals.len() - 1) * 99 / 100];
        let tail: Vec<&Sample> = all.iter().filter(|s| s.total_us >= p99).collect();
        let timed: Vec<(&Sample, Phases)> = tail
            .iter()
            .filter_map(|s| s.timing.map(|t| (*s, t)))
            .collect();
        let queue = mean(timed.iter().map(|(_, t)| t.queue_us.unwrap_or(0)));
        let app = mean(timed.iter().map(|(_, t)| t.app_us.unwrap_or(0)));
        let rest = mean(timed.iter().map(|(s, t)| {
            s.total_us
                .saturating_sub(s.connect_us + t.queue_us.unwrap_or(0) + t.app_us.unwrap_or(0))
        }));
        let t = Tail {
            p99_us: p99,
            requests: tail.len() as u64,
            mean_us: mean(tail.iter().map(|s| s.total_us)).unwrap_or(0),
            connect_us: mean(tail.iter().map(|s| s.connect_us)).unwrap_or(0),
            with_syn_retransmits: tail.iter().filter(|s| s.syn_retransmits > 0).count() as u64,
            with_data_retransmits: tail.iter().filter(|s| s.data_retransmits > 0).count() as u64,
            with_retransmits: tail
                .iter()
                .filter(|s| s.syn_retransmits + s.data_retransmits > 0)
                .count() as u64,
            with_server_timing: timed.len() as u64,
            queue_us: queue,
            app_us: app,
            rest_us: rest,
        };
        let mut evidence = Vec::new();
        let retransmitted = all.iter().filter(|s| s.syn_retransmits > 0).count();
        if retransmitted > 0 {
            evidence.push(format!(
                "{retransmitted} of {} sampled connects needed SYN retransmits{}",
                all.iter().filter(|s| s.connect_us > 0).count(),
                syn_clusters(all).map_or_else(String::new, |c| format!(
                    "; their connect times cluster at {c}: the kernel resent SYNs that a full listen queue dropped"
                ))
            ));
        }
        let data = all.iter().filter(|s| s.data_retransmits > 0).count();
        if data > 0 {
            evidence.push(format!(
                "{data} requests sent on a new connection had to be retransmitted: the client's connect had completed, but the server's kernel had dropped the handshake's last ACK at a full accept queue (on loopback nothing else loses packets)"
            ));
        }
        if unanswered > 0 {
            evidence.push(format!(
                "{unanswered} requests failed (see errors) and are not in the percentiles"
            ));
        }
        evidence.push(format!(
            "the slowest 1% ({} requests at or above the p99 of {}) took {} on average, {} of it connecting",
            t.requests,
            ms(p99),
            ms(t.mean_us),
            ms(t.connect_us)
        ));
        let measured = t.with_server_timing * 2 >= t.requests;
        let (layer, confidence, summary) = if t.with_retransmits * 2 > t.requests {
            (
                "accept_queue",
                "high",
                format!(
                    "p99 {}: most of the slowest requests ({} of {}) waited on retransmits of a SYN or of a request the server's kernel would not take: the listen backlog overflowed (raise it, accept sooner)",
                    ms(p99),
                    t.with_retransmits,
                    t.requests
                ),
            )
        } else if measured {
            evidence.push(format!(
                "Server-Timing on {} of them: queued {}, application {}, the rest (network, front, body) {}",
                t.with_server_timing,
                ms(queue.unwrap_or(0)),
                ms(app.unwrap_or(0)),
                ms(rest.unwrap_or(0))
            ));
            Self::measured(&t)
        } else {
            evidence.push("no Server-Timing from the server: its queue and its application cannot be told apart by measurement".into());
            Self::inferred(&t, all, &mut evidence)
        };
        Verdict {
            layer,
            confidence,
            summary,
            evidence,
            tail: Some(t),
        }
    }

    /// The server said how long each request queued and ran: the largest share names the
    /// layer.
    fn measured(t: &Tail) -> (&'static str, &'static str, String) {
        let parts = [
            ("accept_queue", t.connect_us),
            ("server_queue", t.queue_us.unwrap_or(0)),
            ("application", t.app_us.unwrap_or(0)),
            ("network_front", t.rest_us.unwrap_or(0)),
        ];
        let (mut layer, top) = parts
            .iter()
            .copied()
            .max_by_key(|(_, us)| *us)
            .unwrap_or(("network_front", 0));
        if layer == "accept_queue" && t.with_retransmits == 0 {
            layer = "network_front";
        }
        let share = percent(top, t.mean_us);
        (layer, "high", sentence(layer, top, share, t.mean_us))
    }

    /// No `Server-Timing`: SYN retransmits are still measured; between the server's queue
    /// and the application, the shape of the latencies is all there is.
    fn inferred(
        t: &Tail,
        all: &[Sample],
        evidence: &mut Vec<String>,
    ) -> (&'static str, &'static str, String) {
        let served = |s: &Sample| s.total_us.saturating_sub(s.connect_us);
        let fastest = all.iter().map(served).min().unwrap_or(0).max(1);
        let tail_served = t.mean_us.saturating_sub(t.connect_us);
        evidence.push(format!(
            "the fastest response took {}; the tail's took {} ({}x)",
            ms(fastest),
            ms(tail_served),
            tail_served / fastest
        ));
        if tail_served >= fastest * 3 {
            (
                "server_queue",
                "low",
                format!(
                    "p99 {}: most likely waiting inside the server ({} per tail request beyond the fastest response): every thread or process was busy; without Server-Timing this cannot be told apart from an application that slows down under load",
                    ms(t.p99_us),
                    ms(tail_served - fastest)
                ),
            )
        } else {
            (
                "application",
                "medium",
                format!(
                    "p99 {}: even the fastest response took {} and the tail is within 3x of it: the time goes to serving requests (the application, or the network), not to waiting for a thread",
                    ms(t.p99_us),
                    ms(fastest)
                ),
            )
        }
    }
}

fn sentence(layer: &str, us: u64, share: u64, of: u64) -> String {
    let what = match layer {
        "accept_queue" => "connecting: the kernel's accept queue overflowed and clients waited for SYN retransmits (raise the server's listen backlog, accept sooner)",
        "server_queue" => "in the server's queue, waiting for a free thread (the application's threads were all busy)",
        "application" => "in the application, which had threads to spare",
        _ => "outside the server's queue and the application: network, the server's front, or the response body",
    };
    format!("p99 went {what}: {} of {} ({share}%)", ms(us), ms(of))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(total_ms: u64, connect_ms: u64, retransmits: u32, st: Option<(u64, u64)>) -> Sample {
        Sample {
            total_us: total_ms * 1000,
            connect_us: connect_ms * 1000,
            syn_retransmits: retransmits,
            data_retransmits: 0,
            timing: st.map(|(q, a)| Phases {
                queue_us: Some(q * 1000),
                app_us: Some(a * 1000),
                total_us: Some((q + a) * 1000),
            }),
        }
    }

    fn judge(v: Vec<Sample>) -> Verdict {
        let mut s = Samples::new();
        v.into_iter().for_each(|x| s.add(x));
        Verdict::judge(&s, 0)
    }

    #[test]
    fn a_full_accept_queue_is_named_by_its_syn_retransmits() {
        let mut v: Vec<Sample> = (0..90).map(|_| sample(3, 1, 0, None)).collect();
        v.extend((0..10).map(|_| sample(1010, 1005, 1, None)));
        v.push(sample(3010, 3005, 2, None));
        let verdict = judge(v);
        assert_eq!(
            (verdict.layer, verdict.confidence),
            ("accept_queue", "high")
        );
        assert!(
            verdict.evidence[0].contains("1 s (10), 3 s (1)"),
            "{verdict:?}"
        );
    }

    #[test]
    fn server_timing_splits_queue_from_application() {
        let queued: Vec<Sample> = (1..=100)
            .map(|i| sample(200 * i, 0, 0, Some((200 * i - 200, 200))))
            .collect();
        assert_eq!(judge(queued).layer, "server_queue");
        let busy: Vec<Sample> = (0..100)
            .map(|_| sample(205, 0, 0, Some((0, 200))))
            .collect();
        let verdict = judge(busy);
        assert_eq!((verdict.layer, verdict.confidence), ("application", "high"));
        assert_eq!(verdict.tail.unwrap().rest_us, Some(5000));
    }

    #[test]
    fn requests_retransmitted_on_a_new_connection_are_the_accept_queue_too() {
        let mut v: Vec<Sample> = (0..95).map(|_| sample(25, 0, 0, None)).collect();
        v.extend((0..5).map(|i| Sample {
            data_retransmits: 2,
            ..sample(4000 + i, 1, 0, None)
        }));
        let verdict = judge(v);
        assert_eq!(
            (verdict.layer, verdict.confidence),
            ("accept_queue", "high")
        );
    }

    #[test]
    fn without_server_timing_the_shape_is_all_there_is() {
        let queued: Vec<Sample> = (1..=100).map(|i| sample(200 * i, 0, 0, None)).collect();
        assert_eq!(
            (judge(queued).layer, judge(Vec::new()).layer),
            ("server_queue", "none")
        );
        let flat: Vec<Sample> = (0..100).map(|i| sample(200 + i % 7, 0, 0, None)).collect();
        assert_eq!(judge(flat).confidence, "medium");
    }

    #[test]
    fn the_sample_stays_bounded() {
        let mut s = Samples::new();
        for i in 0..(KEPT as u64 + 5000) {
            s.add(sample(i, 0, 0, None));
        }
        assert_eq!(s.kept.len(), KEPT);
        assert_eq!(s.seen, KEPT as u64 + 5000);
    }
}
