//! What the front asks of its host: systemd (socket activation, readiness notification),
//! the open-files limit, and the pid file.

pub mod fdlimit;
pub mod pidfile;
pub mod systemd;
