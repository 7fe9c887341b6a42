//! systemd integration without libsystemd: socket activation (the `LISTEN_FDS` protocol of
//! `sd_listen_fds(3)`) and readiness notification (the `NOTIFY_SOCKET` datagrams of
//! `sd_notify(3)`).
//!
//! The activation variables are deliberately not removed from this process's environment
//! (`std::env::remove_var` races with other threads and is banned in this workspace).
//! Instead, whoever starts child processes (the worker supervisor) must leave
//! [`ACTIVATION_VARS`] and [`NOTIFY_SOCKET_VAR`] out of their environment, e.g. with
//! `Command::env_remove`, so that a child never mistakes the front's sockets or
//! notification channel for its own.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The socket-activation variables, to be removed from every child's environment.
pub const ACTIVATION_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The notification variable, also to be removed from every child's environment.
pub const NOTIFY_SOCKET_VAR: &str = "NOTIFY_SOCKET";

/// The family of an activated listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// TCP over IPv4 or IPv6 (`ListenStream=PORT` or `ADDR:PORT`).
    Tcp,
    /// A Unix domain stream socket (`ListenStream=/path`).
    Unix,
}

/// One listening socket inherited from systemd, checked and marked close-on-exec.
///
/// It is still in blocking mode, as systemd passed it; set it non-blocking before handing
/// it to tokio.
#[derive(Debug)]
pub struct ActivatedSocket {
    /// The socket; it is closed when this is dropped.
    pub fd: OwnedFd,
    /// Its `FileDescriptorName=` from `LISTEN_FDNAMES` (systemd's default is the socket
    /// unit's name), or `None` when no names were passed or the name is empty.
    pub name: Option<String>,
    /// TCP or Unix.
    pub kind: SocketKind,
}

/// Why the sockets passed by systemd cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// An activation variable is not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    /// `LISTEN_PID` is not a process id.
    #[error("LISTEN_PID={0:?} is not a process id")]
    BadPid(String),
    /// `LISTEN_FDS` is not a usable count.
    #[error("LISTEN_FDS={0:?} is not a count of file descriptors")]
    BadCount(String),
    /// `LISTEN_FDNAMES` does not name each descriptor exactly once.
    #[error("LISTEN_FDNAMES has {names} names for LISTEN_FDS={fds}")]
    NamesMismatch {
        /// Names given.
        names: usize,
        /// Descriptors given.
        fds: usize,
    },
    /// [`listen_fds`] already handed the sockets to an earlier caller.
    #[error("the socket-activated file descriptors were already taken")]
    AlreadyTaken,
    /// A descriptor in the passed range is not open.
    #[error("socket-activated fd {fd} is not open")]
    NotOpen {
        /// The descriptor.
        fd: RawFd,
    },
    /// A descriptor could not be inspected or configured.
    #[error("socket-activated fd {fd} ({name}): {source}")]
    Inspect {
        /// The descriptor.
        fd: RawFd,
        /// Its name, or "unnamed".
        name: String,
        /// The OS error (`ENOTSOCK` for a descriptor that is not a socket).
        source: io::Error,
    },
    /// A descriptor is not a listening TCP or Unix stream socket.
    #[error("socket-activated fd {fd} ({name}) is {what}; spillway needs ListenStream= sockets")]
    Unsuitable {
        /// The descriptor.
        fd: RawFd,
        /// Its name, or "unnamed".
        name: String,
        /// What it is instead.
        what: &'static str,
    },
}

/// Set once the inherited descriptors have an owner, so that a second call cannot create
/// a second `OwnedFd` for the same descriptor (a double close).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the listening sockets systemd passed to this process, if any (`sd_listen_fds`).
///
/// Returns an empty list when `LISTEN_PID`/`LISTEN_FDS` are unset or `LISTEN_PID` names
/// another process (the variables were inherited, not meant for us; logged). Succeeds at
/// most once per process: later calls return [`SystemdError::AlreadyTaken`]. On an error
/// about one socket, every passed socket is closed.
pub fn listen_fds() -> Result<Vec<ActivatedSocket>, SystemdError> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(SystemdError::AlreadyTaken);
    }
    let [pid_name, fds_name, names_name] = ACTIVATION_VARS;
    let pid = env_str(pid_name)?;
    let fds = env_str(fds_name)?;
    let names = env_str(names_name)?;
    // SAFETY: when LISTEN_PID is our pid, systemd (or the process that exec'd us) passed
    // fds LISTEN_FDS_START.. to this very process, so nothing else in it owns them, and
    // TAKEN guarantees this is the only call that wraps them.
    unsafe {
        listen_fds_from(
            pid.as_deref(),
            fds.as_deref(),
            names.as_deref(),
            std::process::id(),
            LISTEN_FDS_START,
        )
    }
}

fn env_str(name: &'static str) -> Result<Option<String>, SystemdError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(SystemdError::NotUnicode(name)),
    }
}

/// [`listen_fds`] with the variables, our pid and the first descriptor given explicitly.
///
/// Checks that every descriptor is open before taking any; then takes them all, marks
/// them close-on-exec and checks that each is a listening TCP or Unix stream socket. On
/// an error after taking, all of them are closed.
///
/// # Safety
///
/// When the variables are valid and `pid_var` equals `our_pid`, descriptors
/// `first_fd..first_fd + LISTEN_FDS` become owned by the returned sockets: nothing else in
/// the process may own, use or close them afterwards.
pub unsafe fn listen_fds_from(
    pid_var: Option<&str>,
    fds_var: Option<&str>,
    names_var: Option<&str>,
    our_pid: u32,
    first_fd: RawFd,
) -> Result<Vec<ActivatedSocket>, SystemdError> {
    let (Some(pid_var), Some(fds_var)) = (pid_var, fds_var) else {
        return Ok(Vec::new());
    };
    let pid: u32 = parse_decimal(pid_var)
        .filter(|&p| p > 0)
        .ok_or_else(|| SystemdError::BadPid(pid_var.to_owned()))?;
    if pid != our_pid {
        tracing::warn!(
            listen_pid = pid,
            our_pid,
            "LISTEN_FDS is set for another process; not using socket activation"
        );
        return Ok(Vec::new());
    }
    let count: u32 =
        parse_decimal(fds_var).ok_or_else(|| SystemdError::BadCount(fds_var.to_owned()))?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // The last descriptor number must fit an fd.
    let end = i32::try_from(count)
        .ok()
        .and_then(|c| first_fd.checked_add(c))
        .ok_or_else(|| SystemdError::BadCount(fds_var.to_owned()))?;
    let fds = usize::try_from(count).map_err(|_| SystemdError::BadCount(fds_var.to_owned()))?;
    let names: Vec<Option<String>> = match names_var {
        Some(list) => {
            let names: Vec<Option<String>> = list
                .split(':')
                .map(|n| (!n.is_empty()).then(|| n.to_owned()))
                .collect();
            if names.len() != fds {
                return Err(SystemdError::NamesMismatch {
                    names: names.len(),
                    fds,
                });
            }
            names
        }
        None => vec![None; fds],
    };

    // Check them all before owning any, so that a wrong count closes nothing.
    for fd in first_fd..end {
        // SAFETY: F_GETFD only reads the descriptor's flags; any fd number is acceptable.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(SystemdError::NotOpen { fd });
        }
    }
    let owned: Vec<(RawFd, OwnedFd)> = (first_fd..end)
        // SAFETY: each fd is open (checked above) and, by this function's contract, owned
        // by nobody else.
        .map(|fd| (fd, unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect();

    let mut sockets = Vec::with_capacity(fds);
    // On any error, the remaining `owned` descriptors and the `sockets` so far are dropped,
    // which closes them: the caller will not serve on half of its listeners.
    for ((fd, owned), name) in owned.into_iter().zip(names) {
        let (kind, fd) = inspect(fd, owned, name.as_deref())?;
        sockets.push(ActivatedSocket { fd, name, kind });
    }
    Ok(sockets)
}

/// Digits only: `str::parse` would also accept a leading `+`.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Marks `owned` close-on-exec and checks it is a listening stream socket we can serve.
fn inspect(
    fd: RawFd,
    owned: OwnedFd,
    name: Option<&str>,
) -> Result<(SocketKind, OwnedFd), SystemdError> {
    let label = || name.unwrap_or("unnamed").to_owned();
    let inspect_err = |source| SystemdError::Inspect {
        fd,
        name: label(),
        source,
    };
    let unsuitable = |what| SystemdError::Unsuitable {
        fd,
        name: label(),
        what,
    };
    let socket = Socket::from(owned);
    // systemd passes the descriptors inheritable; the workers we exec must not hold them.
    socket.set_cloexec(true).map_err(inspect_err)?;
    if socket.r#type().map_err(inspect_err)? != Type::STREAM {
        return Err(unsuitable("not a stream socket"));
    }
    if !socket.is_listener().map_err(inspect_err)? {
        // e.g. Accept=yes in the socket unit, which passes one connection per instance.
        return Err(unsuitable(
            "a stream socket that is not listening (Accept=yes?)",
        ));
    }
    let kind = match socket.local_addr().map_err(inspect_err)?.domain() {
        Domain::IPV4 | Domain::IPV6 => SocketKind::Tcp,
        Domain::UNIX => SocketKind::Unix,
        _ => return Err(unsuitable("neither a TCP nor a Unix socket")),
    };
    Ok((kind, OwnedFd::from(socket)))
}

/// Sends `sd_notify` messages to systemd over `NOTIFY_SOCKET`; a no-op when it is unset.
#[derive(Debug)]
pub struct Notifier {
    /// The unbound sending socket and systemd's address, or `None` when not under systemd.
    target: Option<(UnixDatagram, UnixAddr)>,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET` in this process's environment.
    pub fn from_env() -> io::Result<Self> {
        Self::new(std::env::var_os(NOTIFY_SOCKET_VAR).as_deref())
    }

    /// A notifier for a `NOTIFY_SOCKET` value: a path, or `@name` for an abstract socket.
    ///
    /// `None` or empty gives a disabled notifier. Other forms (systemd's `vsock:`) are an
    /// `InvalidInput` error.
    pub fn new(notify_socket: Option<&OsStr>) -> io::Result<Self> {
        let Some(value) = notify_socket.filter(|v| !v.is_empty()) else {
            return Ok(Self { target: None });
        };
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => UnixAddr::from_pathname(value)?,
            Some(b'@') => UnixAddr::from_abstract_name(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unsupported NOTIFY_SOCKET {value:?}: expected a path or @name"),
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // Never stall the front on a busy systemd: a full queue fails the send instead.
        socket.set_nonblocking(true)?;
        Ok(Self {
            target: Some((socket, addr)),
        })
    }

    /// True when messages are actually sent (`NOTIFY_SOCKET` was set).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `msg` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn notify(&self, msg: &str) -> io::Result<()> {
        let Some((socket, addr)) = &self.target else {
            return Ok(());
        };
        let sent = socket.send_to_addr(msg.as_bytes(), addr)?;
        if sent != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "sd_notify datagram truncated",
            ));
        }
        Ok(())
    }

    /// `READY=1`: start-up finished (listeners bound, first workers ready).
    pub fn ready(&self) -> io::Result<()> {
        self.notify("READY=1")
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd wants; send `READY=1` when done.
    pub fn reloading(&self) -> io::Result<()> {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// `STOPPING=1`: shutdown began.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// `STATUS=text`, shown by `systemctl status`; newlines become spaces.
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times against.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    // Tests run as threads of one process: each uses its own range of high descriptor
    // numbers (below a 1024 soft limit) instead of the real fd 3.

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads flags; any fd number is acceptable.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    /// Moves `from` to descriptor number `at` without CLOEXEC, as systemd passes it.
    fn place_at(from: OwnedFd, at: RawFd) {
        assert!(!is_open(at), "fd {at} is in use; pick another test range");
        // SAFETY: dup2 onto a number that is not open, so nothing else's fd is replaced;
        // the new descriptor is owned by the test (and then by listen_fds_from).
        let rc = unsafe { libc::dup2(from.as_raw_fd(), at) };
        assert_eq!(rc, at, "dup2: {}", io::Error::last_os_error());
        assert!(!cloexec(at), "dup2 clears FD_CLOEXEC");
    }

    fn tcp_listener() -> OwnedFd {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        OwnedFd::from(l)
    }

    fn temp_path(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("spillway-systemd-{tag}-{}-{n}", std::process::id()))
    }

    fn take(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
        first: RawFd,
    ) -> Result<Vec<ActivatedSocket>, SystemdError> {
        // SAFETY: every test places descriptors it owns at `first..` and gives them up.
        unsafe { listen_fds_from(pid, fds, names, 4242, first) }
    }

    #[test]
    fn not_activated() {
        assert!(take(None, None, None, 900).expect("unset").is_empty());
        assert!(take(Some("4242"), None, None, 900)
            .expect("no fds")
            .is_empty());
        assert!(take(None, Some("1"), None, 900).expect("no pid").is_empty());
        assert!(take(Some("4242"), Some("0"), None, 900)
            .expect("zero")
            .is_empty());
    }

    #[test]
    fn other_pid_leaves_fds_alone() {
        place_at(tcp_listener(), 905);
        let got = take(Some("1"), Some("1"), None, 905).expect("other pid");
        assert!(got.is_empty());
        assert!(is_open(905));
        // SAFETY: the test owns 905, placed above and not taken.
        drop(unsafe { OwnedFd::from_raw_fd(905) });
    }

    #[test]
    fn bad_variables() {
        for pid in ["", "x", "+4242", "-1", "0", "4242 "] {
            assert!(
                matches!(
                    take(Some(pid), Some("1"), None, 910),
                    Err(SystemdError::BadPid(_))
                ),
                "{pid:?}"
            );
        }
        for fds in ["", "one", "+1", "-1", "99999999999", "2147483647"] {
            assert!(
                matches!(
                    take(Some("4242"), Some(fds), None, 910),
                    Err(SystemdError::BadCount(_))
                ),
                "{fds:?}"
            );
        }
        assert!(matches!(
            take(Some("4242"), Some("2"), Some("a"), 910),
            Err(SystemdError::NamesMismatch { names: 1, fds: 2 })
        ));
        assert!(matches!(
            take(Some("4242"), Some("1"), Some("a:b"), 910),
            Err(SystemdError::NamesMismatch { names: 2, fds: 1 })
        ));
    }

    #[test]
    fn tcp_and_unix_with_names() {
        let path = temp_path("listen");
        let unix = UnixListener::bind(&path).expect("bind unix");
        place_at(tcp_listener(), 920);
        place_at(OwnedFd::from(unix), 921);
        let got = take(Some("4242"), Some("2"), Some("http:"), 920).expect("activation");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].fd.as_raw_fd(), 920);
        assert_eq!(got[0].name.as_deref(), Some("http"));
        assert_eq!(got[0].kind, SocketKind::Tcp);
        assert_eq!(got[1].fd.as_raw_fd(), 921);
        assert_eq!(got[1].name, None);
        assert_eq!(got[1].kind, SocketKind::Unix);
        assert!(cloexec(920) && cloexec(921));
        // The descriptor really is the listener: it accepts a connection.
        let tcp = std::net::TcpListener::from(got.into_iter().next().expect("tcp").fd);
        let addr = tcp.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        tcp.accept().expect("accept");
        drop(tcp);
        assert!(!is_open(920));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn ipv6_without_names() {
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 on this host
        };
        place_at(OwnedFd::from(l), 930);
        let got = take(Some("4242"), Some("1"), None, 930).expect("activation");
        assert_eq!(got[0].kind, SocketKind::Tcp);
        assert_eq!(got[0].name, None);
    }

    #[test]
    fn closed_fd_takes_nothing() {
        place_at(tcp_listener(), 940);
        assert!(!is_open(941));
        assert!(matches!(
            take(Some("4242"), Some("2"), None, 940),
            Err(SystemdError::NotOpen { fd: 941 })
        ));
        assert!(is_open(940), "nothing taken when the range is wrong");
        // SAFETY: the test owns 940, placed above and not taken.
        drop(unsafe { OwnedFd::from_raw_fd(940) });
    }

    #[test]
    fn unsuitable_descriptors_are_refused_and_closed() {
        // A bound UDP socket, a connected (not listening) TCP socket, a pipe.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (pipe_r, pipe_w) = std::io::pipe().expect("pipe");
        drop(pipe_w);
        let cases: [(OwnedFd, RawFd); 3] = [
            (OwnedFd::from(udp), 950),
            (OwnedFd::from(stream), 951),
            (OwnedFd::from(pipe_r), 952),
        ];
        for (fd, at) in cases {
            place_at(fd, at);
            let err = take(Some("4242"), Some("1"), Some("web"), at).expect_err("unsuitable");
            let msg = err.to_string();
            match at {
                950 | 951 => assert!(matches!(err, SystemdError::Unsuitable { .. }), "{msg}"),
                _ => assert!(matches!(err, SystemdError::Inspect { .. }), "{msg}"),
            }
            assert!(
                msg.contains(&at.to_string()) && msg.contains("web"),
                "{msg}"
            );
            assert!(!is_open(at), "taken descriptors are closed on error");
        }
        // A good socket next to a bad one: both closed.
        place_at(tcp_listener(), 960);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        place_at(OwnedFd::from(udp), 961);
        assert!(take(Some("4242"), Some("2"), None, 960).is_err());
        assert!(!is_open(960) && !is_open(961));
    }

    #[test]
    fn listen_fds_once() {
        // The environment of the test process has no LISTEN_PID for it, so nothing is
        // taken, but the second call is refused all the same.
        let first = listen_fds();
        assert!(matches!(first, Ok(ref v) if v.is_empty()), "{first:?}");
        assert!(matches!(listen_fds(), Err(SystemdError::AlreadyTaken)));
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("recv");
        String::from_utf8(buf[..n].to_vec()).expect("utf8")
    }

    #[test]
    fn notifier_sends_datagrams_to_a_path() {
        let path = temp_path("notify");
        let systemd = UnixDatagram::bind(&path).expect("bind");
        systemd
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier::new(Some(path.as_os_str())).expect("notifier");
        assert!(n.is_enabled());
        n.ready().expect("ready");
        assert_eq!(recv(&systemd), "READY=1");
        n.reloading().expect("reloading");
        let msg = recv(&systemd);
        let usec = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|u| u.parse::<u64>().ok())
            .expect("MONOTONIC_USEC");
        assert!(usec > 0);
        n.status("queue 3\nworkers 4").expect("status");
        assert_eq!(recv(&systemd), "STATUS=queue 3 workers 4");
        n.stopping().expect("stopping");
        assert_eq!(recv(&systemd), "STOPPING=1");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn notifier_abstract_socket() {
        let name = format!("spillway-test-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let systemd = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}")))).expect("notifier");
        n.notify("READY=1\nSTATUS=up").expect("notify");
        assert_eq!(recv(&systemd), "READY=1\nSTATUS=up");
    }

    #[test]
    fn notifier_disabled_and_invalid() {
        for v in [None, Some(OsStr::new(""))] {
            let n = Notifier::new(v).expect("disabled");
            assert!(!n.is_enabled());
            n.ready().expect("no-op");
        }
        let err = Notifier::new(Some(OsStr::new("vsock:2:1234"))).expect_err("vsock");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // A path nobody listens on: the send fails, it does not block or panic.
        let n = Notifier::new(Some(temp_path("absent").as_os_str())).expect("notifier");
        assert!(n.ready().is_err());
    }
}
