//! Accepting connections: always and at once, up to `--max-connections` (Python's
//! availability never gates `accept()`); past the limit the kernel queue holds new
//! connections, which is said once per episode, and accepting resumes below 90%.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::http::conn::{serve_connection, serve_tls_connection, Front};
use crate::http::request::Peer;
use crate::http::tls::TlsState;
use crate::listeners::listener::Listener;

/// Open client connections against `--max-connections`.
pub(crate) struct ConnCount {
    open: AtomicUsize,
    max: usize,
    /// Signalled when the count falls below the low-water mark, and when it reaches 0.
    changed: Notify,
}

impl ConnCount {
    /// A count with room for `max` connections.
    pub fn new(max: usize) -> Arc<ConnCount> {
        Arc::new(ConnCount {
            open: AtomicUsize::new(0),
            max,
            changed: Notify::new(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Accepting resumes below 90% of the limit, so the front does not flap at the edge.
    fn low_water(&self) -> usize {
        self.max - self.max / 10
    }

    /// Waits until every connection has closed.
    pub async fn all_closed(&self) {
        loop {
            let changed = self.changed.notified();
            if self.open() == 0 {
                return;
            }
            changed.await;
        }
    }

    async fn below_low_water(&self) {
        loop {
            let changed = self.changed.notified();
            if self.open() < self.low_water() {
                return;
            }
            changed.await;
        }
    }

    fn claim(self: &Arc<Self>) -> ConnSlot {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnSlot(self.clone())
    }
}

/// One open connection; dropping it frees its place.
pub(crate) struct ConnSlot(Arc<ConnCount>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let now = self.0.open.fetch_sub(1, Ordering::AcqRel) - 1;
        if now < self.0.low_water() || now == 0 {
            self.0.changed.notify_waiters();
        }
    }
}

/// Accepts on `listener` until the task is aborted (the server drains).
pub(crate) async fn accept_loop(
    listener: Arc<Listener>,
    name: String,
    front: Arc<Front>,
    draining: watch::Receiver<bool>,
    conns: Arc<ConnCount>,
    tls: Option<Arc<TlsState>>,
) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        if conns.open() >= conns.max {
            pause(&name, &conns).await;
        }
        // The place is claimed once a connection is here, not while waiting for one: a
        // claim held across accept() counted one phantom connection per listener.
        let accepted = match &*listener {
            Listener::Tcp(t) => t.accept().await.map(|(s, addr)| {
                let slot = conns.claim();
                let _ = s.set_nodelay(true);
                let local = s.local_addr().ok();
                let peer = Peer {
                    ip: Some(addr.ip().to_canonical()),
                    remote_addr: addr.ip().to_string().into(),
                    remote_port: addr.port().to_string().into(),
                    server_name: local
                        .map_or_else(String::new, |a| a.ip().to_string())
                        .into(),
                    server_port: local
                        .map_or_else(String::new, |a| a.port().to_string())
                        .into(),
                    label: addr.to_string(),
                    tls: None,
                };
                match &tls {
                    Some(tls) => tokio::spawn(serve_tls_connection(
                        s,
                        peer,
                        front.clone(),
                        draining.clone(),
                        slot,
                        tls.clone(),
                    )),
                    None => tokio::spawn(serve_connection(
                        s,
                        peer,
                        front.clone(),
                        draining.clone(),
                        slot,
                    )),
                };
            }),
            Listener::Unix(u) => u.accept().await.map(|(s, _)| {
                let slot = conns.claim();
                let peer = Peer {
                    ip: None,
                    remote_addr: Default::default(),
                    remote_port: Default::default(),
                    server_name: name.trim_start_matches("unix:").to_owned().into(),
                    server_port: Default::default(),
                    label: name.clone(),
                    tls: None,
                };
                tokio::spawn(serve_connection(
                    s,
                    peer,
                    front.clone(),
                    draining.clone(),
                    slot,
                ));
            }),
        };
        if let (Ok(()), Some(m)) = (&accepted, &front.metrics) {
            m.connections_accepted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e) = accepted {
            // EMFILE and friends: the connection stays in the kernel queue; say so at most
            // once a second and retry shortly instead of spinning.
            if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                if crate::host::fdlimit::is_exhaustion(&e) {
                    tracing::error!(listener = %name, error = %e, open = conns.open(), "accept failed, {}; new connections wait in the kernel accept queue", crate::host::fdlimit::hint(&e));
                } else {
                    tracing::warn!(listener = %name, error = %e, "accept failed; retrying");
                }
                last_error_log = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Stops accepting until enough connections closed, saying so once per episode.
async fn pause(name: &str, conns: &ConnCount) {
    let since = Instant::now();
    tracing::warn!(
        listener = %name,
        open = conns.open(),
        max_connections = conns.max,
        "connection limit reached: not accepting; new connections wait in the kernel accept queue"
    );
    conns.below_low_water().await;
    tracing::info!(
        listener = %name,
        open = conns.open(),
        paused_ms = since.elapsed().as_millis() as u64,
        "accepting again"
    );
}
