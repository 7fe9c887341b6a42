//! Starting a worker process: the worker command with one end of a socketpair on fd 3,
//! then the hello/ready handshake on it. What a started worker does afterwards is the
//! link's and the supervisor's business.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;

use bytes::BytesMut;
use spillway_proto::{Frame, Kind, PROTOCOL_VERSION};

use crate::admission::link::{read_frame, LinkError, WorkerLink, WorkerReader};
use crate::config::WorkerCommand;

/// Why a worker did not come up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The process could not be started.
    #[error("could not start the worker process: {0}")]
    Spawn(#[source] io::Error),
    /// It exited, or broke the protocol, before it was ready.
    #[error("{0}")]
    Handshake(HandshakeError),
    /// It could not import the application (its traceback is in the log).
    #[error("the application could not be loaded ({0})")]
    AppLoad(String),
}

/// What went wrong between spawning a worker and its `Ready` frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The worker speaks another protocol version.
    #[error("worker speaks frame protocol {0}, this front speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// The worker sent an unexpected frame.
    #[error("expected {expected}, got a {got:?} frame")]
    Unexpected {
        /// What the front waited for.
        expected: &'static str,
        /// What came.
        got: Kind,
    },
    /// The socket closed; `status` is how the process ended.
    #[error("exited before it was {stage} ({status})")]
    Exited {
        /// `saying hello` or `ready`.
        stage: &'static str,
        /// The exit status, described.
        status: String,
    },
    /// The socket broke.
    #[error("{0}")]
    Link(LinkError),
}

/// A worker that passed its handshake.
pub(crate) struct Started {
    /// The process; whoever holds it reaps it.
    pub child: tokio::process::Child,
    pub link: Arc<WorkerLink>,
    /// Routes its frames until it goes away.
    pub reader: WorkerReader,
    /// Python threads it serves with.
    pub threads: u16,
}

/// Starts a worker process with the worker end of a socketpair on fd 3.
fn spawn(cmd: &WorkerCommand) -> io::Result<(tokio::process::Child, tokio::net::UnixStream)> {
    let (front, worker) = std::os::unix::net::UnixStream::pair()?;
    let worker_fd: OwnedFd = worker.into();
    let raw = worker_fd.as_raw_fd();
    let mut c = std::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        // Sockets and the notify channel belong to the front: a worker that saw them
        // could tell systemd it is "ready", or claim fds that are not its own.
        .env_remove(crate::host::systemd::ACTIVATION_VARS[0])
        .env_remove(crate::host::systemd::ACTIVATION_VARS[1])
        .env_remove(crate::host::systemd::ACTIVATION_VARS[2])
        .env_remove(crate::host::systemd::NOTIFY_SOCKET_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (dup2, fcntl, prctl, signal, getrlimit, setrlimit) on
    // plain integers.
    unsafe {
        c.pre_exec(move || {
            if raw == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            // A worker must not outlive its front, even if the front is SIGKILLed.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Ctrl-C, a terminal hangup, or systemd's KillMode=control-group signal the
            // whole group; the front alone decides how workers stop (it drains them with
            // a shutdown frame), so a group-wide SIGTERM is not a worker crash.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            crate::host::fdlimit::restore_inherited();
            Ok(())
        });
    }
    let child = tokio::process::Command::from(c).spawn()?;
    drop(worker_fd);
    front.set_nonblocking(true)?;
    Ok((child, tokio::net::UnixStream::from_std(front)?))
}

/// Starts a worker of `generation` and waits until it is ready (it imported the
/// application). It retires after `max_requests` requests (0: never).
pub(crate) async fn start(
    cmd: &WorkerCommand,
    id: u64,
    generation: u64,
    max_requests: u64,
    pipelined: bool,
    on_limit: Box<dyn Fn(u32) + Send + Sync>,
) -> Result<Started, StartError> {
    let (mut child, socket) = spawn(cmd).map_err(StartError::Spawn)?;
    let (mut rd, wr) = socket.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let handshake = async {
        let pid = match read_frame(&mut rd, &mut buf).await {
            Ok(Some(Frame::Hello { version, pid })) if version == PROTOCOL_VERSION => pid,
            Ok(Some(Frame::Hello { version, .. })) => return Err(HandshakeError::Version(version)),
            Ok(Some(other)) => {
                return Err(HandshakeError::Unexpected {
                    expected: "hello",
                    got: other.kind(),
                })
            }
            Ok(None) => return Err(exited("saying hello")),
            Err(e) => return Err(HandshakeError::Link(e)),
        };
        match read_frame(&mut rd, &mut buf).await {
            Ok(Some(Frame::Ready { threads })) => Ok((pid, threads)),
            Ok(Some(other)) => Err(HandshakeError::Unexpected {
                expected: "ready",
                got: other.kind(),
            }),
            Ok(None) => Err(exited("ready")),
            Err(e) => Err(HandshakeError::Link(e)),
        }
    };
    match handshake.await {
        Ok((pid, threads)) => {
            let (link, reader) = WorkerLink::start(
                id,
                pid,
                generation,
                max_requests,
                (threads, pipelined),
                on_limit,
                (rd, buf, wr),
            );
            Ok(Started {
                child,
                link,
                reader,
                threads,
            })
        }
        Err(e) => {
            let status = child.wait().await;
            let load_failed =
                matches!(&status, Ok(s) if s.code() == Some(spillway_proto::EXIT_APP_LOAD_FAILED));
            let status = status.map_or_else(|e| e.to_string(), describe_exit);
            Err(match e {
                _ if load_failed => StartError::AppLoad(status),
                HandshakeError::Exited { stage, .. } => {
                    StartError::Handshake(HandshakeError::Exited { stage, status })
                }
                other => StartError::Handshake(other),
            })
        }
    }
}

fn exited(stage: &'static str) -> HandshakeError {
    HandshakeError::Exited {
        stage,
        status: String::new(),
    }
}

/// How a process ended, in an operator's words.
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}
