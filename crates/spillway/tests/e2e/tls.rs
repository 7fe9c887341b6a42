//! TLS and HTTP/2 through the real binary, with real clients: curl (HTTP/1.1 and h2 by
//! ALPN, h2c with prior knowledge), `openssl s_client`, Python's `ssl` and `h2load`
//! (Debian's `nghttp2-client`, installed by `.ci/run`). Certificates are made per test with
//! `openssl`: a CA, a server certificate for 127.0.0.1, a client certificate it signed,
//! and one it did not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{eventually, Json, Server, Spillway, IO_TIMEOUT};

const ECHO: &str = "apps/echo.py:app";

fn run(cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{desc}: {e} (.ci/run installs curl, openssl and nghttp2-client)")
    })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The files of a test PKI.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = run(Command::new("openssl").args(args).current_dir(dir));
    assert!(o.status.success(), "openssl {args:?}:\n{}", text(&o));
}

/// A certificate `name` for `subject`, signed by the CA (or self-signed without one),
/// with `san` as its subjectAltName.
fn issue(dir: &Path, name: &str, subject: &str, san: Option<&str>, ca: bool) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.pem");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    );
    let ext = format!("{name}.ext");
    let mut e = String::from("basicConstraints=CA:FALSE\n");
    if let Some(san) = san {
        e.push_str(&format!("subjectAltName={san}\n"));
    }
    std::fs::write(dir.join(&ext), e).unwrap();
    if ca {
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        );
    } else {
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-signkey", &key, "-days", "2", "-out", &crt,
                "-extfile", &ext,
            ],
        );
    }
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Spillway Test CA",
            ],
        );
        issue(
            &dir,
            "server",
            "/CN=server-a",
            Some("IP:127.0.0.1,DNS:localhost"),
            true,
        );
        issue(
            &dir,
            "client",
            "/C=US/O=Spillway, Test/CN=client one",
            None,
            true,
        );
        issue(&dir, "stranger", "/CN=stranger", None, false);
        Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            stranger_cert: dir.join("stranger.pem"),
            stranger_key: dir.join("stranger.key"),
            dir,
        }
    }

    fn server_args(&self) -> Vec<String> {
        vec![
            "--certfile".into(),
            self.cert.display().to_string(),
            "--keyfile".into(),
            self.key.display().to_string(),
        ]
    }
}

/// `curl` against the server: the response body, and what curl said on failure.
fn curl(args: &[&str]) -> Result<String, String> {
    let o = run(Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args));
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(text(&o))
    }
}

fn environ(body: &str) -> Json {
    let j = Json::parse(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    j.get("environ").clone()
}

/// A server with a TLS listener first and a cleartext one second.
fn tls_server(pki: &Pki, extra: &[&str]) -> Server {
    Spillway::new(ECHO)
        .bind("tls:127.0.0.1:0")
        .bind("127.0.0.1:0")
        .args(pki.server_args())
        .args(extra.iter().copied())
        .with_admin()
        .start()
}

fn port(srv: &Server, i: usize) -> u16 {
    match &srv.listeners[i] {
        crate::support::Listener::Tcp(a) => a.port(),
        crate::support::Listener::Unix(_) => panic!("listener {i} is not TCP"),
    }
}

#[test]
fn tls_and_cleartext_listeners_serve_http1_and_h2_to_real_clients() {
    let b = Spillway::new(ECHO);
    let pki = Pki::make(b.dir());
    drop(b);
    let srv = tls_server(&pki, &[]);
    let (tls, plain) = (port(&srv, 0), port(&srv, 1));
    let url = format!("https://127.0.0.1:{tls}/x?y=1");
    let ca = pki.ca.display().to_string();

    let body = curl(&["--cacert", &ca, "--http1.1", &url])
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.report()));
    let env = environ(&body);
    assert_eq!(env.get("HTTPS").str(), Some("on"), "{body}");
    assert_eq!(env.get("wsgi.url_scheme").str(), Some("https"));
    assert_eq!(env.get("SERVER_PROTOCOL").str(), Some("HTTP/1.1"));
    assert_eq!(env.get("SSL_CLIENT_VERIFY").str(), Some("NONE"));
    assert!(env
        .get("SSL_PROTOCOL")
        .str()
        .is_some_and(|p| p.starts_with("TLSv1.")));

    // ALPN picks h2.
    let out = curl(&["--cacert", &ca, "--http2", "-w", "\n%{http_version}", &url]).unwrap();
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{out}");
    let env = environ(body);
    assert_eq!(env.get("SERVER_PROTOCOL").str(), Some("HTTP/2"));
    assert_eq!(
        env.get("HTTP_HOST").str(),
        Some(&*format!("127.0.0.1:{tls}"))
    );
    assert_eq!(env.get("PATH_INFO").str(), Some("/x"));
    assert_eq!(env.get("QUERY_STRING").str(), Some("y=1"));

    // openssl s_client: TLS 1.2 still works, and ALPN says h2.
    let o = run(Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{tls}"),
            "-CAfile",
            &ca,
            "-alpn",
            "h2,http/1.1",
            "-tls1_2",
        ])
        .stdin(Stdio::null()));
    let said = text(&o);
    assert!(said.contains("ALPN protocol: h2"), "{said}");
    assert!(said.contains("Protocol  : TLSv1.2"), "{said}");
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");

    // Python's ssl, HTTP/1.1 by hand.
    let script = format!(
        "import socket, ssl\nctx = ssl.create_default_context(cafile={ca:?})\ns = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {tls})), server_hostname='127.0.0.1')\ns.sendall(b'GET /py HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n')\ndata = b''\nwhile True:\n    c = s.recv(65536)\n    if not c: break\n    data += c\nprint(data.split(b'\\r\\n')[0].decode())\n"
    );
    let o = run(Command::new("python3").args(["-c", &script]));
    assert!(text(&o).contains("HTTP/1.1 200"), "{}", text(&o));

    // The cleartext listener: HTTP/1.1, and h2c with prior knowledge.
    let body = curl(&[&format!("http://127.0.0.1:{plain}/")]).unwrap();
    assert_eq!(environ(&body).get("wsgi.url_scheme").str(), Some("http"));
    assert!(!environ(&body).has("HTTPS"));
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &format!("http://127.0.0.1:{plain}/h2c"),
    ])
    .unwrap();
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{out}");
    assert_eq!(environ(body).get("SERVER_PROTOCOL").str(), Some("HTTP/2"));

    // A client that speaks cleartext to the TLS port is not served.
    let mut c = TcpStream::connect(("127.0.0.1", tls)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("200"),
        "{}",
        srv.report()
    );
}

/// The subject of `cert` as `openssl x509 -nameopt RFC2253,-esc_msb` prints it: what
/// mod_ssl's SSL_CLIENT_S_DN holds.
fn rfc2253_subject(cert: &Path) -> String {
    let o = run(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253,-esc_msb",
            "-in",
        ])
        .arg(cert));
    text(&o)
        .trim()
        .trim_start_matches("subject=")
        .trim()
        .to_owned()
}

#[test]
fn client_certificates_are_verified_and_reach_the_application_as_mod_ssl_names_them() {
    let b = Spillway::new(ECHO);
    let pki = Pki::make(b.dir());
    drop(b);
    let ca = pki.ca.display().to_string();
    let required = tls_server(&pki, &["--ca-certs", &ca, "--cert-reqs", "required"]);
    let url = format!("https://127.0.0.1:{}/", port(&required, 0));
    let (cc, ck) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let body = curl(&["--cacert", &ca, "--cert", &cc, "--key", &ck, &url])
        .unwrap_or_else(|e| panic!("{e}\n{}", required.report()));
    let env = environ(&body);
    assert_eq!(env.get("SSL_CLIENT_VERIFY").str(), Some("SUCCESS"));
    let want = rfc2253_subject(&pki.client_cert);
    assert_eq!(want, "CN=client one,O=Spillway\\, Test,C=US");
    assert_eq!(
        env.get("SSL_CLIENT_S_DN").str(),
        Some(want.as_str()),
        "{body}"
    );
    assert_eq!(
        env.get("SSL_CLIENT_I_DN").str(),
        Some("CN=Spillway Test CA")
    );
    // Over h2 too.
    let body = curl(&[
        "--cacert", &ca, "--cert", &cc, "--key", &ck, "--http2", &url,
    ])
    .unwrap();
    assert_eq!(
        environ(&body).get("SSL_CLIENT_S_DN").str(),
        Some(want.as_str())
    );

    // Refused: no certificate, or one the CA did not sign.
    assert!(
        curl(&["--cacert", &ca, &url]).is_err(),
        "served without a client certificate"
    );
    let (sc, sk) = (
        pki.stranger_cert.display().to_string(),
        pki.stranger_key.display().to_string(),
    );
    assert!(
        curl(&["--cacert", &ca, "--cert", &sc, "--key", &sk, &url]).is_err(),
        "served a stranger"
    );
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{}/", port(&required, 1))]).map(|b| !b.is_empty()),
        Ok(true)
    );

    // Optional: no certificate is fine, a bad one still is not.
    let optional = tls_server(&pki, &["--ca-certs", &ca, "--cert-reqs", "optional"]);
    let url = format!("https://127.0.0.1:{}/", port(&optional, 0));
    let body = curl(&["--cacert", &ca, &url]).unwrap();
    assert_eq!(environ(&body).get("SSL_CLIENT_VERIFY").str(), Some("NONE"));
    assert!(curl(&["--cacert", &ca, "--cert", &sc, "--key", &sk, &url]).is_err());
    let metrics = crate::support::lifecycle::get_ok(
        crate::support::lifecycle::local(optional.admin()),
        "/metrics",
    )
    .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("spillway_tls_handshake_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// The subject CN of the certificate the server presents now.
fn served_cn(port: u16, ca: &str) -> String {
    let o = run(Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            ca,
            "-brief",
        ])
        .stdin(Stdio::null()));
    let said = text(&o);
    // `Peer certificate: CN = server-a` (OpenSSL 3's -brief).
    said.lines()
        .filter_map(|l| l.strip_prefix("Peer certificate:"))
        .find_map(|l| l.split("CN").nth(1))
        .map(|s| s.trim_start_matches([' ', '=']).trim().to_owned())
        .unwrap_or(said)
}

#[test]
fn certificates_reload_on_sighup_under_load_without_a_failed_request() {
    let b = Spillway::new(ECHO);
    let pki = Pki::make(b.dir());
    drop(b);
    let srv = tls_server(&pki, &[]);
    let tls = port(&srv, 0);
    let ca = pki.ca.display().to_string();
    assert_eq!(served_cn(tls, &ca), "server-a");

    // Load on keep-alive and new connections while the certificate changes twice.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, ca) = (stop.clone(), ok.clone(), failed.clone(), ca.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let url = format!("https://127.0.0.1:{tls}/");
                    match curl(&[
                        "--cacert",
                        &ca,
                        "-o",
                        "/dev/null",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        &url,
                        &url,
                    ]) {
                        Ok(codes) if codes == "200200" => ok.fetch_add(2, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    issue(
        &pki.dir,
        "server",
        "/CN=server-b",
        Some("IP:127.0.0.1,DNS:localhost"),
        true,
    );
    srv.signal("HUP");
    assert!(
        eventually(IO_TIMEOUT, || served_cn(tls, &ca) == "server-b"),
        "the new certificate is not served\n{}",
        srv.report()
    );
    // A certificate that does not load keeps the one in use.
    std::fs::write(&pki.cert, "not a certificate\n").unwrap();
    srv.signal("HUP");
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e
            .contains("TLS certificates not reloaded")),
        "{}",
        srv.report()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served_cn(tls, &ca), "server-b");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(
        ok.load(Ordering::Relaxed) > 10,
        "too little load to mean anything"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{}", srv.report());
}

#[test]
fn h2load_over_tls_completes_every_request() {
    let b = Spillway::new(ECHO);
    let pki = Pki::make(b.dir());
    drop(b);
    let srv = Spillway::new("apps/echo.py:app")
        .bind("tls:127.0.0.1:0")
        .args(pki.server_args())
        .args(["--threads", "4"])
        .start();
    let url = format!("https://127.0.0.1:{}/", port(&srv, 0));
    let o = run(Command::new("h2load").args(["-n", "2000", "-c", "20", "-m", "10", &url]));
    let said = text(&o);
    assert!(
        said.contains("2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
        "{said}\n{}",
        srv.report()
    );
}

/// Raw HTTP/2 frames, for what no client does on purpose.
mod raw {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HEADERS for `GET /` (HPACK static table entries and a literal authority), ending
    /// the stream.
    pub fn get(stream: u32) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
        block.extend_from_slice(b"127.0.0.1");
        frame(0x1, 0x5, stream, &block)
    }

    /// RST_STREAM with CANCEL.
    pub fn reset(stream: u32) -> Vec<u8> {
        frame(0x3, 0, stream, &8u32.to_be_bytes())
    }
}

#[test]
fn a_rapid_reset_flood_gets_the_connection_closed_and_costs_the_application_little() {
    let srv = Spillway::new("apps/overload.py:app")
        .args(["--threads", "2"])
        .start();
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut wire = raw::PREFACE.to_vec();
    wire.extend(raw::frame(0x4, 0, 0, &[]));
    // 5000 streams opened and reset at once, as the attack does.
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        wire.extend(raw::get(id));
        wire.extend(raw::reset(id));
    }
    let _ = c.write_all(&wire);
    // Read until the server sends GOAWAY or closes.
    let mut got = Vec::new();
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = [0u8; 65536];
    let mut goaway = None;
    while Instant::now() < deadline && goaway.is_none() {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        let mut at = 0;
        while at + 9 <= got.len() {
            let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
            if at + 9 + len > got.len() {
                break;
            }
            if got[at + 3] == 0x7 && len >= 8 {
                let p = &got[at + 9..at + 9 + 8];
                goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
    }
    assert_eq!(goaway, Some(0xb), "expected GOAWAY ENHANCE_YOUR_CALM");
    let calls = std::fs::read_to_string(srv.dir().join("calls")).unwrap_or_default();
    assert!(
        calls.lines().count() < 500,
        "the application ran {} of 5000 reset requests",
        calls.lines().count()
    );
    // Everyone else is still served.
    assert_eq!(srv.get("/pid").status, 200, "{}", srv.report());
}

#[test]
fn http_versions_can_be_limited() {
    let only1 = Spillway::new(ECHO).args(["--http", "1"]).start();
    let url = format!("http://127.0.0.1:{}/", only1.port());
    assert!(
        curl(&["--http2-prior-knowledge", &url]).is_err(),
        "h2c served with --http 1"
    );
    assert!(curl(&[&url]).is_ok());
    let only2 = Spillway::new(ECHO).args(["--http", "2"]).start();
    let url = format!("http://127.0.0.1:{}/", only2.port());
    assert!(curl(&["--http2-prior-knowledge", &url]).is_ok());
    assert!(
        curl(&["--http1.1", &url]).is_err(),
        "HTTP/1.1 served with --http 2"
    );
}

/// A client that chose h2 by ALPN must send the HTTP/2 preface within --header-timeout,
/// as a cleartext one must send its first head: a quiet one does not hold a connection
/// slot.
#[test]
fn a_tls_client_that_chose_h2_and_sends_no_preface_is_closed_at_the_header_timeout() {
    let b = Spillway::new(ECHO);
    let pki = Pki::make(b.dir());
    drop(b);
    let srv = tls_server(&pki, &["--header-timeout", "2"]);
    let tls = port(&srv, 0);
    let ca = pki.ca.display().to_string();
    let script = format!(
        "import socket, ssl, time\nctx = ssl.create_default_context(cafile={ca:?})\nctx.set_alpn_protocols(['h2'])\ns = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {tls})), server_hostname='127.0.0.1')\nassert s.selected_alpn_protocol() == 'h2', s.selected_alpn_protocol()\ns.settimeout(1)\nstart = time.monotonic()\nwhile time.monotonic() - start < 12:\n    try:\n        if not s.recv(65536):\n            print('closed after', round(time.monotonic() - start, 1))\n            break\n    except (socket.timeout, TimeoutError):\n        pass\n    except OSError as e:\n        print('closed after', round(time.monotonic() - start, 1), e)\n        break\nelse:\n    print('still open')\n"
    );
    let o = run(Command::new("python3").args(["-c", &script]));
    let said = text(&o);
    assert!(said.contains("closed after"), "{said}\n{}", srv.report());
}

/// A server started the way systemd starts it (the launcher in `lifecycle`), with the
/// listening socket at 127.0.0.1:`activated` on fd 3.
fn activated_server(activated: u16, binds: &[String], args: &[String]) -> Spillway {
    let mut b = Spillway::new(ECHO);
    let launcher = b.dir().join("activate.py");
    std::fs::write(&launcher, crate::lifecycle::ACTIVATE_PY).unwrap();
    for bind in binds {
        b = b.bind(bind.clone());
    }
    b.args(args.iter().cloned()).wrap(
        "python3",
        [launcher.into_os_string(), activated.to_string().into()],
    )
}

#[test]
fn socket_activation_speaks_tls_on_a_tls_bind_address_or_refuses_to_start() {
    let pki = Pki::make(&crate::support::test_dir());
    let ca = pki.ca.display().to_string();
    let (cc, ck) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let mut args = pki.server_args();
    args.extend(["--ca-certs".into(), ca.clone()]);
    args.extend(["--cert-reqs".into(), "required".into()]);
    let activated = crate::support::free_port();
    let mut srv = activated_server(
        activated,
        &[format!("tls:127.0.0.1:{activated}"), "127.0.0.1:0".into()],
        &args,
    )
    .spawn();
    srv.listeners = vec![crate::support::Listener::Tcp(
        crate::support::lifecycle::local(activated),
    )];
    let url = format!("https://127.0.0.1:{activated}/");
    assert!(
        eventually(Duration::from_secs(30), || curl(&[
            "--cacert", &ca, "--cert", &cc, "--key", &ck, &url
        ])
        .is_ok()),
        "no TLS with a client certificate on the activated socket\n{}",
        srv.report()
    );
    // --cert-reqs required holds on the activated socket.
    assert!(curl(&["--cacert", &ca, &url]).is_err(), "{}", srv.report());
    assert!(
        curl(&[&format!("http://127.0.0.1:{activated}/")]).is_err(),
        "plain HTTP answered on a tls: socket\n{}",
        srv.report()
    );
    drop(srv);

    // A tls: bind that no passed socket matches: TLS would be lost, so no start.
    let passed = crate::support::free_port();
    let elsewhere = crate::support::free_port();
    let out = activated_server(passed, &[format!("tls:127.0.0.1:{elsewhere}")], &args).run();
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "--bind tls:127.0.0.1:{elsewhere} matches none of the sockets systemd passed (127.0.0.1:{passed})"
        )),
        "{out}"
    );
}
