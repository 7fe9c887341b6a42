//! Operating the running server: the admin endpoint (health, status, `/metrics`
//! exposition, reload), HAProxy's agent-check, the server's view of its own state, the
//! once-a-second monitor, the control handle, and `--reload` for development.

pub mod admin;
pub mod agent;
pub mod control;
pub mod devreload;
pub mod exposition;
pub mod monitor;
pub mod state;
