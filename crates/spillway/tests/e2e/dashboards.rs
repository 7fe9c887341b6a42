//! The operator's views of the metrics, checked against the real thing: every PromQL
//! query of the Grafana dashboard (`contrib/grafana/`) returns data from a real
//! Prometheus that scraped a real Spillway pushed into 503s, 504s, a 502 and a reload;
//! and the alert rules (`contrib/prometheus/`) pass their `promtool test rules` tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::metrics::{Prometheus, NOT_INSTALLED};
use crate::support::lifecycle::{local, try_request, wait_admin};
use crate::support::{eventually, Spillway};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib")
}

/// Every `expr` of the dashboard's panels, with the panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = contrib().join("grafana/spillway-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"]
            .as_str()
            .expect("a panel has a title")
            .to_string();
        let targets = p["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// The dashboard's variables as Grafana fills them in: every instance, a 1-minute rate.
fn instantiate(expr: &str) -> String {
    expr.replace("$instance", ".*")
        .replace("$__rate_interval", "1m")
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{}", queries.len());
    let srv = Spillway::new("apps/overload.py:app")
        .args(["--threads", "1", "--max-queue", "1", "--timeout", "2"])
        .with_admin()
        .start();
    let admin = srv.admin();
    wait_admin(&srv, admin);
    let prom = Prometheus::start(srv.dir(), &format!("127.0.0.1:{admin}"));
    let addr = srv.addr();
    let get = move |path: &'static str| {
        thread::spawn(move || crate::support::lifecycle::try_get(addr, path).map(|r| r.status))
    };
    // One request runs, one queues, the rest are refused (503); then a request past
    // --timeout (504), a worker that dies mid-request (502), and a reload.
    let burst: Vec<_> = (0..4).map(|_| get("/sleep?ms=1500")).collect();
    let statuses: Vec<u16> = burst
        .into_iter()
        .filter_map(|h| h.join().unwrap().ok())
        .collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    assert_eq!(get("/sleep?ms=2500").join().unwrap(), Ok(504));
    assert_eq!(get("/exit").join().unwrap(), Ok(502));
    let r = try_request(local(admin), "POST", "/reload").expect("POST /reload");
    assert!((200..300).contains(&r.status), "{r}");

    let mut missing = Vec::new();
    let all = eventually(Duration::from_secs(60), || {
        // Answered requests keep the latency histograms moving meanwhile.
        let _ = crate::support::lifecycle::try_get(addr, "/pid");
        missing = queries
            .iter()
            .filter(|(_, q)| !prom.series(&instantiate(q)).is_ok_and(|n| n > 0))
            .map(|(t, q)| format!("{t}: {q} -> {:?}", prom.series(&instantiate(q))))
            .collect();
        thread::sleep(Duration::from_millis(500));
        missing.is_empty()
    });
    assert!(
        all,
        "queries without data:\n{}\n{}",
        missing.join("\n"),
        srv.report()
    );
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let dir = contrib().join("prometheus");
    let out = Command::new("promtool")
        .args(["test", "rules", "spillway-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}: {NOT_INSTALLED}"));
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
