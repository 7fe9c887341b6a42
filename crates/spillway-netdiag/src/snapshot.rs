//! One consistent look at the host's TCP state: listeners with their queues, owners and
//! connections, namespace-wide counters and sysctls.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use crate::error::NetdiagError;
use crate::netstat::read_netstat;
use crate::procfs::{is_root, process_info, socket_owners, ProcessInfo};
use crate::queue::ListenQueue;
use crate::sockdiag::{tcp_sockets, TcpSocket};
use crate::state::TcpState;
use crate::sysctl::tcp_sysctls;

/// How many remote addresses (or TIME_WAIT destinations) to keep, most connections first.
const TOP_N: usize = 5;

/// Everything netdiag knows about the host's TCP at one instant.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    /// When it was taken.
    pub taken_at: SystemTime,
    /// Listening sockets (filtered by port if asked), sorted by port then address.
    pub listeners: Vec<Listener>,
    /// All `TcpExt` counters of the network namespace.
    pub tcp_ext: BTreeMap<String, u64>,
    /// The sysctls of [`crate::sysctl::TCP_SYSCTLS`] this kernel has, by dotted name.
    pub sysctls: BTreeMap<String, String>,
    /// Sockets per state over the whole namespace.
    pub state_totals: BTreeMap<TcpState, u32>,
    /// TIME_WAIT sockets not belonging to any listener, by remote endpoint: outgoing
    /// connections whose ephemeral ports are held for 60 s after close.
    pub time_wait_destinations: Vec<(SocketAddr, u32)>,
    /// What this user could and could not see.
    pub visibility: Visibility,
}

/// What an unprivileged run misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    /// Running as root: every process's fds were readable.
    pub is_root: bool,
    /// Processes whose fd table could not be read.
    pub unreadable_pids: usize,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Bound address and port.
    pub local: SocketAddr,
    /// Socket inode.
    pub inode: u64,
    /// Owner uid of the socket (visible even when the process is not).
    pub uid: u32,
    /// Accept-queue depth and limit (Recv-Q / Send-Q in `ss -lt`).
    pub accept_queue: ListenQueue,
    /// Processes holding the socket; empty when none could be seen.
    pub processes: Vec<ProcessInfo>,
    /// Connections on this listener's port, by state (SYN_RECV = SYN queue).
    pub connections: BTreeMap<TcpState, u32>,
    /// Remote addresses with the most connections to this listener.
    pub top_remotes: Vec<(IpAddr, u32)>,
    /// CLOSE_WAIT connections no fd refers to: still in the accept queue, their clients
    /// gave up waiting. The rest of CLOSE_WAIT is the application's.
    pub close_wait_not_accepted: u32,
}

impl Listener {
    /// Connections in `state` (0 if none).
    pub fn count(&self, state: TcpState) -> u32 {
        self.connections.get(&state).copied().unwrap_or(0)
    }
}

/// Takes a snapshot; `ports` limits listeners to those ports (empty: all).
pub fn snapshot(ports: &[u16]) -> Result<HostSnapshot, NetdiagError> {
    let sockets = tcp_sockets()?;
    let owners = socket_owners()?;
    let tcp_ext = read_netstat()?.tcp_ext();
    let sysctls = tcp_sysctls()?.into_iter().collect();
    let mut pids: HashMap<u32, Option<ProcessInfo>> = HashMap::new();
    let mut snap = assemble(
        &sockets,
        |inode| {
            let Some(owner_pids) = owners.by_inode.get(&inode) else {
                return Vec::new();
            };
            owner_pids
                .iter()
                .filter_map(|pid| {
                    pids.entry(*pid)
                        // A process that exits between the fd scan and now just drops out.
                        .or_insert_with(|| process_info(*pid).ok())
                        .clone()
                })
                .collect()
        },
        ports,
    );
    snap.tcp_ext = tcp_ext;
    snap.sysctls = sysctls;
    snap.visibility = Visibility {
        is_root: is_root(),
        unreadable_pids: owners.unreadable_pids,
    };
    Ok(snap)
}

/// Groups raw sockets into listeners; pure so tests can feed it synthetic sockets.
pub fn assemble(
    sockets: &[TcpSocket],
    mut owners_of: impl FnMut(u64) -> Vec<ProcessInfo>,
    ports: &[u16],
) -> HostSnapshot {
    let mut listeners: Vec<Listener> = sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .filter(|s| ports.is_empty() || ports.contains(&s.local.port()))
        .map(|s| Listener {
            local: s.local,
            inode: s.inode,
            uid: s.uid,
            accept_queue: ListenQueue {
                depth: s.recv_q,
                limit: s.send_q,
            },
            processes: owners_of(s.inode),
            connections: BTreeMap::new(),
            top_remotes: Vec::new(),
            close_wait_not_accepted: 0,
        })
        .collect();
    listeners.sort_by_key(|l| (l.local.port(), l.local.is_ipv6(), l.local.ip()));
    // Every listening port on the host, filtered or not, so outgoing TIME_WAIT sockets
    // are told apart from a listener's own.
    let all_listen_ports: Vec<u16> = sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect();

    let mut state_totals: BTreeMap<TcpState, u32> = BTreeMap::new();
    let mut remotes: Vec<HashMap<IpAddr, u32>> = vec![HashMap::new(); listeners.len()];
    let mut tw_dest: HashMap<SocketAddr, u32> = HashMap::new();
    for s in sockets {
        *state_totals.entry(s.state).or_default() += 1;
        if s.state == TcpState::Listen {
            continue;
        }
        if let Some(i) = owning_listener(&listeners, &s.local) {
            *listeners[i].connections.entry(s.state).or_default() += 1;
            if s.state == TcpState::CloseWait && s.inode == 0 {
                listeners[i].close_wait_not_accepted += 1;
            }
            *remotes[i].entry(unmap(s.remote.ip())).or_default() += 1;
        } else if s.state == TcpState::TimeWait && !all_listen_ports.contains(&s.local.port()) {
            *tw_dest.entry(s.remote).or_default() += 1;
        }
    }
    for (l, r) in listeners.iter_mut().zip(remotes) {
        l.top_remotes = top(r);
    }
    HostSnapshot {
        taken_at: SystemTime::now(),
        listeners,
        tcp_ext: BTreeMap::new(),
        sysctls: BTreeMap::new(),
        state_totals,
        time_wait_destinations: top(tw_dest),
        visibility: Visibility {
            is_root: false,
            unreadable_pids: 0,
        },
    }
}

/// The listener a server-side socket with this local address belongs to: same port,
/// exact address first, then a wildcard of the same family, then any wildcard
/// (a dual-stack `[::]` listener takes IPv4 clients as `::ffff:a.b.c.d`).
fn owning_listener(listeners: &[Listener], local: &SocketAddr) -> Option<usize> {
    let same_port = || {
        listeners
            .iter()
            .enumerate()
            .filter(move |(_, l)| l.local.port() == local.port())
    };
    let local_ip = unmap(local.ip());
    same_port()
        .find(|(_, l)| unmap(l.local.ip()) == local_ip)
        .or_else(|| {
            same_port().find(|(_, l)| {
                l.local.ip().is_unspecified() && l.local.is_ipv6() == local.is_ipv6()
            })
        })
        .or_else(|| same_port().find(|(_, l)| l.local.ip().is_unspecified()))
        .map(|(i, _)| i)
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn top<K: Ord + Copy>(counts: HashMap<K, u32>) -> Vec<(K, u32)> {
    let mut v: Vec<(K, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(TOP_N);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(state: TcpState, local: &str, remote: &str, rq: u32, wq: u32, inode: u64) -> TcpSocket {
        TcpSocket {
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            recv_q: rq,
            send_q: wq,
            uid: 0,
            inode,
        }
    }

    #[test]
    fn connections_are_grouped_under_their_listener() {
        use TcpState::*;
        let sockets = vec![
            sock(Listen, "127.0.0.1:9876", "0.0.0.0:0", 6, 5, 10),
            sock(Listen, "[::]:80", "[::]:0", 0, 4096, 11),
            sock(Established, "127.0.0.1:9876", "127.0.0.1:50000", 0, 0, 0),
            sock(Established, "127.0.0.1:9876", "127.0.0.1:50001", 0, 0, 0),
            sock(SynRecv, "127.0.0.1:9876", "127.0.0.2:50002", 0, 0, 0),
            sock(
                CloseWait,
                "[::ffff:10.0.0.1]:80",
                "[::ffff:10.0.0.9]:4000",
                0,
                0,
                3,
            ),
            sock(CloseWait, "127.0.0.1:9876", "127.0.0.1:50003", 0, 0, 0),
            // the client side of the loopback connections: not the listener's
            sock(Established, "127.0.0.1:50000", "127.0.0.1:9876", 0, 0, 20),
            sock(TimeWait, "10.0.0.1:40000", "10.0.0.50:5432", 0, 0, 0),
            sock(TimeWait, "10.0.0.1:40001", "10.0.0.50:5432", 0, 0, 0),
        ];
        let snap = assemble(
            &sockets,
            |inode| {
                if inode == 10 {
                    vec![ProcessInfo {
                        pid: 4242,
                        command: "python3".into(),
                        cmdline: "python3 -c …".into(),
                        threads: 1,
                        uid: 0,
                    }]
                } else {
                    Vec::new()
                }
            },
            &[],
        );
        assert_eq!(snap.listeners.len(), 2);
        let py = &snap.listeners[1];
        assert_eq!(py.local.port(), 9876);
        assert_eq!(py.accept_queue, ListenQueue { depth: 6, limit: 5 });
        assert_eq!(py.processes[0].pid, 4242);
        assert_eq!(py.count(Established), 2);
        assert_eq!(py.count(SynRecv), 1);
        assert_eq!((py.count(CloseWait), py.close_wait_not_accepted), (1, 1));
        assert_eq!(py.top_remotes[0], ("127.0.0.1".parse().unwrap(), 3));
        let web = &snap.listeners[0];
        assert_eq!((web.count(CloseWait), web.close_wait_not_accepted), (1, 0));
        assert_eq!(web.top_remotes[0].0, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(snap.state_totals[&TimeWait], 2);
        assert_eq!(
            snap.time_wait_destinations,
            vec![("10.0.0.50:5432".parse().unwrap(), 2)]
        );
    }

    #[test]
    fn port_filter_keeps_only_asked_ports() {
        let sockets = vec![
            sock(TcpState::Listen, "127.0.0.1:1", "0.0.0.0:0", 0, 5, 1),
            sock(TcpState::Listen, "127.0.0.1:2", "0.0.0.0:0", 0, 5, 2),
        ];
        let snap = assemble(&sockets, |_| Vec::new(), &[2]);
        assert_eq!(snap.listeners.len(), 1);
        assert_eq!(snap.listeners[0].local.port(), 2);
    }

    #[test]
    fn live_snapshot_finds_our_listener_and_us() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let snap = snapshot(&[port]).unwrap();
        assert_eq!(snap.listeners.len(), 1);
        let me = &snap.listeners[0];
        assert_eq!(me.accept_queue.depth, 1);
        assert!(me.processes.iter().any(|p| p.pid == std::process::id()));
        assert_eq!(me.count(TcpState::Established), 1);
        assert!(snap.tcp_ext.contains_key("ListenOverflows"));
        assert!(snap.sysctls.contains_key("net.core.somaxconn"));
    }
}
