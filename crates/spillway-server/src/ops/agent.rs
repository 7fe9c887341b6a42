//! HAProxy's agent-check: a TCP port where each connection gets one line describing this
//! server's state (`up ready 80%`, `drain`, `maint`) and is closed. HAProxy applies the
//! weight and state to the backend server, so a draining or backlogged Spillway gets less
//! traffic without any change to HAProxy's configuration.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::ops::state::ServerState;

/// Answers agent-check connections forever.
pub(crate) async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let reply = state.agent_reply();
        tokio::spawn(async move {
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
