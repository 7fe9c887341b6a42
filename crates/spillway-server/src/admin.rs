//! The admin endpoint (`--admin`): `/healthz` (the process answers), `/readyz` (200 only
//! with a worker in service and not draining: what a load balancer's health check should
//! ask), `/status` (JSON: generation, workers, queue, connections, kernel accept queues),
//! `/metrics` (Prometheus) and `POST /reload` (same as SIGHUP). Kept off the client listeners so it can be bound
//! to loopback or a unix socket only.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::listener::Listener;
use crate::state::ServerState;

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
    state: Arc<ServerState>,
    reload: crate::server::Controller,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
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
            crate::exposition::CONTENT_TYPE,
            crate::exposition::render(&state),
        ),
        (&Method::POST, "/reload") => {
            reload.send(crate::server::Control::Reload("admin endpoint"));
            reply(StatusCode::ACCEPTED, text, "reload started\n")
        }
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
    state: Arc<ServerState>,
    reload: crate::server::Controller,
) {
    let svc = service_fn(move |req| handle(req, state.clone(), reload.clone()));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(s), svc)
        .await;
}

/// Serves the admin endpoint forever.
pub(crate) async fn serve(
    listener: Listener,
    state: Arc<ServerState>,
    reload: crate::server::Controller,
) {
    loop {
        match &listener {
            Listener::Tcp(t) => {
                if let Ok((s, _)) = t.accept().await {
                    tokio::spawn(serve_conn(s, state.clone(), reload.clone()));
                    continue;
                }
            }
            Listener::Unix(u) => {
                if let Ok((s, _)) = u.accept().await {
                    tokio::spawn(serve_conn(s, state.clone(), reload.clone()));
                    continue;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
