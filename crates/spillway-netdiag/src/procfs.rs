//! Which processes hold which sockets (/proc/<pid>/fd), and what those processes are.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use crate::error::NetdiagError;

/// Socket inode → pids that hold an fd to it, plus how much of /proc we could not see.
#[derive(Debug, Default, Clone)]
pub struct SocketOwners {
    /// Pids holding each socket inode (a prefork server shares one listener among many).
    pub by_inode: HashMap<u64, Vec<u32>>,
    /// Processes whose fd table we were not allowed to read (other users, without root).
    pub unreadable_pids: usize,
}

/// A process as /proc describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Short command name (/proc/<pid>/comm).
    pub command: String,
    /// Full command line, arguments joined by spaces (may be empty for kernel threads).
    pub cmdline: String,
    /// Number of threads (`Threads:` in /proc/<pid>/status).
    pub threads: u32,
    /// Real uid.
    pub uid: u32,
}

/// Scans /proc/*/fd for `socket:[inode]` links.
pub fn socket_owners() -> Result<SocketOwners, NetdiagError> {
    socket_owners_in(Path::new("/proc"))
}

/// Same as [`socket_owners`] over another procfs root (tests point it at a fixture).
pub fn socket_owners_in(proc_root: &Path) -> Result<SocketOwners, NetdiagError> {
    let mut owners = SocketOwners::default();
    let entries = fs::read_dir(proc_root).map_err(|e| NetdiagError::proc(proc_root, e))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let fd_dir = entry.path().join("fd");
        let fds = match fs::read_dir(&fd_dir) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                owners.unreadable_pids += 1;
                continue;
            }
            // The process exited between the two reads, or is a zombie: nothing to see.
            Err(_) => continue,
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = target.to_str().and_then(parse_socket_link) {
                let pids = owners.by_inode.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    Ok(owners)
}

/// `socket:[12345]` → 12345.
pub fn parse_socket_link(s: &str) -> Option<u64> {
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Reads command, command line, thread count and uid of `pid`.
pub fn process_info(pid: u32) -> Result<ProcessInfo, NetdiagError> {
    process_info_in(Path::new("/proc"), pid)
}

/// Same as [`process_info`] over another procfs root.
pub fn process_info_in(proc_root: &Path, pid: u32) -> Result<ProcessInfo, NetdiagError> {
    let dir = proc_root.join(pid.to_string());
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read(&p).map_err(|e| NetdiagError::proc(p, e))
    };
    let command = String::from_utf8_lossy(&read("comm")?)
        .trim_end()
        .to_string();
    let cmdline = String::from_utf8_lossy(&read("cmdline")?)
        .split('\0')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let status = String::from_utf8_lossy(&read("status")?).into_owned();
    let (threads, uid) = parse_status(&status)?;
    Ok(ProcessInfo {
        pid,
        command,
        cmdline,
        threads,
        uid,
    })
}

/// Pulls `Threads:` and the real uid out of /proc/<pid>/status text.
pub fn parse_status(text: &str) -> Result<(u32, u32), NetdiagError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| NetdiagError::Parse {
                what: "/proc/<pid>/status",
                detail: format!("no numeric {name} line"),
            })
    };
    Ok((field("Threads:")?, field("Uid:")?))
}

/// True when this process runs as root (and so sees every process's fds).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_parse() {
        assert_eq!(parse_socket_link("socket:[4242]"), Some(4242));
        assert_eq!(parse_socket_link("pipe:[4242]"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn status_fields_parse() {
        let text = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\nThreads:\t12\n";
        assert_eq!(parse_status(text).unwrap(), (12, 1000));
        assert!(parse_status("Name:\tx\n").is_err());
    }

    #[test]
    fn fixture_procfs_maps_inodes_to_pids() {
        let root = std::env::temp_dir().join(format!("netdiag-proc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let fd = root.join("4242/fd");
        fs::create_dir_all(&fd).unwrap();
        std::os::unix::fs::symlink("socket:[777]", fd.join("3")).unwrap();
        std::os::unix::fs::symlink("/dev/null", fd.join("0")).unwrap();
        fs::write(root.join("4242/comm"), "python3\n").unwrap();
        fs::write(root.join("4242/cmdline"), "python3\0-c\0pass\0").unwrap();
        fs::write(root.join("4242/status"), "Uid:\t0\t0\t0\t0\nThreads:\t1\n").unwrap();
        fs::create_dir_all(root.join("self")).unwrap();

        let owners = socket_owners_in(&root).unwrap();
        assert_eq!(owners.by_inode.get(&777), Some(&vec![4242]));
        assert_eq!(owners.by_inode.len(), 1);
        let p = process_info_in(&root, 4242).unwrap();
        assert_eq!(p.command, "python3");
        assert_eq!(p.cmdline, "python3 -c pass");
        assert_eq!((p.threads, p.uid), (1, 0));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn live_procfs_finds_our_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let link = fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let inode = parse_socket_link(link.to_str().unwrap()).unwrap();
        let owners = socket_owners().unwrap();
        assert!(owners.by_inode[&inode].contains(&std::process::id()));
        let me = process_info(std::process::id()).unwrap();
        assert!(me.threads >= 1);
    }
}
