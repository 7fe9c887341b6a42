//! Each scenario against a small in-test server: closed loop (keep-alive, no keep-alive,
//! requests per connection), open loop, storm and idle probe, plus the output files.

mod support;

use std::process::ExitCode;
use std::time::Duration;

use support::{bench, serve, temp_path, Mode};

#[test]
fn closed_loop_reuses_its_connections() {
    let server = serve(Mode::Ok);
    let run = bench(&server.url, &["-c", "4", "--requests", "200"]);
    assert_eq!(run.exit, ExitCode::SUCCESS);
    assert_eq!(run.num("/responses/total"), 200);
    assert_eq!(run.num("/responses/status_classes/2xx"), 200);
    assert_eq!(run.num("/errors/total"), 0);
    assert_eq!(run.num("/connections/opened"), 4);
    assert_eq!(run.num("/connect/count"), 4);
    assert_eq!(run.num("/response/count"), 200);
    assert_eq!(
        run.num("/connections/announced_keep_alive_timeouts_s/1"),
        200
    );
    assert_eq!(run.str("/scenario/kind"), "closed");
}

#[test]
fn no_keep_alive_opens_a_connection_per_request() {
    let server = serve(Mode::Ok);
    let run = bench(
        &server.url,
        &["-c", "2", "--requests", "30", "--no-keep-alive"],
    );
    assert_eq!(run.num("/responses/total"), 30);
    assert_eq!(run.num("/connections/opened"), 30);
    assert_eq!(run.num("/errors/total"), 0);
}

#[test]
fn requests_per_connection_rotates_connections() {
    let server = serve(Mode::Ok);
    let run = bench(
        &server.url,
        &[
            "-c",
            "1",
            "--requests",
            "40",
            "--requests-per-connection",
            "5",
        ],
    );
    assert_eq!(run.num("/responses/total"), 40);
    assert_eq!(run.num("/connections/opened"), 8);
}

#[test]
fn chunked_bodies_keep_the_connection() {
    let server = serve(Mode::Chunked);
    let run = bench(&server.url, &["-c", "2", "--requests", "20"]);
    assert_eq!(run.num("/responses/total"), 20);
    assert_eq!(run.num("/connections/opened"), 2);
}

#[test]
fn close_delimited_bodies_cost_a_connection_each() {
    let server = serve(Mode::CloseDelimited);
    let run = bench(&server.url, &["-c", "2", "--requests", "10"]);
    assert_eq!(run.num("/responses/total"), 10);
    assert_eq!(run.num("/connections/opened"), 10);
    assert_eq!(run.num("/connections/closed_by_server"), 10);
}

#[test]
fn duration_bounds_a_run() {
    let server = serve(Mode::Ok);
    let run = bench(&server.url, &["-c", "2", "--duration", "300ms"]);
    assert!(run.num("/responses/total") > 0);
    assert_eq!(run.num("/errors/total"), 0);
    assert!(run.report["elapsed_s"].as_f64().unwrap_or(99.0) < 5.0);
}

#[test]
fn open_loop_sends_on_schedule() {
    let server = serve(Mode::Ok);
    let run = bench(&server.url, &["--rate", "200", "--duration", "1s"]);
    assert_eq!(run.str("/scenario/kind"), "open");
    assert_eq!(run.num("/generator/scheduled"), 200);
    assert_eq!(run.num("/responses/total"), 200);
    assert_eq!(run.num("/generator/queued_for_connection"), 0);
    assert_eq!(run.num("/errors/total"), 0);
}

#[test]
fn open_loop_reports_when_the_generator_is_the_queue() {
    // Two connections at 100 ms per response carry 20 requests/s; 50/s are asked for.
    let server = serve(Mode::Slow(Duration::from_millis(100)));
    let run = bench(
        &server.url,
        &["--rate", "50", "--duration", "1s", "-c", "2"],
    );
    assert_eq!(run.num("/generator/scheduled"), 50);
    assert!(run.num("/generator/queued_for_connection") > 0);
    assert!(run.report["generator"]["max_lag_us"].is_u64());
    assert!(run.num("/connections/max_open") <= 2);
    // Every scheduled request is accounted for.
    let done = run.num("/responses/total")
        + run.num("/errors/total")
        + run.num("/generator/expired_in_queue")
        + run.num("/generator/unsent_at_end");
    assert_eq!(done, 50);
}

#[test]
fn storm_opens_all_connections_at_once() {
    let server = serve(Mode::Ok);
    let run = bench(&server.url, &["--storm", "40"]);
    assert_eq!(run.str("/scenario/kind"), "storm");
    assert_eq!(run.num("/connect/count"), 40);
    assert_eq!(run.num("/responses/total"), 40);
    assert_eq!(run.num("/connections/opened"), 40);
}

#[test]
fn idle_probe_sees_survival_and_idle_close() {
    let server = serve(Mode::CloseIdleAfter(Duration::from_millis(400)));
    let run = bench(&server.url, &["--idle-gaps", "100ms,1500ms"]);
    assert_eq!(run.str("/idle_probe/0/outcome"), "survived");
    assert_eq!(run.str("/idle_probe/1/outcome"), "closed_idle");
    let after = run.report["idle_probe"][1]["ended_after_s"]
        .as_f64()
        .expect("close time");
    // The server's idle timeout is what the probe measured (kernel timers, so generous).
    assert!(after > 0.3 && after < 1.5, "{after}");
}

#[test]
fn idle_probe_sees_idle_reset() {
    let server = serve(Mode::ResetIdleAfter(Duration::from_millis(300)));
    let run = bench(&server.url, &["--idle-gaps", "1s"]);
    assert_eq!(run.str("/idle_probe/0/outcome"), "reset_idle");
}

#[test]
fn idle_probe_sees_reset_mid_request() {
    let server = serve(Mode::ResetOnSecond);
    let run = bench(&server.url, &["--idle-gaps", "200ms"]);
    assert_eq!(run.str("/idle_probe/0/outcome"), "reset_mid_request");
    assert_eq!(run.errors("reset"), 1);
}

#[test]
fn idle_probe_sees_close_mid_request() {
    let server = serve(Mode::CloseOnSecond);
    let run = bench(&server.url, &["--idle-gaps", "200ms"]);
    assert_eq!(run.str("/idle_probe/0/outcome"), "closed_mid_request");
    assert_eq!(run.errors("closed"), 1);
}

#[test]
fn writes_json_and_svg() {
    let server = serve(Mode::Ok);
    let svg = temp_path("plot.svg");
    let run = bench(
        &server.url,
        &[
            "-c",
            "2",
            "--requests",
            "50",
            "--plot",
            &svg.to_string_lossy(),
        ],
    );
    assert_eq!(run.num("/schema_version"), 1);
    assert!(run.report["timeline"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    assert!(run.report["response"]["distribution"]
        .as_array()
        .is_some_and(|d| d.len() >= 2));
    let text = std::fs::read_to_string(&svg).expect("svg written");
    let _ = std::fs::remove_file(&svg);
    assert!(text.starts_with("<svg"));
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains("<polyline"));
    assert!(text.contains("Latency by percentile"));
}
