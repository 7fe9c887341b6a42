//! Listening sockets: bound with an explicit backlog (the kernel accept queue), checked
//! against `net.core.somaxconn`, and accepted from without ever waiting for Python.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::BindAddr;

/// A bound listener of either family.
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix domain socket.
    Unix(tokio::net::UnixListener),
}

/// The kernel's cap on any listen() backlog in this network namespace.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Binds `addr` with `backlog`, logging the effective backlog (the kernel silently caps it
/// at somaxconn, which is exactly the kind of invisible limit operators trip over).
pub fn bind(addr: &BindAddr, backlog: u32) -> io::Result<(Listener, String)> {
    let cap = somaxconn();
    let effective = cap.map_or(backlog, |c| backlog.min(c));
    if effective < backlog {
        tracing::warn!(
            listener = %addr,
            requested = backlog,
            somaxconn = cap.unwrap_or(0),
            effective,
            "listen backlog capped by net.core.somaxconn; raise the sysctl to get the requested backlog"
        );
    }
    let backlog_i = i32::try_from(backlog).unwrap_or(i32::MAX);
    match addr {
        BindAddr::Tcp(sa) | BindAddr::Tls(sa) => {
            let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if sa.is_ipv6() {
                // `[::]:PORT` means IPv6 only; bind 0.0.0.0 separately for IPv4.
                socket.set_only_v6(true)?;
            }
            socket.set_tcp_nodelay(true)?;
            socket.bind(&SockAddr::from(*sa))?;
            socket.listen(backlog_i)?;
            socket.set_nonblocking(true)?;
            let std: std::net::TcpListener = socket.into();
            let local: SocketAddr = std.local_addr()?;
            tracing::info!(listener = %local, backlog, effective_backlog = effective, "listening");
            Ok((
                Listener::Tcp(tokio::net::TcpListener::from_std(std)?),
                local.to_string(),
            ))
        }
        BindAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket.listen(backlog_i)?;
            socket.set_nonblocking(true)?;
            let std: std::os::unix::net::UnixListener = socket.into();
            let name = format!("unix:{}", path.display());
            tracing::info!(listener = %name, backlog, effective_backlog = effective, "listening");
            Ok((
                Listener::Unix(tokio::net::UnixListener::from_std(std)?),
                name,
            ))
        }
    }
}

/// Adopts a listening socket passed by systemd (socket activation).
pub fn from_activated(
    sock: crate::host::systemd::ActivatedSocket,
) -> io::Result<(Listener, String)> {
    let socket = Socket::from(sock.fd);
    socket.set_nonblocking(true)?;
    match sock.kind {
        crate::host::systemd::SocketKind::Tcp => {
            let std: std::net::TcpListener = socket.into();
            let local = std.local_addr()?;
            tracing::info!(listener = %local, name = sock.name.as_deref().unwrap_or(""), "listening (socket from systemd)");
            Ok((
                Listener::Tcp(tokio::net::TcpListener::from_std(std)?),
                local.to_string(),
            ))
        }
        crate::host::systemd::SocketKind::Unix => {
            let std: std::os::unix::net::UnixListener = socket.into();
            let name = std.local_addr()?.as_pathname().map_or_else(
                || "unix:(unnamed)".to_owned(),
                |p| format!("unix:{}", p.display()),
            );
            tracing::info!(listener = %name, "listening (socket from systemd)");
            Ok((
                Listener::Unix(tokio::net::UnixListener::from_std(std)?),
                name,
            ))
        }
    }
}

/// A socket file left by a previous run blocks bind(); remove it, but only if nothing
/// answers on it (never steal a live server's socket) and it really is a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(_) => Ok(()),
    }
}
