//! End-to-end fixtures: start the real `spillway` binary and talk raw HTTP/1.1 to it.
//!
//! ```ignore
//! let srv = Spillway::new("apps/echo.py:app").arg("--threads").arg("2").start();
//! let res = srv.get("/x");
//! assert_eq!(res.status, 200, "{res}");
//! assert!(srv.stderr_contains("listening"));
//! ```
//!
//! Every socket read has a timeout and every loop is bounded, so a broken server fails a
//! test instead of hanging it.

// Each test binary uses a different part of the fixture.
#![allow(dead_code, unused_imports)]

pub mod lifecycle;
pub mod venv;

pub use spillway_testkit::{eventually, http, json, pseudo_random, Crc32, IO_TIMEOUT};

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use spillway_testkit::{Conn, Json, Response};

/// How long the server may take to log its listeners (cold Python import, debug build).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The test apps shipped beside this module.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Turns `apps/x.py:app` and `examples/x.py:app` into absolute paths; anything else is
/// passed through unchanged.
pub fn resolve_app(app: &str) -> String {
    if let Some(rest) = app.strip_prefix("apps/") {
        format!("{}/{rest}", apps_dir().display())
    } else if let Some(rest) = app.strip_prefix("examples/") {
        format!("{}/{rest}", examples_dir().display())
    } else {
        app.to_string()
    }
}

/// A fresh, empty directory for one test, named after the test.
pub fn test_dir() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let name: String = std::thread::current()
        .name()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e")
        .join(format!(
            "{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// A short unique unix socket path (sun_path is 108 bytes).
pub fn unix_socket_path() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let p = PathBuf::from(format!(
        "/tmp/spillway-test-{}-{}.sock",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// A TCP port on 127.0.0.1 that is free now, for servers that must listen on a known port
/// (admin, agent-check, a restart on the same port, HAProxy's frontend).
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), which outgoing
/// connections and `bind(…:0)` draw from: under load tests thousands of client sockets
/// take ports there, and one of them could grab the port before the server binds it.
/// Never the same port twice in one test process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u32, ephemeral_low.clamp(11_000, 65_535));
    let mut x = (std::process::id() as u64) << 20
        ^ SEQ.fetch_add(1, Ordering::SeqCst) as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (lo + (x % u64::from(hi - lo)) as u32) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    // Fall back to whatever the kernel hands out.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port();
    given.push(port);
    port
}

/// Builder for one server process.
pub struct Spillway {
    app: Option<String>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    binds: Vec<String>,
    workers: Option<String>,
    defaults: bool,
    dir: PathBuf,
    /// `program args…` to run the binary through (it must exec the binary, keeping its pid).
    wrapper: Option<(OsString, Vec<OsString>)>,
    /// Port of `--admin`, when asked for with [`Spillway::with_admin`].
    admin: Option<u16>,
}

impl Spillway {
    /// A server for `app` (`apps/…` and `examples/…` are resolved to absolute paths),
    /// bound to `127.0.0.1:0` with one worker unless told otherwise.
    pub fn new(app: &str) -> Self {
        Spillway {
            app: Some(resolve_app(app)),
            ..Spillway::bare()
        }
    }

    /// No APP argument and no default flags: for `--help`, `--version`, config errors.
    pub fn bare() -> Self {
        Spillway {
            app: None,
            args: Vec::new(),
            envs: Vec::new(),
            binds: Vec::new(),
            workers: None,
            defaults: true,
            dir: test_dir(),
            wrapper: None,
            admin: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the server process.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// `-b ADDR`; replaces the default `127.0.0.1:0`. Repeatable.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.binds.push(addr.into());
        self
    }

    /// `-w N`; replaces the default of one worker.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.to_string());
        self
    }

    /// Pass neither `-b` nor `-w` unless set explicitly (config-file tests).
    pub fn no_defaults(mut self) -> Self {
        self.defaults = false;
        self
    }

    /// This test's scratch directory (also the server's working directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `name` in the scratch directory and returns its path.
    pub fn file(self, name: &str, contents: &str) -> (Self, PathBuf) {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).expect("write fixture file");
        (self, p)
    }

    /// Runs the binary as `program args… <spillway> <its arguments>`: for a launcher that
    /// prepares inherited file descriptors or the environment and then execs the binary
    /// (keeping its pid, as systemd socket activation requires).
    pub fn wrap<I, S>(mut self, program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    fn command(&self) -> (Command, usize) {
        let mut cmd = match &self.wrapper {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_spillway"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_spillway")),
        };
        let mut listeners = self.binds.len();
        if self.defaults {
            if self.binds.is_empty() {
                cmd.args(["-b", "127.0.0.1:0"]);
                listeners = 1;
            }
            cmd.args(["-w", self.workers.as_deref().unwrap_or("1")]);
            // Tests stop their server on drop: no load balancer needs the drain delay,
            // unless a test asks for one (a later flag wins in clap: it is given first).
            if !self.args.iter().any(|a| a == "--drain-delay") {
                cmd.args(["--drain-delay", "0"]);
            }
        } else if let Some(w) = &self.workers {
            cmd.args(["-w", w]);
        }
        for b in &self.binds {
            cmd.args(["-b", b]);
        }
        cmd.args(&self.args);
        if let Some(app) = &self.app {
            cmd.arg(app);
        }
        // The test runner's environment must not leak into the server's configuration.
        for (k, _) in std::env::vars_os() {
            let ks = k.to_string_lossy();
            if ks.starts_with("SPILLWAY_")
                || ks == "VIRTUAL_ENV"
                || ks == "PYTHONPATH"
                || ks == "PYTHONHOME"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env("TEST_DIR", &self.dir);
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        (cmd, listeners)
    }

    /// Starts the server and waits until every listener is logged.
    /// Serves the admin endpoint on a free loopback port; `start` then waits until it is
    /// bound (it binds after the client listeners), and `Server::admin` returns the port.
    pub fn with_admin(mut self) -> Self {
        let port = free_port();
        self.args.push("--admin".into());
        self.args.push(format!("127.0.0.1:{port}").into());
        self.admin = Some(port);
        self
    }

    pub fn start(self) -> Server {
        let admin = self.admin;
        let (mut srv, want) = self.spawn_inner();
        srv.admin = admin;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let stderr = srv.stderr();
            srv.listeners = parse_listeners(&stderr);
            // The admin endpoint logs its line after binding.
            let admin_ready = srv.admin.is_none() || stderr.contains("admin endpoint");
            if srv.listeners.len() >= want.max(1) && admin_ready {
                break;
            }
            if let Ok(Some(st)) = srv.child.try_wait() {
                panic!(
                    "server exited ({st}) before listening\ncommand: {}\nstderr:\n{}",
                    srv.desc,
                    srv.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "server did not log {want} listener(s) within {START_TIMEOUT:?}\ncommand: {}\nstderr:\n{}",
                    srv.desc,
                    srv.stderr()
                );
            }
            srv.output.wait_change(Duration::from_millis(200));
        }
        srv
    }

    /// Starts the server without waiting for anything (`listeners` is empty: set it, or
    /// wait for the server in the test).
    pub fn spawn(self) -> Server {
        self.spawn_inner().0
    }

    fn spawn_inner(self) -> (Server, usize) {
        let (mut cmd, want) = self.command();
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
        let output = Arc::new(Captured::default());
        let t1 = capture(child.stderr.take().unwrap(), output.clone(), true);
        let t2 = capture(child.stdout.take().unwrap(), output.clone(), false);
        let srv = Server {
            pid: child.id(),
            child,
            output,
            listeners: Vec::new(),
            admin: None,
            dir: self.dir,
            desc,
            threads: vec![t1, t2],
        };
        (srv, want)
    }

    /// Runs the process to its exit (bounded) and returns what it printed.
    pub fn run(self) -> Finished {
        let (mut cmd, _) = self.command();
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
        let output = Arc::new(Captured::default());
        let t1 = capture(child.stderr.take().unwrap(), output.clone(), true);
        let t2 = capture(child.stdout.take().unwrap(), output.clone(), false);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= deadline {
                kill_group(child.id(), "KILL");
                let _ = child.wait();
                panic!(
                    "{desc} did not exit within 60 s\nstderr:\n{}",
                    output.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Reap leftovers (workers) that might hold the pipes open.
        kill_group(child.id(), "KILL");
        let _ = t1.join();
        let _ = t2.join();
        Finished {
            status,
            stdout: output.stdout(),
            stderr: output.stderr(),
            desc,
        }
    }
}

/// What an exited process printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub desc: String,
}

impl Finished {
    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc, self.status, self.stdout, self.stderr
        )
    }
}

/// What a child process wrote, stderr and stdout apart, filled by [`capture`] threads.
#[derive(Default)]
pub struct Captured {
    text: Mutex<(String, String)>,
    changed: Condvar,
}

impl Captured {
    /// Standard error so far.
    pub fn stderr(&self) -> String {
        self.text.lock().unwrap().0.clone()
    }
    /// Standard output so far.
    pub fn stdout(&self) -> String {
        self.text.lock().unwrap().1.clone()
    }
    /// Waits up to `d` for more output.
    pub fn wait_change(&self, d: Duration) {
        let g = self.text.lock().unwrap();
        let _ = self.changed.wait_timeout(g, d).unwrap();
    }
}

/// Copies a child's pipe into `into`, line by line, on a thread of its own.
pub fn capture(
    pipe: impl Read + Send + 'static,
    into: Arc<Captured>,
    is_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = Vec::new();
        // Bounded by the pipe: it ends when every process holding it has exited.
        while let Ok(n) = r.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let s = String::from_utf8_lossy(&line);
            {
                let mut g = into.text.lock().unwrap();
                if is_stderr {
                    g.0.push_str(&s);
                } else {
                    g.1.push_str(&s);
                }
            }
            into.changed.notify_all();
            line.clear();
        }
    })
}

/// Where the server listens, as parsed from its `listening … listener=ADDR` log lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Listener {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

fn parse_listeners(stderr: &str) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("listening")) {
        // `listener=ADDR` in text logs, `"listener":"ADDR"` in JSON ones.
        let Some((i, key)) = ["listener=", "\"listener\":"]
            .iter()
            .find_map(|k| line.find(k).map(|i| (i, k.len())))
        else {
            continue;
        };
        let v = &line[i + key..];
        let v = v.trim_start_matches('"');
        let end = v
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(v.len());
        let v = &v[..end];
        let l = if let Some(p) = v.strip_prefix("unix:") {
            Listener::Unix(PathBuf::from(p))
        } else if let Ok(a) = v.parse() {
            Listener::Tcp(a)
        } else {
            continue;
        };
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

fn kill_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A running server; stopped (SIGTERM, then SIGKILL, whole process group) on drop.
pub struct Server {
    child: Child,
    pub pid: u32,
    output: Arc<Captured>,
    pub listeners: Vec<Listener>,
    admin: Option<u16>,
    dir: PathBuf,
    desc: String,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The admin endpoint's port (the builder must have used `with_admin`).
    pub fn admin(&self) -> u16 {
        self.admin.expect("server started without with_admin()")
    }

    /// The first TCP listener.
    pub fn addr(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find_map(|l| match l {
                Listener::Tcp(a) => Some(*a),
                Listener::Unix(_) => None,
            })
            .expect("server has no TCP listener")
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new connection to the first TCP listener, with read/write timeouts set.
    pub fn connect(&self) -> Conn {
        let s = TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.addr()));
        s.set_nodelay(true).unwrap();
        Conn::tcp(s)
    }

    /// A new connection to a unix-socket listener.
    pub fn connect_unix(&self, path: &Path) -> Conn {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path:?}: {e}"));
        Conn::unix(s)
    }

    /// `GET target` on a new connection.
    pub fn get(&self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    /// `POST target` with a body on a new connection.
    pub fn post(&self, target: &str, content_type: &str, body: &[u8]) -> Response {
        self.request("POST", target, &[("Content-Type", content_type)], body)
    }

    /// Any request on a new connection (Host and, when there is a body, Content-Length
    /// are added).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.connect().request(method, target, headers, body)
    }

    /// Sends `bytes` as-is on a new connection and reads one response.
    pub fn raw(&self, bytes: &[u8]) -> Response {
        let mut c = self.connect();
        c.send(bytes);
        c.read_response()
    }

    /// Sends `bytes` as-is and returns everything received until the server closes.
    pub fn raw_until_close(&self, bytes: &[u8]) -> Vec<u8> {
        let mut c = self.connect();
        c.send(bytes);
        c.read_to_close().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Everything the server (front and workers) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.output.stderr()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.output.stdout()
    }

    /// Whether `needle` shows up in stderr within 10 s (logs may trail the response).
    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.wait_output(Duration::from_secs(10), |e, _| e.contains(needle))
    }

    /// Waits (bounded) until `pred(stderr, stdout)` holds.
    pub fn wait_output(&self, timeout: Duration, mut pred: impl FnMut(&str, &str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stderr(), &self.stdout()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.output.wait_change(Duration::from_millis(100));
        }
    }

    /// The stderr lines containing `needle`.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` (`HUP`, `TERM`, `QUIT`, …) to the front process only.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} {} failed: {st}", self.pid);
    }

    /// Waits (bounded) for the front process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A short report for assertion messages.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "command: {}\n--- server stderr ---\n{}",
            self.desc,
            self.stderr()
        );
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The front first, so it can stop its workers itself; then whatever is left. Not if
        // it was already reaped (a test waited for its exit): its pid may be reused.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &self.pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(self.pid, "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
        for l in &self.listeners {
            if let Listener::Unix(p) = l {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Peak resident memory of a process in KiB (`VmHWM`), if it can be read.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
