//! Helpers for the lifecycle and HAProxy tests: the admin endpoint, the agent-check port,
//! requests that report errors instead of panicking (for wait loops), reload and exit waits.

use super::{eventually, Conn, Json, Response, Server};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);
/// What the log says when a reload went through, and when it did not.
pub const RELOADED: &str = "reload: new generation serving";
pub const RELOAD_FAILED: &str = "reload failed";

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One request on a new connection with `Connection: close`; errors instead of panics, for
/// wait loops.
pub fn try_request(addr: SocketAddr, method: &str, path: &str) -> Result<Response, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut c = Conn::tcp(s);
    c.set_timeout(Duration::from_secs(10));
    c.try_send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    c.try_read_response_to(method == "HEAD")
}

/// `GET` with [`try_request`].
pub fn try_get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    try_request(addr, "GET", path)
}

/// `GET` that must answer 200.
pub fn get_ok(addr: SocketAddr, path: &str) -> Response {
    let r = try_get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    assert_eq!(r.status, 200, "GET {path} on {addr}:\n{r}");
    r
}

/// Retries GET `path` until it answers 200 (within `WAIT`); on failure, the last answer
/// or error, for the assertion message.
pub fn wait_for_200(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut last = String::new();
    let ok = eventually(WAIT, || match try_get(addr, path) {
        Ok(r) if r.status == 200 => true,
        Ok(r) => {
            last = r.to_string();
            false
        }
        Err(e) => {
            last = e;
            false
        }
    });
    if ok {
        Ok(())
    } else {
        Err(last)
    }
}

/// The admin endpoint's `/status` document.
pub fn status(admin: u16) -> Json {
    get_ok(local(admin), "/status").json()
}

/// Waits until the admin endpoint answers (it may start listening after the first
/// listener is logged).
pub fn wait_admin(srv: &Server, admin: u16) {
    assert!(
        eventually(WAIT, || try_get(local(admin), "/healthz")
            .is_ok_and(|r| r.status == 200)),
        "admin endpoint 127.0.0.1:{admin} never answered /healthz\n{}",
        srv.report()
    );
}

/// The `/readyz` status, `None` if the admin endpoint does not answer.
pub fn readyz(admin: u16) -> Option<u16> {
    try_get(local(admin), "/readyz").ok().map(|r| r.status)
}

/// One agent-check answer (the server writes one line and closes).
pub fn agent_line(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&local(port), Duration::from_secs(5))
        .map_err(|e| format!("connect agent {port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    // Bounded: at most 64 reads, each with a timeout.
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("agent read: {e}; got {out:?}")),
        }
        if out.len() > 4096 {
            return Err(format!("agent sent too much: {out:?}"));
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The weight in an `up ready N%` answer.
pub fn agent_weight(line: &str) -> Option<u32> {
    let rest = line.trim().strip_prefix("up ready ")?;
    rest.strip_suffix('%')?.parse().ok()
}

/// How many log lines contain `needle`.
pub fn count(srv: &Server, needle: &str) -> usize {
    srv.stderr_lines_with(needle).len()
}

/// Waits until the log shows `n` successful reloads.
pub fn wait_reloads(srv: &Server, n: usize) {
    assert!(
        srv.wait_output(WAIT, |e, _| e.matches(RELOADED).count() >= n),
        "the log never showed {n} x {RELOADED:?}\n{}",
        srv.report()
    );
}

/// The `pid` member of a JSON body (the worker that answered).
pub fn pid_of(r: &Response) -> u64 {
    r.json().get("pid").u64()
}

/// Waits (bounded) for the server to exit, and requires exit status 0.
pub fn wait_exit_ok(srv: &mut Server, timeout: Duration) {
    let st = srv
        .wait_exit(timeout)
        .unwrap_or_else(|| panic!("server did not exit within {timeout:?}\n{}", srv.report()));
    assert_eq!(st.code(), Some(0), "exit status {st}\n{}", srv.report());
}
