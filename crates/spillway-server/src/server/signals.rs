//! What the operator asks the server to do, from wherever it comes: signals (SIGTERM,
//! SIGINT, SIGQUIT, SIGHUP), the admin endpoint and `--reload` (a reload), or an embedder's
//! [`Controller`]. Each becomes one [`Control`] value, read in one place.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// A request to the running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start a new generation of workers (SIGHUP, `POST /reload`, `--reload`); the text
    /// says where the request came from.
    Reload(&'static str),
    /// Drain, then stop (SIGTERM, SIGINT). A second one while draining stops at once.
    Stop(&'static str),
    /// Stop at once (SIGQUIT).
    Quit(&'static str),
}

/// Sends [`Control`]s to a running server: how the admin endpoint and `--reload` ask for
/// a reload, and how an embedder (or a test) drives a server without signals.
#[derive(Debug, Clone)]
pub struct Controller(mpsc::UnboundedSender<Control>);

impl Controller {
    /// Asks the server for `c`; false if the server is gone.
    pub fn send(&self, c: Control) -> bool {
        self.0.send(c).is_ok()
    }
}

/// The receiving end of a [`Controller`], handed to [`crate::serve_with`].
#[derive(Debug)]
pub struct Controls(mpsc::UnboundedReceiver<Control>);

/// A controller and the controls it sends to.
pub fn controller() -> (Controller, Controls) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Controller(tx), Controls(rx))
}

/// Every source of [`Control`]s, merged.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    internal: Controller,
    requests: Controls,
    external: Option<Controls>,
}

impl Signals {
    /// Installs the signal handlers; `external` adds an embedder's controls.
    pub fn install(external: Option<Controls>) -> io::Result<Signals> {
        let (internal, requests) = controller();
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            internal,
            requests,
            external,
        })
    }

    /// A controller for the server's own parts (admin endpoint, `--reload`).
    pub fn controller(&self) -> Controller {
        self.internal.clone()
    }

    /// The next request, whatever its source.
    pub async fn next(&mut self) -> Control {
        let external = async {
            match self.external.as_mut() {
                Some(c) => match c.0.recv().await {
                    Some(c) => c,
                    // An embedder that drops its controller lets the server run on.
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => Control::Stop("SIGTERM"),
            _ = self.int.recv() => Control::Stop("SIGINT"),
            _ = self.quit.recv() => Control::Quit("SIGQUIT"),
            _ = self.hup.recv() => Control::Reload("SIGHUP"),
            Some(c) = self.requests.0.recv() => c,
            c = external => c,
        }
    }
}
