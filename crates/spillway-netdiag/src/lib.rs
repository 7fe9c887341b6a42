//! Linux TCP facts for `spillway doctor` and the server's self-metrics: listening sockets
//! and connections (netlink `sock_diag`), their owning processes (/proc), accept-queue
//! depth of a socket we hold (`TCP_INFO`), `TcpExt` counters and TCP sysctls.
//!
//! Needs no privileges: an unprivileged caller sees every socket and counter of its
//! network namespace, but only its own processes' fds (see [`Visibility`]).

mod error;
pub mod netstat;
pub mod procfs;
pub mod queue;
pub mod snapshot;
pub mod sockdiag;
pub mod state;
pub mod sysctl;

pub use error::NetdiagError;
pub use netstat::{parse_netstat, read_netstat, Netstat};
pub use procfs::{process_info, socket_owners, ProcessInfo, SocketOwners};
pub use queue::{listener_queue, ListenQueue};
pub use snapshot::{snapshot, HostSnapshot, Listener, Visibility};
pub use sockdiag::{tcp_sockets, TcpSocket};
pub use state::TcpState;
pub use sysctl::{read_sysctl, tcp_sysctls};
