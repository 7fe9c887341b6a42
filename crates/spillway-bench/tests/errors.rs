//! Each error and status class against a server that produces exactly it.

mod support;

use std::process::ExitCode;

use support::{bench, refusing, serve, Mode};

#[test]
fn refused() {
    let url = refusing();
    let run = bench(&url, &["-c", "2", "--requests", "20"]);
    assert_eq!(run.errors("refused"), 20);
    assert_eq!(run.num("/responses/total"), 0);
    assert_eq!(run.num("/connect/count"), 0);
    // Not one response: the exit status says so.
    assert_eq!(run.exit, ExitCode::FAILURE);
}

#[test]
fn reset() {
    let server = serve(Mode::Reset);
    let run = bench(&server.url, &["-c", "2", "--requests", "20"]);
    assert_eq!(run.errors("reset"), 20);
    assert_eq!(run.num("/errors/total"), 20);
    assert_eq!(run.num("/connections/opened"), 20);
}

#[test]
fn closed_before_response() {
    let server = serve(Mode::CloseWithoutResponse);
    let run = bench(&server.url, &["-c", "2", "--requests", "10"]);
    assert_eq!(run.errors("closed"), 10);
    assert!(run
        .str("/errors/examples/closed")
        .contains("before any response byte"));
}

#[test]
fn read_timeout() {
    let server = serve(Mode::Stall);
    let run = bench(
        &server.url,
        &["-c", "2", "--requests", "2", "--timeout", "300ms"],
    );
    assert_eq!(run.errors("read_timeout"), 2);
    assert_eq!(run.num("/responses/total"), 0);
}

#[test]
fn malformed() {
    let server = serve(Mode::Malformed);
    let run = bench(&server.url, &["-c", "2", "--requests", "10"]);
    assert_eq!(run.errors("malformed"), 10);
    assert!(run
        .str("/errors/examples/malformed")
        .contains("Content-Length"));
}

#[test]
fn service_unavailable_is_counted_apart() {
    let server = serve(Mode::Status(503));
    let run = bench(&server.url, &["-c", "2", "--requests", "25"]);
    assert_eq!(run.num("/responses/total"), 25);
    assert_eq!(run.num("/responses/status_classes/503"), 25);
    assert_eq!(run.num("/responses/status_classes/5xx"), 25);
    assert_eq!(run.num("/responses/status_codes/503"), 25);
    assert_eq!(run.num("/errors/total"), 0);
}

#[test]
fn status_classes() {
    for (code, class) in [(302, "3xx"), (404, "4xx"), (500, "5xx")] {
        let server = serve(Mode::Status(code));
        let run = bench(&server.url, &["-c", "1", "--requests", "3"]);
        assert_eq!(run.num(&format!("/responses/status_classes/{class}")), 3);
        assert_eq!(run.num("/responses/status_classes/503"), 0);
    }
}
