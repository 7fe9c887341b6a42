//! A front started in this test process, with the fake worker (the crate's
//! `spillway-fake-worker` binary) as its workers: the front's behaviour, without Python.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use spillway_server::systemd::{ActivatedSocket, SocketKind};
use spillway_server::trusted::TrustedProxies;
use spillway_server::{Control, Controller, ServerConfig, StateNotifier, WorkerCommand};
use spillway_testkit::{eventually, Conn, Response};

/// A running front; stopped at once when dropped.
pub struct Front {
    pub addr: SocketAddr,
    /// Where the fake worker leaves its marks.
    pub dir: PathBuf,
    controller: Controller,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// A configuration with test-friendly defaults: one worker, two threads, no drain delay.
pub fn config() -> ServerConfig {
    ServerConfig {
        app: "fake".into(),
        binds: Vec::new(),
        workers: 1,
        threads: spillway_server::Threads {
            min: 2,
            max: 2,
            pinned: Some(2),
        },
        backlog: 128,
        keep_alive: Duration::from_secs(30),
        header_timeout: Duration::from_secs(5),
        body_buffer: 16 << 20,
        body_timeout: Duration::from_secs(60),
        body_min_rate: 1024,
        access_log_format: spillway_server::AccessLogFormat::Default,
        tls: None,
        http: spillway_server::HttpVersions::Auto,
        http2_max_streams: 100,
        server_timing: spillway_server::ServerTiming::Trusted,
        limit_request_line: 4094,
        limit_request_fields: 100,
        limit_request_field_size: 8190,
        root_path: String::new(),
        access_log: None,
        graceful_timeout: Duration::from_secs(10),
        worker_command: WorkerCommand {
            program: env!("CARGO_BIN_EXE_spillway-fake-worker").into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
        },
        max_queue: 64,
        queue_timeout: Duration::from_secs(10),
        max_connections: 1000,
        timeout: Duration::from_secs(10),
        max_requests: 0,
        max_requests_jitter: 0,
        max_worker_memory: None,
        admin: None,
        admin_hosts: Vec::new(),
        agent_check: None,
        drain_delay: Duration::ZERO,
        pid_file: None,
        proxy_protocol: false,
        forwarded_allow_ips: TrustedProxies::parse("127.0.0.1").expect("valid"),
        reload_roots: Vec::new(),
        notify: StateNotifier::none(),
    }
}

fn scratch_dir() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "front-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

impl Front {
    /// Starts a front with `cfg` (its binds are replaced by one loopback listener) and
    /// waits until its workers answer.
    pub fn start(mut cfg: ServerConfig) -> Front {
        let dir = scratch_dir();
        let threads = cfg.threads.pinned.unwrap_or(2).to_string();
        cfg.worker_command
            .env
            .push(("FAKE_DIR".into(), dir.clone().into()));
        cfg.worker_command
            .env
            .push(("FAKE_THREADS".into(), threads.into()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let socket = ActivatedSocket {
            fd: OwnedFd::from(listener),
            name: None,
            kind: SocketKind::Tcp,
        };
        let (controller, controls) = spillway_server::controller();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(spillway_server::serve_with(
                cfg,
                vec![socket],
                Some(controls),
            ))
            .map_err(|e| e.to_string())
        });
        let front = Front {
            addr,
            dir,
            controller,
            thread: Some(thread),
        };
        assert!(
            eventually(Duration::from_secs(20), || front
                .try_get("/hello")
                .is_ok_and(|r| r.status == 200)),
            "the front with its fake worker never answered"
        );
        front
    }

    /// A new connection.
    pub fn connect(&self) -> Conn {
        let s = std::net::TcpStream::connect(self.addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Conn::tcp(s)
    }

    fn try_get(&self, path: &str) -> Result<Response, String> {
        let s = std::net::TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        let mut c = Conn::tcp(s);
        c.send_request("GET", path, &[], b"");
        c.try_read_response()
    }

    /// `GET path` on a new connection.
    pub fn get(&self, path: &str) -> Response {
        self.connect().get(path)
    }

    /// Whether the fake worker left the mark `name` (bounded wait).
    pub fn marked(&self, name: &str) -> bool {
        eventually(Duration::from_secs(10), || self.dir.join(name).exists())
    }

    /// Asks the front for `c`.
    pub fn control(&self, c: Control) {
        assert!(self.controller.send(c), "the front is gone");
    }

    /// Waits for the front to stop; its result.
    pub fn join(mut self) -> Result<(), String> {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .unwrap_or_else(|_| Err("the front panicked".into()))
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.controller.send(Control::Quit("test over"));
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
