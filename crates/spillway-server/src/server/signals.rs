//! What the operator asks the server to do, from wherever it comes: signals (SIGTERM,
//! SIGINT, SIGQUIT, SIGHUP), the admin endpoint and `--reload` (a reload), or an embedder's
//! [`Controller`]. Each becomes one [`Control`] value, read in one place.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::ops::control::{controller, Control, Controller, Controls};

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
                Some(c) => match c.recv().await {
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
            Some(c) = self.requests.recv() => c,
            c = external => c,
        }
    }
}
