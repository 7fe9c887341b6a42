//! Listeners: the listening sockets (bound with an explicit backlog, or passed by systemd)
//! and the accept loop that takes every connection at once and hands it to `http`.

pub mod accept;
pub mod listener;
