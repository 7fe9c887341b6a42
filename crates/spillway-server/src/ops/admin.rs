//! The admin endpoint (`--admin`): `/healthz` (the process answers), `/readyz` (200 only
//! with a worker in service and not draining: what a load balancer's health check should
//! ask), `/status` (JSON: generation, workers, queue, connections, kernel accept queues),
//! `/metrics` (Prometheus) and `POST /reload` (same as SIGHUP). Kept off the client
//! listeners so it can be bound to loopback or a unix socket only.
//!
//! Loopback is reachable from any web page a local browser shows, so the endpoint guards
//! itself (see [`guard`]): `/status`, `/metrics` and `/reload` answer only requests whose
//! `Host` is an address, a localhost name, this machine's host name or a name in
//! `--admin-hosts` (DNS rebinding), and `POST /reload` refuses what a cross-site page can
//! send. Connections are few and short: at most [`MAX_CONNECTIONS`], and one idle or
//! sending its head for [`HEAD_TIMEOUT`] is closed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::listeners::listener::Listener;
use crate::ops::control::{Control, Controller};
use crate::ops::state::ServerState;
use crate::telemetry::throttle::Throttle;

mod guard;

/// Admin connections open at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 32;
/// A connection that takes longer to send a request head, or stays idle between
/// requests longer, is closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is asked to close (after its response) once this old.
const MAX_LIFETIME: Duration = Duration::from_secs(60);

static OVER_LIMIT_LOG: Throttle = Throttle::new(Duration::from_secs(10));
static REFUSED_HOST_LOG: Throttle = Throttle::new(Duration::from_secs(10));

/// What the admin endpoint's connections share.
struct Admin {
    state: Arc<ServerState>,
    reload: Controller,
    /// Names besides addresses and localhost that `Host` may carry (`--admin-hosts` and
    /// this machine's host name).
    hosts: Vec<String>,
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    admin: Arc<Admin>,
    tcp: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    let path = req.uri().path();
    if matches!(path, "/status" | "/metrics" | "/reload") && tcp {
        if let Err(why) = guard::host(req.headers(), &admin.hosts) {
            if let Some(suppressed) = REFUSED_HOST_LOG.allow() {
                let host = req.headers().get(http::header::HOST);
                tracing::warn!(path, host = ?host, suppressed, "admin endpoint: request for a host name not in --admin-hosts refused (403)");
            }
            return Ok(reply(StatusCode::FORBIDDEN, text, why));
        }
    }
    let state = &admin.state;
    Ok(match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => reply(StatusCode::OK, text, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if state.ready() {
                reply(StatusCode::OK, text, "ready\n")
            } else if state.draining.load(std::sync::atomic::Ordering::Acquire) {
                reply(StatusCode::SERVICE_UNAVAILABLE, text, "draining\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, text, "no worker ready\n")
            }
        }
        (&Method::GET | &Method::HEAD, "/status") => {
            let mut body = state.status_json().to_string();
            body.push('\n');
            reply(StatusCode::OK, "application/json", body)
        }
        (&Method::GET | &Method::HEAD, "/metrics") => reply(
            StatusCode::OK,
            crate::ops::exposition::CONTENT_TYPE,
            crate::ops::exposition::render(state),
        ),
        (&Method::POST, "/reload") => match guard::same_site(req.headers(), &admin.hosts) {
            Ok(()) => {
                admin.reload.send(Control::Reload("admin endpoint"));
                reply(StatusCode::ACCEPTED, text, "reload requested\n")
            }
            Err(why) => {
                tracing::warn!(
                    reason = why.trim_end(),
                    "admin endpoint: POST /reload refused"
                );
                reply(StatusCode::FORBIDDEN, text, why)
            }
        },
        (_, "/healthz" | "/readyz" | "/status" | "/metrics" | "/reload") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, text, "method not allowed\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /healthz, /readyz, /status, /metrics\n",
        ),
    })
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    s: S,
    admin: Arc<Admin>,
    tcp: bool,
) {
    let svc = service_fn(move |req| handle(req, admin.clone(), tcp));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper runs this timer from the moment it waits for a head, so it is also the
        // idle timeout between requests.
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(s), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(MAX_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEAD_TIMEOUT, conn).await;
        }
    }
}

/// Serves one accepted connection if there is room, else answers 503 and closes it.
fn admit<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut s: S,
    admin: &Arc<Admin>,
    room: &Arc<Semaphore>,
    tcp: bool,
) {
    match room.clone().try_acquire_owned() {
        Ok(permit) => {
            let admin = admin.clone();
            tokio::spawn(async move {
                serve_conn(s, admin, tcp).await;
                drop(permit);
            });
        }
        Err(_) => {
            if let Some(suppressed) = OVER_LIMIT_LOG.allow() {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    suppressed,
                    "admin endpoint: too many connections; refusing more with 503"
                );
            }
            tokio::spawn(async move {
                let busy = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                let _ = tokio::time::timeout(HEAD_TIMEOUT, s.write_all(busy)).await;
                let _ = s.shutdown().await;
            });
        }
    }
}

/// Serves the admin endpoint forever; `hosts` are the names `Host` may carry besides
/// addresses and localhost.
pub(crate) async fn serve(
    listener: Listener,
    state: Arc<ServerState>,
    reload: Controller,
    hosts: Vec<String>,
) {
    let admin = Arc::new(Admin {
        state,
        reload,
        hosts: hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .chain(guard::own_hostname())
            .collect(),
    });
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = match &listener {
            Listener::Tcp(t) => t.accept().await.map(|(s, _)| admit(s, &admin, &room, true)),
            Listener::Unix(u) => u
                .accept()
                .await
                .map(|(s, _)| admit(s, &admin, &room, false)),
        };
        if accepted.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
