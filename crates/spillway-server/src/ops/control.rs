//! The control handle: how the admin endpoint, `--reload` and an embedder ask the running
//! server to reload or stop. Its own module, so that the parts that send controls and the
//! server that obeys them do not import each other.

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

impl Controls {
    /// The next control; `None` once every controller is gone.
    pub(crate) async fn recv(&mut self) -> Option<Control> {
        self.0.recv().await
    }
}

/// A controller and the controls it sends to.
pub fn controller() -> (Controller, Controls) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Controller(tx), Controls(rx))
}
