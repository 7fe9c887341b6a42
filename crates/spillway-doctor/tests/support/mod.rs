//! Test fixtures: a Python listener that never accepts (or accepts everything), and a
//! bounded loopback client that keeps it overfilled.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Binds 127.0.0.1:0, listen(BACKLOG), prints "port pid", then either never accepts or
/// accepts and holds every connection; exits when stdin closes (when the test drops it).
const SERVER: &str = r#"
import os, socket, sys, threading
backlog, accept = int(sys.argv[1]), sys.argv[2] == "accept"
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(backlog)
held = []
def loop():
    while True:
        c, _ = s.accept()
        held.append(c)
if accept:
    threading.Thread(target=loop, daemon=True).start()
print(s.getsockname()[1], os.getpid(), flush=True)
sys.stdin.read()
"#;

/// A running Python listener; killed on drop.
pub struct PyServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The pid of the Python process (not of a pyenv shim).
    pub pid: u32,
}

impl PyServer {
    /// Starts a server with `listen(backlog)`; `accept` false means it never calls accept().
    pub fn start(backlog: u32, accept: bool) -> PyServer {
        let mut child = Command::new("python3")
            .args(["-c", SERVER, &backlog.to_string()])
            .arg(if accept { "accept" } else { "stall" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped"))
            .read_line(&mut line)
            .expect("server prints its port");
        let mut it = line
            .split_whitespace()
            .map(|s| s.parse::<u32>().expect("number"));
        let port = it.next().expect("port") as u16;
        let pid = it.next().expect("pid");
        PyServer { child, port, pid }
    }

    /// 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens up to `n` connections that complete (they land in the accept queue).
pub fn fill(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect()
}

/// Sends one SYN every 20 ms (each connect gives up after 10 ms, so its SYN is never
/// retransmitted) until `stop` is set or `max` attempts; returns how many were made.
/// Against a full accept queue every one of them is a kernel ListenOverflow.
pub fn hammer(addr: SocketAddr, stop: &AtomicBool, max: u32) -> u32 {
    let mut n = 0;
    while n < max && !stop.load(Ordering::Relaxed) {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(10));
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}
