//! The accept-queue incident: a listener with backlog 1 that accepts late or never. Linux
//! drops SYNs while the accept queue is full and the client retransmits them, the first time
//! after 1 s (later ones linearly or doubling, by kernel version), so connects take more than
//! a second and `TCP_INFO` counts the retransmits. The 1 s is the kernel's initial
//! retransmission timeout (TCP_TIMEOUT_INIT), not a timing guess.

mod support;

use std::time::Duration;

use support::{bench, never_accepting, serve_after, Mode};

const ONE_SECOND_US: u64 = 1_000_000;

#[test]
fn listener_that_never_accepts() {
    // Backlog 1 holds two finished handshakes; the other SYNs are dropped until we give up.
    let (_listener, url) = never_accepting(1);
    let run = bench(&url, &["--storm", "6", "--timeout", "3500ms"]);
    assert!(run.errors("connect_timeout") >= 1, "{:#}", run.report);
    let syn = &run.report["connect"]["syn_retransmits"];
    assert_eq!(syn["measured"], true);
    assert!(
        syn["failed_connects_with_retransmits"].as_u64() >= Some(1),
        "{syn:#}"
    );
    assert!(syn["failed_connect_max_us"].as_u64() > Some(ONE_SECOND_US));
    // The connections that did get into the queue are never served.
    assert_eq!(
        run.errors("connect_timeout") + run.errors("read_timeout"),
        6,
        "{:#}",
        run.report
    );
    assert_eq!(run.num("/responses/total"), 0);
}

#[test]
fn listener_that_accepts_late() {
    // Nothing is accepted for 1.5 s: SYNs beyond the two queued handshakes are dropped at 0 s
    // and 1 s and get through on a later retransmit.
    let server = serve_after(Mode::Ok, Duration::from_millis(1500), 1);
    let run = bench(&server.url, &["--storm", "6", "--timeout", "10s"]);
    assert_eq!(run.num("/responses/total"), 6, "{:#}", run.report);
    assert!(run.num("/connect/latency_us/max") > ONE_SECOND_US);
    let syn = &run.report["connect"]["syn_retransmits"];
    assert!(
        syn["connects_with_retransmits"].as_u64() >= Some(1),
        "{syn:#}"
    );
    assert!(syn["max"].as_u64() >= Some(1));
}
