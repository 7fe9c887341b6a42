//! `/metrics` through the real binary: `promtool check metrics` accepts the exposition, a
//! server pushed into 503s shows them (with the queue wait, busy threads and the
//! listener's accept queue), and a real Prometheus (Debian's package, installed by
//! `.ci/run`) scrapes it and answers a query about it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::lifecycle::{get_ok, local, try_get, WAIT};
use crate::support::{eventually, free_port, Conn, Server, Spillway};

pub(crate) const NOT_INSTALLED: &str =
    "needs Debian's prometheus package (prometheus and promtool); \
     .ci/run installs it (apt-get install prometheus)";

/// The exposition, as a scrape gets it.
fn scrape(srv: &Server) -> String {
    let r = get_ok(local(srv.admin()), "/metrics");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{r}"
    );
    r.text()
}

/// The value of the sample `name{labels}` (labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Runs `promtool check metrics` on `text`: its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}: {NOT_INSTALLED}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn metrics_pass_promtool_and_show_an_overloaded_server() {
    // One worker, one thread, one queue place: the third concurrent request is refused.
    let srv = Spillway::new("apps/overload.py:app")
        .args([
            "--threads",
            "1",
            "--max-queue",
            "1",
            "--queue-timeout",
            "30",
        ])
        .with_admin()
        .start();
    crate::support::lifecycle::wait_admin(&srv, srv.admin());
    assert_eq!(srv.get("/pid").status, 200);
    let mut busy = srv.connect();
    busy.send_request("GET", "/wait?file=go&token=busy", &[], b"");
    let mut queued = srv.connect();
    // Only once the first holds the thread does the second wait in the queue.
    assert!(eventually(WAIT, || std::fs::read_to_string(
        srv.dir().join("calls")
    )
    .is_ok_and(|c| c.contains("busy"))));
    queued.send_request("GET", "/pid?token=queued", &[], b"");
    let mut refused = 0;
    assert!(
        eventually(WAIT, || {
            if srv.get("/pid?token=extra").status == 503 {
                refused += 1;
            }
            refused >= 2
        }),
        "the server never refused with 503\n{}",
        srv.report()
    );

    let text = scrape(&srv);
    let (ok, said) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics refused /metrics:\n{said}\n{text}"
    );
    let refused_503 = sample(
        &text,
        r#"spillway_http_responses_total{code="503",origin="server"}"#,
    );
    assert!(refused_503.is_some_and(|n| n >= 2.0), "{text}");
    let queue_full = sample(
        &text,
        r#"spillway_queue_refusals_total{reason="queue_full"}"#,
    );
    assert!(queue_full.is_some_and(|n| n >= 2.0), "{text}");
    assert_eq!(
        sample(&text, "spillway_queue_requests"),
        Some(1.0),
        "{text}"
    );
    let busy_threads: f64 = text
        .lines()
        .filter(|l| l.starts_with("spillway_worker_busy_threads{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(busy_threads, 1.0, "{text}");
    let listener = format!(
        "spillway_listener_accept_queue_limit{{listener=\"{}\"}}",
        srv.addr()
    );
    assert!(
        sample(&text, &listener).is_some_and(|n| n > 0.0),
        "{listener}\n{text}"
    );
    assert!(
        sample(
            &text,
            "spillway_http_responses_total{code=\"200\",origin=\"application\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    std::fs::write(srv.dir().join("go"), b"go").unwrap();
    assert_eq!(busy.read_response().status, 200);
    assert_eq!(queued.read_response().status, 200);
    let text = scrape(&srv);
    // Each request that waited is in the queue-wait histogram; one waited for seconds.
    let waited = sample(&text, "spillway_queue_wait_seconds_count");
    assert!(waited.is_some_and(|n| n >= 3.0), "{text}");
    let under_1ms = sample(&text, r#"spillway_queue_wait_seconds_bucket{le="0.001"}"#);
    assert!(under_1ms.is_some_and(|n| n < waited.unwrap()), "{text}");
    assert_eq!(
        sample(&text, "spillway_worker_starts_total"),
        Some(1.0),
        "{text}"
    );
}

/// A Prometheus server scraping `target` every second, killed on drop.
pub(crate) struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    pub(crate) fn start(dir: &Path, target: &str) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: spillway\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus: {e}: {NOT_INSTALLED}"));
        Prometheus { child, port }
    }

    /// How many series an instant query returns (`None` while Prometheus is not up, or
    /// the query is refused: its error then).
    pub(crate) fn series(&self, q: &str) -> Result<usize, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        let r = try_get(local(self.port), &path)?;
        if r.status != 200 {
            return Err(format!("{}: {}", r.status, r.text()));
        }
        Ok(r.json().get("data").get("result").arr().len())
    }

    /// The single value of an instant query, if it has one.
    fn query(&self, q: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", q.replace(' ', "%20"));
        let r = try_get(local(self.port), &path).ok()?;
        // While it starts, Prometheus answers 503 in plain text.
        if r.status != 200 {
            return None;
        }
        let j = r.json();
        let first = j.get("data").get("result").arr().first()?;
        first.get("value").arr().get(1)?.str()?.parse().ok()
    }
}

/// A query string's bytes, percent-encoded but for RFC 3986's unreserved ones.
fn percent_encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_spillway() {
    let srv = Spillway::new("apps/overload.py:app")
        .args(["--threads", "1"])
        .with_admin()
        .start();
    crate::support::lifecycle::wait_admin(&srv, srv.admin());
    let mut c = Conn::tcp(std::net::TcpStream::connect(srv.addr()).unwrap());
    for i in 0..5 {
        assert_eq!(c.get(&format!("/pid?token=p{i}")).status, 200);
    }
    let prom = Prometheus::start(srv.dir(), &format!("127.0.0.1:{}", srv.admin()));
    let mut got = None;
    let seen = eventually(Duration::from_secs(45), || {
        got = prom.query(
            r#"sum(spillway_http_responses_total{job="spillway",code="200",origin="application"})"#,
        );
        got.is_some_and(|n| n >= 5.0)
    });
    assert!(
        seen,
        "Prometheus never reported the 5 responses (last: {got:?}); up = {:?}\n{}",
        prom.query(r#"up{job="spillway"}"#),
        srv.report()
    );
    assert_eq!(prom.query(r#"up{job="spillway"}"#), Some(1.0));
}

#[test]
fn the_contrib_scrape_config_and_alert_rules_pass_promtool_and_name_real_metrics() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/prometheus");
    for (what, file) in [
        ("rules", "spillway-alerts.yml"),
        ("config", "prometheus.yml"),
    ] {
        let out = Command::new("promtool")
            .args(["check", what])
            .arg(contrib.join(file))
            .output()
            .unwrap_or_else(|e| panic!("promtool: {e}: {NOT_INSTALLED}"));
        assert!(
            out.status.success(),
            "promtool check {what} {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every metric an alert uses is one the server exports.
    let srv = Spillway::new("apps/overload.py:app").with_admin().start();
    crate::support::lifecycle::wait_admin(&srv, srv.admin());
    assert_eq!(srv.get("/pid").status, 200);
    let text = scrape(&srv);
    let rules = std::fs::read_to_string(contrib.join("spillway-alerts.yml")).unwrap();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("spillway_") {
            continue;
        }
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(word);
        named += 1;
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the alert rules use {word}, which /metrics does not export"
        );
    }
    assert!(named >= 8, "{named}");
}
