//! Kernel SNMP-style counters from /proc/net/netstat (TcpExt, IpExt, …).
//!
//! The file is pairs of lines with the same prefix: a header line of names, then a line
//! of values. Counter sets differ between kernels, so every counter is kept by name
//! instead of by position.

use std::collections::BTreeMap;
use std::fs;

use crate::error::NetdiagError;

/// Counters by section (`TcpExt`, `IpExt`, `MPTcpExt`) then by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netstat {
    /// Section name → counter name → value.
    pub sections: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Netstat {
    /// The `TcpExt` counters (empty map if the kernel has none).
    pub fn tcp_ext(&self) -> BTreeMap<String, u64> {
        self.sections.get("TcpExt").cloned().unwrap_or_default()
    }
}

/// Reads and parses /proc/net/netstat of the current network namespace.
pub fn read_netstat() -> Result<Netstat, NetdiagError> {
    let path = "/proc/net/netstat";
    let text = fs::read_to_string(path).map_err(|e| NetdiagError::proc(path, e))?;
    parse_netstat(&text)
}

/// Parses /proc/net/netstat (or /proc/net/snmp) text.
pub fn parse_netstat(text: &str) -> Result<Netstat, NetdiagError> {
    let bad = |detail: String| NetdiagError::Parse {
        what: "/proc/net/netstat",
        detail,
    };
    let mut out = Netstat::default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines
            .next()
            .ok_or_else(|| bad(format!("header without a value line: {header:.40}")))?;
        let (hname, hrest) = header
            .split_once(':')
            .ok_or_else(|| bad(format!("no section prefix: {header:.40}")))?;
        let (vname, vrest) = values
            .split_once(':')
            .ok_or_else(|| bad(format!("no section prefix: {values:.40}")))?;
        if hname != vname {
            return Err(bad(format!("header {hname} followed by values of {vname}")));
        }
        let names: Vec<&str> = hrest.split_whitespace().collect();
        let vals: Vec<&str> = vrest.split_whitespace().collect();
        if names.len() != vals.len() {
            return Err(bad(format!(
                "{hname}: {} names but {} values",
                names.len(),
                vals.len()
            )));
        }
        let section = out.sections.entry(hname.to_string()).or_default();
        for (n, v) in names.into_iter().zip(vals) {
            // /proc/net/snmp has signed fields (Tcp: MaxConn -1); those are not counters.
            if let Ok(v) = v.parse::<u64>() {
                section.insert(n.to_string(), v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPReqQFullDrop\n\
TcpExt: 3 0 412 415 0\n\
IpExt: InNoRoutes InOctets\n\
IpExt: 0 18273843\n";

    #[test]
    fn pairs_of_lines_become_named_counters() {
        let n = parse_netstat(FIXTURE).unwrap();
        let t = n.tcp_ext();
        assert_eq!(t["ListenOverflows"], 412);
        assert_eq!(t["ListenDrops"], 415);
        assert_eq!(t["SyncookiesSent"], 3);
        assert_eq!(t.len(), 5);
        assert_eq!(n.sections["IpExt"]["InOctets"], 18273843);
    }

    #[test]
    fn mismatched_lines_are_errors() {
        assert!(parse_netstat("TcpExt: A B\nTcpExt: 1\n").is_err());
        assert!(parse_netstat("TcpExt: A B\nIpExt: 1 2\n").is_err());
        assert!(parse_netstat("TcpExt: A B\n").is_err());
        assert!(parse_netstat("garbage\nmore\n").is_err());
    }

    #[test]
    fn snmp_signed_fields_are_skipped() {
        let n = parse_netstat("Tcp: RtoAlgorithm MaxConn ActiveOpens\nTcp: 1 -1 30\n").unwrap();
        assert_eq!(n.sections["Tcp"].get("MaxConn"), None);
        assert_eq!(n.sections["Tcp"]["ActiveOpens"], 30);
    }

    #[test]
    fn live_file_has_listen_overflows() {
        assert!(read_netstat()
            .unwrap()
            .tcp_ext()
            .contains_key("ListenOverflows"));
    }
}
