//! The server's life in phases: bind every socket, start the workers (accepting from the
//! first moment: requests wait in the queue), wait until every worker is ready, run until
//! asked to stop (reloading on request), drain, and stop.

mod signals;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admission::dispatch::Workers;
use crate::admission::pool::{Pool, QueueLimits};
use crate::config::{BindAddr, ServerConfig, StateNotifier};
use crate::host::pidfile::{PidFile, PidFileError};
use crate::host::systemd::ActivatedSocket;
use crate::http::conn::Front;
use crate::listeners::accept::{accept_loop, ConnCount};
use crate::listeners::listener::{self, Listener};
use crate::ops::control::{Control, Controls};
use crate::ops::monitor::{self, MonitorPolicy, Observed, Watched};
use crate::ops::state::ServerState;
use crate::ops::{admin, agent, devreload};
use crate::telemetry::access_log::AccessLogger;
use crate::workers::supervisor::{Policy, SlotEvent, Supervisor};
use crate::ServerError;
use signals::Signals;

/// Serves until SIGTERM/SIGINT (graceful) or SIGQUIT / a second signal (immediate).
/// SIGHUP (or `POST /reload` on the admin endpoint) reloads the workers.
///
/// `activated` are listening sockets passed by systemd; when there are any, they replace
/// `--bind`.
pub async fn serve(cfg: ServerConfig, activated: Vec<ActivatedSocket>) -> Result<(), ServerError> {
    serve_with(cfg, activated, None).await
}

/// [`serve`], also obeying the [`Control`]s sent to `controls`.
pub async fn serve_with(
    cfg: ServerConfig,
    activated: Vec<ActivatedSocket>,
    controls: Option<Controls>,
) -> Result<(), ServerError> {
    // Signals first: once the pid file exists, a SIGTERM sent to the pid in it must stop
    // the server cleanly (and remove the file), not kill it by the default action.
    let mut signals = Signals::install(controls).map_err(ServerError::Signals)?;
    crate::host::fdlimit::raise_and_log(crate::host::fdlimit::needed(
        cfg.max_connections,
        cfg.workers,
    ));
    let bound = Bound::bind(&cfg, activated)?;
    let mut running = Running::start(cfg, bound, &signals);
    if !running.wait_ready(&mut signals).await? {
        return Ok(());
    }
    let stop = running.run(&mut signals).await;
    running.shutdown(stop, &mut signals).await;
    Ok(())
}

/// Every socket and file the server opens before it starts anything.
struct Bound {
    /// Each listener, its name, and whether it terminates TLS.
    listeners: Vec<(Listener, String, bool)>,
    tls: Option<Arc<crate::http::tls::TlsState>>,
    /// Unix socket files we created, removed when listeners close.
    unix_paths: Vec<PathBuf>,
    admin: Option<(Listener, String)>,
    agent: Option<tokio::net::TcpListener>,
    pid_file: Option<PidFile>,
    access_log: Option<AccessLogger>,
}

impl Bound {
    fn bind(cfg: &ServerConfig, activated: Vec<ActivatedSocket>) -> Result<Bound, ServerError> {
        let bind_error = |addr: String| move |error| ServerError::Bind { addr, error };
        let access_log = match &cfg.access_log {
            Some(t) => Some(
                AccessLogger::open(t, cfg.access_log_format)
                    .map_err(|e| ServerError::AccessLog(t.to_string(), e))?,
            ),
            None => None,
        };
        let mut listeners = Vec::new();
        let use_binds = activated.is_empty();
        if !use_binds {
            tracing::info!(
                sockets = activated.len(),
                "socket activation: using the sockets systemd passed; --bind only says which of them speak TLS (tls:)"
            );
        }
        let tls = match &cfg.tls {
            Some(t) => {
                let alpn: Vec<Vec<u8>> = match cfg.http {
                    crate::config::HttpVersions::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                    crate::config::HttpVersions::Http1 => vec![b"http/1.1".to_vec()],
                    crate::config::HttpVersions::Http2 => vec![b"h2".to_vec()],
                };
                Some(Arc::new(crate::http::tls::TlsState::load(t, alpn)?))
            }
            None => None,
        };
        let all_tcp = tls.as_ref().is_some_and(|t| t.all_tcp());
        if !use_binds {
            listeners = activated_listeners(cfg, activated, all_tcp)?;
        }
        let mut unix_paths = Vec::new();
        for addr in cfg.binds.iter().filter(|_| use_binds) {
            let (l, name) =
                listener::bind(addr, cfg.backlog).map_err(bind_error(addr.to_string()))?;
            let is_tls = match addr {
                BindAddr::Tls(_) => true,
                BindAddr::Tcp(_) => all_tcp,
                BindAddr::Unix(_) => false,
            };
            if is_tls {
                tracing::info!(listener = %name, "TLS on this listener");
            }
            listeners.push((l, name, is_tls));
            if let BindAddr::Unix(p) = addr {
                unix_paths.push(p.clone());
            }
        }
        let admin = match &cfg.admin {
            Some(addr) => {
                Some(listener::bind(addr, 128).map_err(bind_error(format!("admin {addr}")))?)
            }
            None => None,
        };
        let agent = match cfg.agent_check {
            Some(addr) => match listener::bind(&BindAddr::Tcp(addr), 128)
                .map_err(bind_error(format!("agent-check {addr}")))?
                .0
            {
                Listener::Tcp(l) => Some(l),
                Listener::Unix(_) => None,
            },
            None => None,
        };
        let pid_file = match &cfg.pid_file {
            Some(p) => Some(PidFile::create(p).map_err(|e| match e {
                PidFileError::Held(pid) => ServerError::PidFileHeld {
                    path: p.display().to_string(),
                    pid,
                },
                PidFileError::Io(e) => ServerError::PidFile(p.display().to_string(), e),
            })?),
            None => None,
        };
        Ok(Bound {
            listeners,
            tls,
            unix_paths,
            admin,
            agent,
            pid_file,
            access_log,
        })
    }
}

/// The sockets systemd passed, each with whether it speaks TLS: every TCP one when TLS is
/// on for all TCP listeners, else those at the address of a `tls:` bind. A `tls:` bind
/// that matches no passed socket stops the server: TLS (and `--cert-reqs`) is never
/// dropped silently.
fn activated_listeners(
    cfg: &ServerConfig,
    activated: Vec<ActivatedSocket>,
    all_tcp: bool,
) -> Result<Vec<(Listener, String, bool)>, ServerError> {
    let tls_binds: Vec<SocketAddr> = cfg
        .binds
        .iter()
        .filter_map(|b| match b {
            BindAddr::Tls(a) => Some(*a),
            _ => None,
        })
        .collect();
    let mut matched = vec![false; tls_binds.len()];
    let mut listeners = Vec::new();
    for sock in activated {
        let (l, name) = listener::from_activated(sock).map_err(|error| ServerError::Bind {
            addr: "socket from systemd".into(),
            error,
        })?;
        let local = match &l {
            Listener::Tcp(t) => t.local_addr().ok(),
            Listener::Unix(_) => None,
        };
        let mut is_tls = all_tcp && local.is_some();
        for (i, b) in tls_binds.iter().enumerate() {
            if local.is_some_and(|a| same_socket(*b, a)) {
                matched[i] = true;
                is_tls = true;
            }
        }
        if is_tls {
            tracing::info!(listener = %name, "TLS on this listener");
        }
        listeners.push((l, name, is_tls));
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        let passed: Vec<&str> = listeners.iter().map(|(_, n, _)| n.as_str()).collect();
        return Err(ServerError::ActivatedTls {
            bind: tls_binds[i],
            passed: passed.join(", "),
        });
    }
    Ok(listeners)
}

/// Whether a socket bound at `local` is the one `--bind` names as `bind` (an unspecified
/// address on either side matches any address of the same port).
fn same_socket(bind: SocketAddr, local: SocketAddr) -> bool {
    bind.port() == local.port()
        && (bind.ip() == local.ip() || bind.ip().is_unspecified() || local.ip().is_unspecified())
}

/// Why the run phase ended.
enum Stop {
    /// Drain first.
    Graceful(&'static str),
    /// Stop at once.
    Immediate,
}

/// A started server.
struct Running {
    cfg: ServerConfig,
    tls: Option<Arc<crate::http::tls::TlsState>>,
    workers: Arc<Workers>,
    front: Arc<Front>,
    sup: Arc<Supervisor>,
    state: Arc<ServerState>,
    conns: Arc<ConnCount>,
    draining: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    side_tasks: Vec<JoinHandle<()>>,
    slots: Vec<JoinHandle<()>>,
    events: mpsc::UnboundedReceiver<SlotEvent>,
    unix_paths: Vec<PathBuf>,
    pid_file: Option<PidFile>,
    started: Instant,
    /// A reload asked for before every worker was ready: it follows once they are.
    deferred_reload: Option<&'static str>,
    /// A reload is under way: more requests join it instead of queueing one each.
    reloading: Arc<AtomicBool>,
}

impl Running {
    /// Starts accepting, the monitor, the side endpoints and every worker slot.
    fn start(cfg: ServerConfig, bound: Bound, signals: &Signals) -> Running {
        let workers: Arc<Workers> = Pool::new(QueueLimits {
            max_queue: cfg.max_queue,
            queue_timeout: cfg.queue_timeout,
        });
        // Counted always (a relaxed add per event); requests are timed for the metrics only
        // when something serves them.
        let metrics = crate::telemetry::metrics::Metrics::new();
        let front = Arc::new(Front::new(
            cfg.clone(),
            workers.clone(),
            bound.access_log,
            bound.admin.is_some().then(|| metrics.clone()),
        ));
        let (draining, draining_rx) = watch::channel(false);
        let conns = ConnCount::new(cfg.max_connections);
        let mut accept_tasks = Vec::new();
        let mut watched = Vec::new();
        for (l, name, is_tls) in bound.listeners {
            let l = Arc::new(l);
            if let Listener::Tcp(_) = &*l {
                watched.push(Watched {
                    name: name.clone(),
                    listener: Arc::downgrade(&l),
                });
            }
            accept_tasks.push(tokio::spawn(accept_loop(
                l,
                name,
                front.clone(),
                draining_rx.clone(),
                conns.clone(),
                bound.tls.clone().filter(|_| is_tls),
            )));
        }
        let (ev_tx, events) = mpsc::unbounded_channel();
        let sup = Supervisor::new(
            workers.clone(),
            Policy::from_config(&cfg),
            cfg.workers,
            ev_tx,
            metrics.clone(),
        );
        let observed = Arc::new(Observed::default());
        let state = Arc::new(ServerState {
            pool: workers.clone(),
            sup: sup.clone(),
            observed: observed.clone(),
            connections: conns.clone(),
            draining: Default::default(),
            metrics: metrics.clone(),
        });
        let mut side_tasks = vec![tokio::spawn(monitor::run(
            watched,
            workers.clone(),
            sup.clone(),
            MonitorPolicy {
                max_worker_memory: cfg.max_worker_memory,
                graceful_timeout: cfg.graceful_timeout,
            },
            observed,
            metrics,
        ))];
        if let Some((l, name)) = bound.admin {
            tracing::info!(admin = %name, "admin endpoint: /healthz /readyz /status /metrics, POST /reload");
            side_tasks.push(tokio::spawn(admin::serve(
                l,
                state.clone(),
                signals.controller(),
                cfg.admin_hosts.clone(),
            )));
        }
        side_tasks.push(tokio::spawn(crate::workers::backlog::run(
            workers.clone(),
            sup.clone(),
        )));
        side_tasks.push(tokio::spawn(crate::workers::served::run(sup.clone())));
        if let Some(l) = bound.agent {
            side_tasks.push(tokio::spawn(agent::serve(l, state.clone())));
        }
        if !cfg.reload_roots.is_empty() {
            side_tasks.push(tokio::spawn(devreload::watch(
                cfg.reload_roots.clone(),
                signals.controller(),
            )));
        }
        let slots = (0..cfg.workers)
            .map(|i| tokio::spawn(sup.clone().run_slot(i)))
            .collect();
        Running {
            cfg,
            tls: bound.tls,
            workers,
            front,
            sup,
            state,
            conns,
            draining,
            accept_tasks,
            side_tasks,
            slots,
            events,
            unix_paths: bound.unix_paths,
            pid_file: bound.pid_file,
            started: Instant::now(),
            deferred_reload: None,
            reloading: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Start-up: every worker must import the application once, or we stop. False if a
    /// signal stopped the server first.
    async fn wait_ready(&mut self, signals: &mut Signals) -> Result<bool, ServerError> {
        let (mut ready, mut start_failures) = (0, 0);
        while ready < self.cfg.workers {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(SlotEvent::Ready) => ready += 1,
                    Some(SlotEvent::AppLoadFailed) => {
                        self.sup.stop();
                        return Err(ServerError::AppLoad(self.cfg.app.clone()));
                    }
                    Some(SlotEvent::StartFailed(e)) => {
                        start_failures += 1;
                        if start_failures >= 3 * self.cfg.workers {
                            self.sup.stop();
                            return Err(ServerError::WorkerStart(e));
                        }
                    }
                    None => return Err(ServerError::WorkerStart("supervisor stopped".into())),
                },
                c = signals.next() => match c {
                    Control::Reload(source) => {
                        tracing::info!(source, "reload requested during start-up; it follows once every worker is ready");
                        self.deferred_reload = Some(source);
                    }
                    Control::Stop(_) => { self.sup.stop(); return Ok(false); }
                    Control::Quit(_) => { self.sup.stop(); self.sup.kill_all(); return Ok(false); }
                },
            }
        }
        tracing::info!(
            app = %self.cfg.app,
            workers = self.cfg.workers,
            threads = %self.cfg.threads,
            generation = self.sup.generation(),
            startup_ms = self.started.elapsed().as_millis() as u64,
            "ready"
        );
        self.cfg.notify.notify(&format!(
            "READY=1\nSTATUS=serving {} with {} workers",
            self.cfg.app, self.cfg.workers
        ));
        Ok(true)
    }

    /// Serves, reloading on request, until asked to stop.
    async fn run(&mut self, signals: &mut Signals) -> Stop {
        if let Some(source) = self.deferred_reload.take() {
            self.reload(source);
        }
        loop {
            tokio::select! {
                // Later slot events (restarts) are logged by the supervisor itself.
                Some(_) = self.events.recv() => {}
                c = signals.next() => match c {
                    Control::Reload(source) => self.reload(source),
                    Control::Stop(why) => return Stop::Graceful(why),
                    Control::Quit(why) => {
                        tracing::info!(signal = why, "stopping at once");
                        return Stop::Immediate;
                    }
                },
            }
        }
    }

    /// Re-reads the TLS certificates and starts a new generation of workers.
    ///
    /// A reload asked for while one is under way joins it (the certificates are re-read
    /// all the same: that is instant), so a burst of requests starts one generation.
    fn reload(&self, source: &'static str) {
        let joins = self.reloading.swap(true, Ordering::AcqRel);
        if joins {
            tracing::info!(
                source,
                "reload requested while one is under way; it joins that one"
            );
        } else {
            tracing::info!(source, "reloading workers");
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificates re-read; new handshakes use them"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificates not reloaded; the ones in use stay")
                }
            }
        }
        if !joins {
            spawn_reload(&self.sup, &self.cfg.notify, self.reloading.clone());
        }
    }

    /// Drains (unless told to stop at once), then stops everything.
    async fn shutdown(mut self, stop: Stop, signals: &mut Signals) {
        let drained = match stop {
            Stop::Graceful(why) => self.drain(why, signals).await,
            Stop::Immediate => false,
        };
        if !drained {
            self.sup.stop();
            self.sup.kill_all();
        }
        for t in self.side_tasks.iter().chain(&self.accept_tasks) {
            t.abort();
        }
        self.workers.close();
        self.sup.stop();
        let slots = std::mem::take(&mut self.slots);
        let all_exited = async {
            for s in slots {
                let _ = s.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), all_exited)
            .await
            .is_err()
        {
            self.sup.kill_all();
        }
        if drained {
            // Idle connections got their close; give in-flight responses a moment to flush.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.conns.all_closed()).await;
        }
        if let Some(log) = &self.front.access_log {
            log.shutdown();
        }
        drop(self.pid_file.take());
        tracing::info!("stopped");
    }

    /// Readiness off and the drain delay (balancers stop routing here while everything
    /// keeps serving), then listeners close and requests in flight finish within
    /// `--graceful-timeout`. False if a second signal cut it short.
    async fn drain(&mut self, why: &'static str, signals: &mut Signals) -> bool {
        self.state.draining.store(true, Ordering::Release);
        self.cfg.notify.notify("STOPPING=1\nSTATUS=draining");
        tracing::info!(
            signal = why,
            drain_delay_s = self.cfg.drain_delay.as_secs(),
            graceful_timeout_s = self.cfg.graceful_timeout.as_secs(),
            "shutting down: readiness is off; still serving during the drain delay"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.drain_delay) => {}
            c = next_stop(signals) => {
                tracing::warn!(signal = c, "second signal: stopping at once");
                return false;
            }
        }
        tracing::info!(
            in_flight = self.workers.busy(),
            "closing listeners; finishing requests in flight"
        );
        for t in &self.accept_tasks {
            t.abort();
        }
        for p in &self.unix_paths {
            let _ = std::fs::remove_file(p);
        }
        let _ = self.draining.send(true);
        let deadline = tokio::time::Instant::now() + self.cfg.graceful_timeout;
        tokio::select! {
            _ = self.workers.wait_until(|w| w.busy() == 0) => true,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(in_flight = self.workers.busy(), "graceful timeout reached; stopping with requests in flight");
                true
            }
            c = next_stop(signals) => {
                tracing::warn!(signal = c, "second signal: stopping at once");
                false
            }
        }
    }
}

/// The next request to stop; reloads while stopping are ignored.
async fn next_stop(signals: &mut Signals) -> &'static str {
    loop {
        match signals.next().await {
            Control::Stop(why) | Control::Quit(why) => return why,
            Control::Reload(source) => {
                tracing::info!(source, "reload requested while stopping; ignored")
            }
        }
    }
}

/// Starts a new generation in the background; `reloading` is cleared when it is serving
/// (or failed).
fn spawn_reload(sup: &Arc<Supervisor>, notifier: &StateNotifier, reloading: Arc<AtomicBool>) {
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
        reloading.store(false, Ordering::Release);
        notifier.notify(&status);
    });
}
