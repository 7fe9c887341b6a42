//! Behind a load balancer: a real HAProxy (the Debian package, installed by `.ci/run`) in
//! front of two Spillway instances while one restarts and the other reloads, the PROXY
//! protocol (v1, v2, from HAProxy and by hand) and `X-Forwarded-*` from trusted and
//! untrusted peers.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::lifecycle::*;
use crate::support::{capture, eventually, free_port, Captured, Conn, Response, Server, Spillway};

/// HAProxy run in the foreground (`-db`), killed on drop.
struct HAProxy {
    child: Child,
    output: Arc<Captured>,
    threads: Vec<std::thread::JoinHandle<()>>,
    cfg: PathBuf,
}

const NOT_INSTALLED: &str = "haproxy is not installed: these tests need a real HAProxy; \
     .ci/run installs it (apt-get install haproxy)";

fn haproxy_binary() -> &'static str {
    for candidate in ["haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"] {
        if Command::new(candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return candidate;
        }
    }
    panic!("{NOT_INSTALLED}");
}

impl HAProxy {
    /// Checks `cfg` (`haproxy -c`), starts HAProxy on it and waits until `frontend` accepts
    /// connections.
    fn start(dir: &Path, cfg: &str, frontend: SocketAddr) -> HAProxy {
        let bin = haproxy_binary();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let check = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c rejected the generated configuration:\n{}{}\n--- haproxy.cfg ---\n{cfg}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} ({bin}: {e})"));
        let output = Arc::new(Captured::default());
        let threads = vec![
            capture(child.stdout.take().unwrap(), output.clone(), false),
            capture(child.stderr.take().unwrap(), output.clone(), true),
        ];
        let mut h = HAProxy {
            child,
            output,
            threads,
            cfg: path,
        };
        let up = eventually(WAIT, || {
            TcpStream::connect_timeout(&frontend, Duration::from_secs(2)).is_ok()
        });
        if !up || !matches!(h.child.try_wait(), Ok(None)) {
            panic!(
                "haproxy did not start listening on {frontend}\n{}",
                h.report()
            );
        }
        h
    }

    fn report(&self) -> String {
        // HAProxy's own messages (stderr) first, then its request log (stdout).
        let out = self.output.stderr() + &self.output.stdout();
        // The request log can be long: its end matters most.
        let tail: String = if out.len() > 20_000 {
            let mut i = out.len() - 20_000;
            while !out.is_char_boundary(i) {
                i += 1;
            }
            out[i..].to_string()
        } else {
            out
        };
        format!(
            "--- haproxy.cfg ({}) ---\n{}\n--- haproxy output (tail) ---\n{tail}",
            self.cfg.display(),
            std::fs::read_to_string(&self.cfg).unwrap_or_default()
        )
    }
}

impl Drop for HAProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// The ports of one Spillway instance.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    admin: u16,
    agent: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            http: free_port(),
            admin: free_port(),
            agent: free_port(),
        }
    }
}

/// Starts one instance named `name` (`instance` in the app's answers) on fixed ports, with
/// the PROXY protocol on its listener.
fn instance(name: &str, p: Ports, extra: &[&str]) -> Server {
    let srv = Spillway::new("apps/lifecycle.py:app")
        .bind(format!("127.0.0.1:{}", p.http))
        .workers(1)
        .args([
            "--threads",
            "4",
            "--admin",
            &format!("127.0.0.1:{}", p.admin),
            "--agent-check",
            &format!("127.0.0.1:{}", p.agent),
            "--env",
            &format!("APP_INSTANCE={name}"),
            "--proxy-protocol",
        ])
        .args(extra)
        .start();
    wait_admin(&srv, p.admin);
    assert!(
        eventually(WAIT, || readyz(p.admin) == Some(200)),
        "instance {name} never ready\n{}",
        srv.report()
    );
    srv
}

const DEFAULTS: &str = "\
global
    log stdout format raw local0
    maxconn 2000

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    # Below spillway's --keep-alive (75 s): HAProxy closes idle server connections first.
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout check 2s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
";

/// A HAProxy configuration modelled on `contrib/haproxy.cfg`, with test ports and short
/// check intervals (a down instance is noticed in well under the drain delay).
fn config(frontend: u16, servers: &[(&str, Ports)]) -> String {
    let mut cfg = String::from(DEFAULTS);
    cfg.push_str(&format!(
        "
frontend api
    bind 127.0.0.1:{frontend}
    default_backend spillway

backend spillway
    balance roundrobin
    http-reuse safe
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 300ms fall 2 rise 2 agent-inter 300ms weight 100 send-proxy-v2
"
    ));
    for (name, p) in servers {
        cfg.push_str(&format!(
            "    server {name} 127.0.0.1:{} port {} agent-check agent-port {}\n",
            p.http, p.admin, p.agent
        ));
    }
    cfg
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: AtomicU64,
    /// Responses per instance name.
    seen: Mutex<Vec<(String, u64)>>,
    errors: Mutex<Vec<String>>,
}

impl Load {
    fn seen(&self, name: &str) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    }

    fn record(&self, name: &str) {
        let mut s = self.seen.lock().unwrap();
        match s.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += 1,
            None => s.push((name.to_string(), 1)),
        }
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, msg: String) {
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(msg);
        }
    }

    fn failed(&self) -> bool {
        !self.errors.lock().unwrap().is_empty()
    }

    /// One client: keep-alive requests through `addr` until stopped (bounded in count
    /// and time). A `Connection: close` from HAProxy only means "reconnect".
    fn client(&self, id: usize, addr: SocketAddr, deadline: Instant) {
        let connect = || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map(Conn::tcp)
                .map_err(|e| format!("client {id}: connect {addr}: {e}"))
        };
        let mut conn = match connect() {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        for i in 0..100_000 {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return;
            }
            conn.send_request("GET", &format!("/?client={id}&i={i}"), &[], b"");
            let r = match conn.try_read_response() {
                Ok(r) => r,
                Err(e) => return self.fail(format!("client {id} request {i}: {e}")),
            };
            if r.status != 200 {
                return self.fail(format!("client {id} request {i}: {}\n{r}", r.status));
            }
            self.record(r.json().get("instance").s());
            if r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                conn = match connect() {
                    Ok(c) => c,
                    Err(e) => return self.fail(e),
                };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn haproxy_restart_one_instance_and_reload_the_other_under_load_fails_nothing() {
    const CLIENTS: usize = 8;
    let (p1, p2) = (Ports::pick(), Ports::pick());
    let fe = free_port();
    let drain = ["--drain-delay", "3", "--graceful-timeout", "20"];
    let mut s1 = instance("s1", p1, &drain);
    let s2 = instance("s2", p2, &drain);
    let hap = HAProxy::start(s1.dir(), &config(fe, &[("s1", p1), ("s2", p2)]), local(fe));

    let load = Load::default();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut steps: Vec<String> = Vec::new();
    std::thread::scope(|s| {
        // HAProxy marks both servers up (rise 2) before any client runs.
        let mut last = (String::new(), String::new());
        let both = eventually(WAIT, || {
            let one = || match try_get(local(fe), "/") {
                Ok(r) => r.to_string(),
                Err(e) => e,
            };
            last = (one(), one());
            (last.0.contains("\"s1\"") && last.1.contains("\"s2\""))
                || (last.0.contains("\"s2\"") && last.1.contains("\"s1\""))
        });
        if !both {
            load.fail(format!(
                "HAProxy never routed to both instances; last two answers:\n{}\n{}",
                last.0, last.1
            ));
            return;
        }
        for id in 0..CLIENTS {
            let load = &load;
            s.spawn(move || load.client(id, local(fe), deadline));
        }
        let waited = eventually(WAIT, || {
            (load.seen("s1") > 20 && load.seen("s2") > 20) || load.failed()
        });
        steps.push(format!("load running: {waited}"));

        // Restart s1: SIGTERM (HAProxy sees drain, stops routing), exit, start again.
        s1.signal("TERM");
        match s1.wait_exit(Duration::from_secs(60)) {
            Some(st) if st.code() == Some(0) => steps.push("s1 exited 0".into()),
            other => load.fail(format!("s1 after SIGTERM: {other:?}\n{}", s1.report())),
        }
        let before = load.seen("s1");
        s1 = instance("s1", p1, &drain);
        steps.push("s1 started again".into());
        if !eventually(WAIT, || load.seen("s1") > before + 20 || load.failed()) {
            load.fail("HAProxy never routed to the restarted s1".into());
        }

        // Reload s2 while the load goes on.
        let before = load.seen("s2");
        s2.signal("HUP");
        if !s2.wait_output(WAIT, |e, _| e.contains(RELOADED)) {
            load.fail(format!("s2 did not reload\n{}", s2.report()));
        }
        steps.push("s2 reloaded".into());
        if !eventually(WAIT, || load.seen("s2") > before + 20 || load.failed()) {
            load.fail("s2 stopped serving after its reload".into());
        }
        load.stop.store(true, Ordering::Relaxed);
    });

    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "client failures through HAProxy:\n{}\nsteps: {steps:?}\n--- s1 ---\n{}\n--- s2 ---\n{}\n{}",
        errors.join("\n"),
        s1.report(),
        s2.report(),
        hap.report()
    );
    assert!(
        load.ok.load(Ordering::Relaxed) > 100,
        "too few requests: {}",
        load.ok.load(Ordering::Relaxed)
    );
    assert_eq!(count(&s2, RELOAD_FAILED), 0);
    // Not even hidden failures: HAProxy's `retries`/`retry-on` did not have to replay a
    // request on another server (a connection refused, or one closed under a request).
    let log = hap.output.stdout();
    let logged = log.lines().filter(|l| l.contains(" api spillway/")).count();
    assert!(
        logged > 100,
        "HAProxy logged only {logged} requests\n{}",
        hap.report()
    );
    let bad = retried_or_failed(&log);
    assert!(
        bad.is_empty(),
        "HAProxy had to retry or failed requests:\n{}\n{}",
        bad.join("\n"),
        hap.report()
    );
}

/// Request log lines (`option httplog`) whose status is not 200 or that were retried:
/// `client [date] frontend backend/server timers status bytes - - term act/fe/be/srv/retries …`.
fn retried_or_failed(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" api spillway/") || l.contains(" api <NOSRV>"))
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let status_ok = f.get(5) == Some(&"200");
            let retries = f
                .get(10)
                .and_then(|c| c.rsplit('/').next())
                .map(|r| r.trim_start_matches('+'));
            !status_ok || retries != Some("0")
        })
        .take(20)
        .map(str::to_string)
        .collect()
}

#[test]
fn haproxy_send_proxy_v2_gives_the_client_address_in_remote_addr() {
    // HAProxy connects to Spillway from 127.0.0.3, the only trusted proxy; the client
    // connects to HAProxy from 127.0.0.1. Without the PROXY header REMOTE_ADDR would be
    // 127.0.0.3. No X-Forwarded-For is added, so only the PROXY header can tell.
    let p = Ports::pick();
    let fe = free_port();
    let srv = instance("s1", p, &["--forwarded-allow-ips", "127.0.0.3"]);
    let mut cfg = String::from(DEFAULTS);
    cfg.push_str(&format!(
        "
frontend api
    bind 127.0.0.1:{fe}
    default_backend spillway

backend spillway
    option httpchk GET /readyz
    http-check expect status 200
    source 127.0.0.3
    server s1 127.0.0.1:{} check inter 300ms rise 1 port {} send-proxy-v2
",
        p.http, p.admin
    ));
    let hap = HAProxy::start(srv.dir(), &cfg, local(fe));
    if let Err(last) = wait_for_200(local(fe), "/") {
        panic!(
            "HAProxy never got a 200 from Spillway; last: {last}\n{}",
            srv.report()
        );
    }
    let mut conn = Conn::tcp(TcpStream::connect_timeout(&local(fe), WAIT).unwrap());
    let client_port = conn.local_port().to_string();
    for _ in 0..3 {
        let r = conn.get("/");
        assert_eq!(r.status, 200, "{r}\n{}", hap.report());
        let j = r.json();
        assert_eq!(
            j.get("remote_addr").str(),
            Some("127.0.0.1"),
            "REMOTE_ADDR is not the client's address: {j}\n{}",
            srv.report()
        );
        assert_eq!(
            j.get("remote_port").str(),
            Some(client_port.as_str()),
            "REMOTE_PORT is not the client's port: {j}"
        );
    }
    // HAProxy adds no X-Forwarded-For here: the client's own is a lie, told by an
    // address Spillway does not trust (127.0.0.1, named by the PROXY header).
    let r = conn.request(
        "GET",
        "/",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    let j = r.json();
    assert_eq!(j.get("remote_addr").str(), Some("127.0.0.1"), "{j}");
    assert_eq!(j.get("scheme").str(), Some("http"), "{j}");
}

/// `GET /` after `prefix` (a PROXY header) on a new connection to `srv`.
fn behind(srv: &Server, prefix: &[u8], headers: &str) -> Result<Response, String> {
    let mut c = srv.connect();
    c.set_timeout(Duration::from_secs(10));
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    c.try_send(&bytes).map_err(|e| e.to_string())?;
    c.try_read_response_to(false)
}

const V2_SIG: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";

/// A PROXY v2 header, PROXY command, TCP over IPv4.
fn proxy_v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = V2_SIG.to_vec();
    v.extend_from_slice(&[0x21, 0x11, 0, 12]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v
}

fn remote(r: &Response) -> (String, String) {
    let j = r.json();
    (
        j.get("remote_addr").str().unwrap_or_default().to_string(),
        j.get("remote_port").str().unwrap_or_default().to_string(),
    )
}

#[test]
fn proxy_protocol_v1_and_v2_from_a_trusted_peer_set_remote_addr() {
    // Trusted by default: 127.0.0.1.
    let srv = Spillway::new("apps/lifecycle.py:app")
        .args(["--proxy-protocol", "--drain-delay", "0"])
        .start();
    let r = behind(&srv, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n", "")
        .unwrap_or_else(|e| panic!("PROXY v1: {e}\n{}", srv.report()));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(remote(&r), ("203.0.113.7".into(), "40000".into()), "{r}");

    let v2 = proxy_v2_tcp4([198, 51, 100, 9], 41000, [127, 0, 0, 1], 80);
    let r = behind(&srv, &v2, "").unwrap_or_else(|e| panic!("PROXY v2: {e}\n{}", srv.report()));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(remote(&r), ("198.51.100.9".into(), "41000".into()), "{r}");

    // The address holds for every request on the connection.
    let mut c = srv.connect();
    c.send(&proxy_v2_tcp4(
        [198, 51, 100, 10],
        41001,
        [127, 0, 0, 1],
        80,
    ));
    for _ in 0..3 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(remote(&r).0, "198.51.100.10", "{r}");
    }

    // Behind a PROXY header, the client it names decides trust: its X-Forwarded-* are
    // not believed, though the balancer that sent the header is trusted.
    let r = behind(
        &srv,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n",
    )
    .unwrap_or_else(|e| panic!("PROXY v1 + XFF: {e}\n{}", srv.report()));
    assert_eq!(remote(&r).0, "203.0.113.7", "{r}");
    assert_eq!(r.json().get("scheme").str(), Some("http"), "{r}");

    // v2 LOCAL (what a proxy's own health check sends): the real peer address.
    let mut local_cmd = V2_SIG.to_vec();
    local_cmd.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let r = behind(&srv, &local_cmd, "")
        .unwrap_or_else(|e| panic!("PROXY v2 LOCAL: {e}\n{}", srv.report()));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(remote(&r).0, "127.0.0.1", "{r}");
}

#[test]
fn proxy_protocol_header_from_an_untrusted_peer_is_not_believed() {
    let mut srv = Spillway::new("apps/lifecycle.py:app")
        .args(["--proxy-protocol", "--forwarded-allow-ips", "192.0.2.1"])
        .start();
    // With --proxy-protocol only peers in --forwarded-allow-ips may connect at all: a
    // PROXY header (or none) from anyone else is refused, never believed.
    for prefix in [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec(),
        proxy_v2_tcp4([203, 0, 113, 7], 40000, [127, 0, 0, 1], 80),
        Vec::new(),
    ] {
        if let Ok(r) = behind(&srv, &prefix, "") {
            assert_ne!(
                r.status,
                200,
                "an untrusted peer was served (prefix {:?}): {r}",
                String::from_utf8_lossy(&prefix)
            );
        }
    }
    assert!(srv.is_running(), "{}", srv.report());
}

#[test]
fn forwarded_headers_are_used_only_from_trusted_peers() {
    let xff = "X-Forwarded-For: 198.51.100.20\r\nX-Forwarded-Proto: https\r\n";
    let trusted = Spillway::new("apps/lifecycle.py:app")
        .args(["--drain-delay", "0"])
        .start();
    let r = behind(&trusted, b"", xff).unwrap_or_else(|e| panic!("{e}\n{}", trusted.report()));
    assert_eq!(r.status, 200, "{r}");
    let j = r.json();
    assert_eq!(j.get("remote_addr").str(), Some("198.51.100.20"), "{j}");
    assert_eq!(j.get("scheme").str(), Some("https"), "{j}");
    // The rightmost address is the one the trusted proxy saw; what the client wrote to its
    // left is not.
    let r = behind(
        &trusted,
        b"",
        "X-Forwarded-For: 10.9.9.9, 198.51.100.21\r\n",
    )
    .unwrap();
    assert_eq!(
        r.json().get("remote_addr").str(),
        Some("198.51.100.21"),
        "{r}"
    );

    let untrusted = Spillway::new("apps/lifecycle.py:app")
        .args(["--forwarded-allow-ips", "192.0.2.1", "--drain-delay", "0"])
        .start();
    let r = behind(&untrusted, b"", xff).unwrap_or_else(|e| panic!("{e}\n{}", untrusted.report()));
    assert_eq!(r.status, 200, "{r}");
    let j = r.json();
    assert_eq!(j.get("remote_addr").str(), Some("127.0.0.1"), "{j}");
    assert_eq!(j.get("scheme").str(), Some("http"), "{j}");
}
