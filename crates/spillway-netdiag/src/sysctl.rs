//! The TCP sysctls that decide how listen queues behave, read from /proc/sys.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::NetdiagError;

/// The sysctls doctor reports, in `net.x.y` form; each maps to /proc/sys/net/x/y.
pub const TCP_SYSCTLS: &[&str] = &[
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.ip_local_port_range",
];

/// Reads one sysctl as text; `Ok(None)` if this kernel does not have it
/// (e.g. `tcp_syn_linear_timeouts` before Linux 6.7).
pub fn read_sysctl(name: &str) -> Result<Option<String>, NetdiagError> {
    read_sysctl_in(Path::new("/proc/sys"), name)
}

/// Same as [`read_sysctl`] under another root (tests).
pub fn read_sysctl_in(root: &Path, name: &str) -> Result<Option<String>, NetdiagError> {
    let path = root.join(name.replace('.', "/"));
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.split_whitespace().collect::<Vec<_>>().join(" "))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetdiagError::proc(path, e)),
    }
}

/// Reads all of [`TCP_SYSCTLS`]; missing ones are left out.
pub fn tcp_sysctls() -> Result<Vec<(String, String)>, NetdiagError> {
    let mut out = Vec::new();
    for name in TCP_SYSCTLS {
        if let Some(v) = read_sysctl(name)? {
            out.push((name.to_string(), v));
        }
    }
    Ok(out)
}

/// Parses `ip_local_port_range` ("32768 60999") into the number of ephemeral ports.
pub fn port_range_size(value: &str) -> Option<u32> {
    let mut it = value.split_whitespace().map(|s| s.parse::<u32>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    hi.checked_sub(lo).map(|d| d + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_counts_inclusive() {
        assert_eq!(port_range_size("32768\t60999"), Some(28232));
        assert_eq!(port_range_size("10 5"), None);
        assert_eq!(port_range_size("x"), None);
    }

    #[test]
    fn missing_sysctl_is_none_and_whitespace_is_normalised() {
        let root = std::env::temp_dir().join(format!("netdiag-sys-{}", std::process::id()));
        fs::create_dir_all(root.join("net/ipv4")).unwrap();
        fs::write(root.join("net/ipv4/ip_local_port_range"), "32768\t60999\n").unwrap();
        assert_eq!(
            read_sysctl_in(&root, "net.ipv4.ip_local_port_range").unwrap(),
            Some("32768 60999".into())
        );
        assert_eq!(read_sysctl_in(&root, "net.ipv4.nope").unwrap(), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn live_somaxconn_is_numeric() {
        let v = read_sysctl("net.core.somaxconn").unwrap().unwrap();
        assert!(v.parse::<u32>().is_ok());
    }
}
