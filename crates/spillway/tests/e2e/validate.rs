//! Apps wrapped in `wsgiref.validate.validator`: the server's side of PEP 3333 is
//! checked by the standard library's own validator.

use crate::support::Spillway;
use std::time::Duration;

fn no_validator_complaints(srv: &crate::support::Server) {
    // Give trailing log lines (e.g. "Exception ignored in ...") a moment to appear.
    let complained = srv.wait_output(Duration::from_secs(1), |e, _| {
        e.contains("AssertionError") || e.contains("WSGIWarning")
    });
    assert!(
        !complained,
        "wsgiref.validate complained:\n{}",
        srv.report()
    );
}

#[test]
fn validated_app_sees_a_compliant_server() {
    let srv = Spillway::new("apps/validated.py:app")
        .arg("--threads")
        .arg("2")
        .start();
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.text(), "validated ok\n");

    let res = srv.post(
        "/upload",
        "text/plain",
        b"line one\nthe rest of the body\nmore\n",
    );
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.text(), "first=9 rest=26 lines=0");

    let res = srv.get("/stream");
    assert_eq!(res.text(), "part-0\npart-1\npart-2\n", "{res}");

    let res = srv.get("/write");
    assert_eq!(res.text(), "written;returned", "{res}");

    let mut conn = srv.connect();
    let res = conn.request("HEAD", "/", &[], b"");
    assert_eq!(res.status, 200, "{res}");
    let res = conn.request("GET", "/nocontent", &[], b"");
    assert_eq!(res.status, 204, "{res}");
    let res = conn.request("GET", "/?a=b", &[("X-Thing", "1")], b"");
    assert_eq!(res.status, 200, "{res}");

    let res = srv.raw(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(res.status, 200, "{res}");

    no_validator_complaints(&srv);
}

#[test]
fn validated_app_error_is_a_500_and_serving_goes_on() {
    let srv = Spillway::new("apps/validated.py:app").start();
    let res = srv.get("/error");
    assert_eq!(res.status, 500, "{res}");
    assert!(
        srv.stderr_contains("validated-app-error"),
        "{}",
        srv.report()
    );
    assert_eq!(srv.get("/").status, 200);
}

#[test]
fn examples_pass_wsgiref_validate() {
    for (app, path, want) in [
        ("apps/validated_examples.py:hello", "/", "Hello, world!\n"),
        (
            "apps/validated_examples.py:slow",
            "/?ms=1",
            "\"slept_ms\": 1",
        ),
        (
            "apps/validated_examples.py:stream",
            "/?n=3&ms=1",
            "chunk 3 of 3\n",
        ),
    ] {
        let srv = Spillway::new(app).start();
        let res = srv.get(path);
        assert_eq!(res.status, 200, "{app}: {res}");
        assert!(res.text().contains(want), "{app}: {res}");
        let res = srv.request("HEAD", path, &[], b"");
        assert_eq!(res.status, 200, "{app} HEAD: {res}");
        no_validator_complaints(&srv);
    }
}

#[test]
fn hello_example_served_as_documented() {
    let srv = Spillway::new("examples/hello.py:app").start();
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.text(), "Hello, world!\n");
    assert_eq!(res.header("content-length"), Some("14"));
}

#[test]
fn stream_example_is_chunked() {
    let srv = Spillway::new("examples/stream.py:app").start();
    let res = srv.get("/?n=4&ms=1");
    assert_eq!(res.status, 200, "{res}");
    assert!(res.head.is_chunked(), "{res}");
    assert_eq!(res.text().lines().count(), 4);
}

#[test]
fn slow_example_reads_slow_ms_from_env() {
    let srv = Spillway::new("examples/slow.py:app")
        .arg("--env")
        .arg("SLOW_MS=3")
        .start();
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.json().get("slept_ms").u64(), 3);
}
