//! The front: owns every listening socket and client connection, parses HTTP, admits
//! requests into one fair queue, dispatches each request to a worker process over frames,
//! and supervises those workers. It never links Python.

mod access_log;
mod admin;
mod admission;
mod agent;
pub mod config;
mod devreload;
mod http;
mod listener;
mod monitor;
pub mod proxy_protocol;
mod state;
mod supervisor;
pub mod systemd;
pub mod trusted;
mod worker;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::HeaderValue;
use bytes::Bytes;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};

pub use config::{AccessLog, BindAddr, ServerConfig, StateNotifier, WorkerCommand};
pub use devreload::roots_for as reload_roots;
pub use listener::somaxconn;

use crate::access_log::AccessLogger;
use crate::admission::{Pool, QueueLimits};
use crate::http::{Front, Peer};
use crate::listener::Listener;
use crate::monitor::{MonitorPolicy, Observed, Watched};
use crate::state::ServerState;
use crate::supervisor::{Policy, SlotEvent, Supervisor};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The application failed to import at start (the traceback is in the log above).
    #[error("could not load APP '{0}' (see the traceback above)")]
    AppLoad(String),
    /// Workers could not be started at all.
    #[error("could not start workers: {0}")]
    WorkerStart(String),
    /// The access log could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    /// The pid file could not be written.
    #[error("cannot write the pid file: {0}")]
    PidFile(std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Serves until SIGTERM/SIGINT (graceful) or SIGQUIT / a second signal (immediate).
/// SIGHUP (or `POST /reload` on the admin endpoint) reloads the workers.
///
/// `activated` are listening sockets passed by systemd; when there are any, they replace
/// `--bind`.
pub async fn serve(
    cfg: ServerConfig,
    activated: Vec<systemd::ActivatedSocket>,
) -> Result<(), ServerError> {
    let access_log = match &cfg.access_log {
        Some(t) => Some(AccessLogger::open(t).map_err(ServerError::AccessLog)?),
        None => None,
    };
    let mut listeners = Vec::new();
    let use_binds = activated.is_empty();
    if !use_binds {
        tracing::info!(
            sockets = activated.len(),
            "socket activation: using the sockets systemd passed; --bind is ignored"
        );
    }
    for sock in activated {
        listeners.push(
            listener::from_activated(sock).map_err(|source| ServerError::Bind {
                addr: "socket from systemd".into(),
                source,
            })?,
        );
    }
    for addr in cfg.binds.iter().filter(|_| use_binds) {
        let l = listener::bind(addr, cfg.backlog).map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        listeners.push(l);
    }
    let admin = match &cfg.admin {
        Some(addr) => Some(
            listener::bind(addr, 128).map_err(|source| ServerError::Bind {
                addr: format!("admin {addr}"),
                source,
            })?,
        ),
        None => None,
    };
    let agent = match cfg.agent_check {
        Some(addr) => Some(
            listener::bind(&BindAddr::Tcp(addr), 128)
                .map_err(|source| ServerError::Bind {
                    addr: format!("agent-check {addr}"),
                    source,
                })?
                .0,
        ),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let mut quit = signal(SignalKind::quit()).map_err(ServerError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ServerError::Signals)?;
    let pid_file = match &cfg.pid_file {
        Some(p) => Some(PidFile::create(p).map_err(ServerError::PidFile)?),
        None => None,
    };

    let pool = Pool::new(QueueLimits {
        max_queue: cfg.max_queue,
        queue_timeout: cfg.queue_timeout,
    });
    let keep_alive_value = HeaderValue::from_str(&format!("timeout={}", cfg.keep_alive.as_secs()))
        .unwrap_or(HeaderValue::from_static("timeout=75"));
    let front = Arc::new(Front {
        cfg: cfg.clone(),
        pool: pool.clone(),
        access_log,
        keep_alive_value,
    });
    let (drain_tx, drain_rx) = watch::channel(false);
    let conns = Arc::new(ConnCount {
        open: AtomicUsize::new(0),
        max: cfg.max_connections,
        below_low_water: Notify::new(),
    });
    // Accept from the first moment: requests wait in the queue until workers are ready.
    let mut accept_tasks = Vec::new();
    let mut watched = Vec::new();
    for (l, name) in listeners {
        if let Listener::Tcp(t) = &l {
            watched.push(Watched {
                name: name.clone(),
                fd: t.as_raw_fd(),
            });
        }
        accept_tasks.push(tokio::spawn(accept_loop(
            l,
            name,
            front.clone(),
            drain_rx.clone(),
            conns.clone(),
        )));
    }

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let sup = Supervisor::new(pool.clone(), Policy::from_config(&cfg), cfg.workers, ev_tx);
    let observed = Arc::new(Observed::default());
    let monitor = tokio::spawn(monitor::run(
        watched,
        pool.clone(),
        sup.clone(),
        MonitorPolicy {
            max_worker_memory: cfg.max_worker_memory,
            graceful_timeout: cfg.graceful_timeout,
        },
        observed.clone(),
    ));
    let state = Arc::new(ServerState {
        pool: pool.clone(),
        sup: sup.clone(),
        observed,
        connections: conns.clone(),
        draining: AtomicBool::new(false),
        threads: cfg.threads,
    });
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<&'static str>();
    let mut side_tasks = Vec::new();
    if let Some((l, name)) = admin {
        tracing::info!(admin = %name, "admin endpoint: /healthz /readyz /status, POST /reload");
        side_tasks.push(tokio::spawn(admin::serve(
            l,
            state.clone(),
            reload_tx.clone(),
        )));
    }
    if let Some(Listener::Tcp(l)) = agent {
        side_tasks.push(tokio::spawn(agent::serve(l, state.clone())));
    }
    if !cfg.reload_roots.is_empty() {
        side_tasks.push(tokio::spawn(devreload::watch(
            cfg.reload_roots.clone(),
            reload_tx.clone(),
        )));
    }
    let mut slots = Vec::new();
    for i in 0..cfg.workers {
        slots.push(tokio::spawn(sup.clone().run_slot(i)));
    }

    // Start-up: every worker must import the application once, or we stop.
    let mut ready = 0;
    let mut start_failures = 0;
    let started = Instant::now();
    while ready < cfg.workers {
        tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(SlotEvent::Ready) => ready += 1,
                Some(SlotEvent::AppLoadFailed) => {
                    sup.stop();
                    return Err(ServerError::AppLoad(cfg.app.clone()));
                }
                Some(SlotEvent::StartFailed(e)) => {
                    start_failures += 1;
                    if start_failures >= 3 * cfg.workers {
                        sup.stop();
                        return Err(ServerError::WorkerStart(e));
                    }
                }
                None => return Err(ServerError::WorkerStart("supervisor stopped".into())),
            },
            _ = term.recv() => { sup.stop(); return Ok(()); }
            _ = int.recv() => { sup.stop(); return Ok(()); }
            _ = quit.recv() => { sup.stop(); sup.kill_all(); return Ok(()); }
        }
    }
    tracing::info!(
        app = %cfg.app,
        workers = cfg.workers,
        threads = cfg.threads,
        generation = sup.generation(),
        startup_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    let notifier = cfg.notify.clone();
    notifier.notify(&format!(
        "READY=1\nSTATUS=serving {} with {} workers",
        cfg.app, cfg.workers
    ));
    // Later slot events (restarts) are logged by the supervisor itself.
    tokio::spawn(async move { while ev_rx.recv().await.is_some() {} });

    let why = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading workers");
                spawn_reload(&sup, &notifier);
            }
            Some(source) = reload_rx.recv() => {
                tracing::info!(source, "reloading workers");
                spawn_reload(&sup, &notifier);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: stopping at once");
                sup.stop();
                sup.kill_all();
                return Ok(());
            }
        }
    };

    // Draining: health checks and the agent-check turn at once, but everything keeps
    // serving (new connections too) for --drain-delay, so a load balancer stops routing
    // here before anything closes.
    state.draining.store(true, Ordering::Release);
    notifier.notify("STOPPING=1\nSTATUS=draining");
    tracing::info!(
        signal = why,
        drain_delay_s = cfg.drain_delay.as_secs(),
        graceful_timeout_s = cfg.graceful_timeout.as_secs(),
        "shutting down: readiness is off; still serving during the drain delay"
    );
    let immediate = tokio::select! {
        _ = tokio::time::sleep(cfg.drain_delay) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
        _ = quit.recv() => true,
    };
    if immediate {
        tracing::warn!("second signal: stopping at once");
        sup.stop();
        sup.kill_all();
        return Ok(());
    }
    tracing::info!(
        in_flight = sup.in_flight(),
        "closing listeners; finishing requests in flight"
    );
    for t in &accept_tasks {
        t.abort();
    }
    for b in cfg.binds.iter().filter(|_| use_binds) {
        if let BindAddr::Unix(p) = b {
            let _ = std::fs::remove_file(p);
        }
    }
    let _ = drain_tx.send(true);
    let deadline = Instant::now() + cfg.graceful_timeout;
    let drained = async {
        while sup.in_flight() > 0 || pool.queue_state().0 > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = drained => {}
        _ = tokio::time::sleep_until(deadline.into()) => {
            tracing::warn!(in_flight = sup.in_flight(), "graceful timeout reached; stopping with requests in flight");
        }
        _ = term.recv() => tracing::warn!("second signal: stopping at once"),
        _ = int.recv() => tracing::warn!("second signal: stopping at once"),
        _ = quit.recv() => tracing::warn!("SIGQUIT: stopping at once"),
    }
    monitor.abort();
    for t in &side_tasks {
        t.abort();
    }
    pool.close();
    sup.stop();
    let all_exited = async {
        for s in slots {
            let _ = s.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), all_exited)
        .await
        .is_err()
    {
        sup.kill_all();
    }
    // Idle connections got their close; give in-flight responses a moment to flush.
    let flush_deadline = Instant::now() + Duration::from_secs(2);
    while conns.open.load(Ordering::Acquire) > 0 && Instant::now() < flush_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(pid_file);
    tracing::info!("stopped");
    Ok(())
}

fn spawn_reload(sup: &Arc<Supervisor>, notifier: &StateNotifier) {
    let sup = sup.clone();
    let notifier = notifier.clone();
    notifier.notify("RELOADING=1\nSTATUS=reloading");
    tokio::spawn(async move {
        let status = match sup.clone().reload().await {
            Ok(g) => format!("READY=1\nSTATUS=serving generation {g}"),
            Err(_) => format!(
                "READY=1\nSTATUS=reload failed; generation {} serving",
                sup.generation()
            ),
        };
        notifier.notify(&status);
    });
}

/// The pid file: written at start, removed at exit.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn create(path: &std::path::Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Open client connections against `--max-connections`.
pub(crate) struct ConnCount {
    pub(crate) open: AtomicUsize,
    max: usize,
    below_low_water: Notify,
}

impl ConnCount {
    /// Accepting resumes below 90% of the limit, so the front does not flap at the edge.
    fn low_water(&self) -> usize {
        self.max - self.max / 10
    }
}

/// One open connection; dropping it frees its place.
struct ConnSlot(Arc<ConnCount>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let before = self.0.open.fetch_sub(1, Ordering::AcqRel);
        if before - 1 < self.0.low_water() {
            self.0.below_low_water.notify_waiters();
        }
    }
}

async fn accept_loop(
    l: Listener,
    name: String,
    front: Arc<Front>,
    draining: watch::Receiver<bool>,
    conns: Arc<ConnCount>,
) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        if conns.open.load(Ordering::Acquire) >= conns.max {
            // Past the limit the kernel queue holds new connections (up to the backlog);
            // say so once per episode, not once per connection.
            let since = Instant::now();
            tracing::warn!(
                listener = %name,
                open = conns.open.load(Ordering::Acquire),
                max_connections = conns.max,
                "connection limit reached: not accepting; new connections wait in the kernel accept queue"
            );
            loop {
                let notified = conns.below_low_water.notified();
                if conns.open.load(Ordering::Acquire) < conns.low_water() {
                    break;
                }
                notified.await;
            }
            tracing::info!(
                listener = %name,
                open = conns.open.load(Ordering::Acquire),
                paused_ms = since.elapsed().as_millis() as u64,
                "accepting again"
            );
        }
        conns.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnSlot(conns.clone());
        let accepted = match &l {
            Listener::Tcp(t) => t.accept().await.map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                let local = s.local_addr().ok();
                let p = Peer {
                    ip: Some(peer.ip()),
                    remote_addr: Bytes::from(peer.ip().to_string()),
                    remote_port: Bytes::from(peer.port().to_string()),
                    server_name: Bytes::from(
                        local.map_or_else(String::new, |a| a.ip().to_string()),
                    ),
                    server_port: Bytes::from(
                        local.map_or_else(String::new, |a| a.port().to_string()),
                    ),
                    label: peer.to_string(),
                };
                tokio::spawn(http::serve_connection(
                    s,
                    p,
                    front.clone(),
                    draining.clone(),
                    slot,
                ));
            }),
            Listener::Unix(u) => u.accept().await.map(|(s, _)| {
                let p = Peer {
                    ip: None,
                    remote_addr: Bytes::new(),
                    remote_port: Bytes::new(),
                    server_name: Bytes::from(name.trim_start_matches("unix:").to_owned()),
                    server_port: Bytes::new(),
                    label: name.clone(),
                };
                tokio::spawn(http::serve_connection(
                    s,
                    p,
                    front.clone(),
                    draining.clone(),
                    slot,
                ));
            }),
        };
        if let Err(e) = accepted {
            // EMFILE and friends: the connection stays in the kernel queue; say so at most
            // once a second and retry shortly instead of spinning.
            if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                tracing::warn!(listener = %name, error = %e, "accept failed; retrying");
                last_error_log = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
