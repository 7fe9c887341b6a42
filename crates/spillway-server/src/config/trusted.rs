//! Which peers are trusted proxies (`--forwarded-allow-ips`), and what the client address
//! and scheme are once `X-Forwarded-For` / `X-Forwarded-Proto` from such a peer are
//! applied. Headers from any other peer are ignored: a client could write anything there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The `--forwarded-allow-ips` default: only proxies on this host.
pub const DEFAULT_TRUSTED: &str = "127.0.0.1,::1";

/// A set of trusted proxy addresses: IPs and CIDR networks of both families, or everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    /// `*` was given: every peer is trusted.
    all: bool,
    /// Networks with their host bits clear; IPv4-mapped IPv6 entries are stored as IPv4.
    nets: Vec<Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// An entry of `--forwarded-allow-ips` that is not an IP, a CIDR network or `*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("forwarded-allow-ips: {entry:?} {reason}")]
pub struct TrustedError {
    /// The entry as written (trimmed).
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TrustedProxies {
    /// Parses a comma-separated list of IPs, CIDRs (`10.0.0.0/8`, `fd00::/8`) and `*`.
    ///
    /// Blanks around entries and empty entries are ignored, so `""` trusts nobody. A
    /// network with host bits set (`10.0.0.1/8`) is refused rather than guessed at.
    pub fn parse(list: &str) -> Result<Self, TrustedError> {
        let mut all = false;
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                all = true;
                continue;
            }
            let err = |reason| TrustedError {
                entry: entry.to_owned(),
                reason,
            };
            let net = match entry.split_once('/') {
                None => {
                    let addr: IpAddr = entry
                        .parse()
                        .map_err(|_| err("is not an IP address, a CIDR network or *"))?;
                    let prefix = if addr.is_ipv4() { 32 } else { 128 };
                    Net { addr, prefix }
                }
                Some((addr, prefix)) => {
                    let addr: IpAddr = addr
                        .parse()
                        .map_err(|_| err("does not start with an IP address"))?;
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    // u8::from_str would take "+8"; only plain digits are a prefix length.
                    let prefix = Some(prefix)
                        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|p| p.parse::<u8>().ok())
                        .filter(|&p| p <= max)
                        .ok_or_else(|| err("has an invalid prefix length"))?;
                    if mask(addr, prefix) != addr {
                        return Err(err(
                            "has host bits set after the prefix; write the network address",
                        ));
                    }
                    Net { addr, prefix }
                }
            };
            nets.push(canonical_net(net));
        }
        Ok(Self { all, nets })
    }

    /// True if `ip` is trusted; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .any(|n| n.addr.is_ipv4() == ip.is_ipv4() && mask(ip, n.prefix) == n.addr)
    }

    /// True if nobody is trusted (forwarded headers and PROXY headers are never applied).
    pub fn is_empty(&self) -> bool {
        !self.all && self.nets.is_empty()
    }
}

impl Default for TrustedProxies {
    /// `127.0.0.1,::1`: a proxy on the same host.
    fn default() -> Self {
        let v4 = Net {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            prefix: 32,
        };
        let v6 = Net {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        };
        Self {
            all: false,
            nets: vec![v4, v6],
        }
    }
}

impl FromStr for TrustedProxies {
    type Err = TrustedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TrustedProxies {
    /// The canonical list, as [`TrustedProxies::parse`] accepts it (for the start-up log).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.all {
            f.write_str("*")?;
            sep = ",";
        }
        for n in &self.nets {
            let full = if n.addr.is_ipv4() { 32 } else { 128 };
            if n.prefix == full {
                write!(f, "{sep}{}", n.addr)?;
            } else {
                write!(f, "{sep}{}/{}", n.addr, n.prefix)?;
            }
            sep = ",";
        }
        Ok(())
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Stores an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 one it means,
/// since [`TrustedProxies::contains`] compares mapped peers as IPv4.
fn canonical_net(n: Net) -> Net {
    match n.addr {
        IpAddr::V6(a) if n.prefix >= 96 => match a.to_ipv4_mapped() {
            Some(v4) => Net {
                addr: IpAddr::V4(v4),
                prefix: n.prefix - 96,
            },
            None => n,
        },
        _ => n,
    }
}

/// What trusted forwarding headers say about the client; `None` keeps the connection's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The client address for `REMOTE_ADDR`.
    pub remote_addr: Option<IpAddr>,
    /// Whether the client used HTTPS, for `wsgi.url_scheme`.
    pub https: Option<bool>,
}

/// Applies `X-Forwarded-For` (`xff`) and `X-Forwarded-Proto` (`xfp`) if `peer` is trusted.
///
/// Pass each header's field lines joined with `,` (HTTP's rule for repeated fields), or
/// `None` when absent. Nothing is taken from an untrusted peer.
///
/// `X-Forwarded-For`: every proxy appends the address it received the request from, so
/// only the entries appended by trusted proxies are reliable. Walking from the right, the
/// entries of trusted proxies are skipped and the first untrusted one is the client: a
/// client cannot forge its way past this, since whatever it wrote sits to the left. If every
/// entry is trusted (always the case with `*`), the leftmost is taken. This is uvicorn's
/// `ProxyHeadersMiddleware` rule, and werkzeug's `ProxyFix` with `x_for` set to the number
/// of trusted hops. An entry that is not an IP address (`unknown`, an obfuscated RFC 7239
/// name, garbage) stops the walk and the peer address is kept, since nothing to its left
/// can be attributed. Entries may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:443`),
/// which is dropped; IPv4-mapped IPv6 addresses are reported as IPv4.
///
/// `X-Forwarded-Proto`: `https` or `http` (any case) in the rightmost entry, which the
/// nearest (trusted) proxy wrote; anything else is ignored.
pub fn forwarded_client(
    xff: Option<&[u8]>,
    xfp: Option<&[u8]>,
    peer: IpAddr,
    trusted: &TrustedProxies,
) -> Forwarded {
    if !trusted.contains(peer) {
        return Forwarded::default();
    }
    Forwarded {
        remote_addr: xff.and_then(|v| client_from_xff(v, trusted)),
        https: xfp.and_then(https_from_xfp),
    }
}

fn client_from_xff(value: &[u8], trusted: &TrustedProxies) -> Option<IpAddr> {
    let value = std::str::from_utf8(value).ok()?;
    let mut leftmost = None;
    for entry in value.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
        let ip = parse_hop(entry)?.to_canonical();
        if !trusted.contains(ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// One `X-Forwarded-For` entry: an IP, optionally bracketed (IPv6) and with a port.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

fn https_from_xfp(value: &[u8]) -> Option<bool> {
    let last = value.rsplit(|&b| b == b',').next()?.trim_ascii();
    if last.eq_ignore_ascii_case(b"https") {
        Some(true)
    } else if last.eq_ignore_ascii_case(b"http") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn tp(s: &str) -> TrustedProxies {
        TrustedProxies::parse(s).expect("test list")
    }

    #[test]
    fn default_is_loopback_only() {
        let d = TrustedProxies::default();
        assert_eq!(d, tp(DEFAULT_TRUSTED));
        assert!(d.contains(ip("127.0.0.1")));
        assert!(d.contains(ip("::1")));
        assert!(d.contains(ip("::ffff:127.0.0.1")));
        assert!(!d.contains(ip("127.0.0.2")));
        assert!(!d.contains(ip("10.0.0.1")));
        assert_eq!(d.to_string(), "127.0.0.1,::1");
    }

    #[test]
    fn cidrs_of_both_families() {
        let t = tp(" 10.0.0.0/8 , 192.168.1.0/24,fd00::/8, 2001:db8::5 ,");
        for yes in [
            "10.0.0.1",
            "10.255.255.255",
            "192.168.1.77",
            "fd12::1",
            "2001:db8::5",
        ] {
            assert!(t.contains(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.1",
            "192.168.2.1",
            "fe80::1",
            "2001:db8::6",
            "127.0.0.1",
        ] {
            assert!(!t.contains(ip(no)), "{no}");
        }
        assert_eq!(
            t.to_string(),
            "10.0.0.0/8,192.168.1.0/24,fd00::/8,2001:db8::5"
        );
        assert_eq!(tp(&t.to_string()), t);
    }

    #[test]
    fn prefix_edges() {
        let t = tp("0.0.0.0/0");
        assert!(t.contains(ip("1.2.3.4")));
        assert!(
            !t.contains(ip("::2")),
            "an IPv4 network does not hold IPv6 peers"
        );
        assert!(tp("::/0").contains(ip("2001:db8::1")));
        assert!(tp("1.2.3.4/32").contains(ip("1.2.3.4")));
        assert!(!tp("1.2.3.4/32").contains(ip("1.2.3.5")));
        assert!(tp("::1/128").contains(ip("::1")));
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let t = tp("10.0.0.0/8");
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        let t = tp("::ffff:10.0.0.0/104");
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert_eq!(t.to_string(), "10.0.0.0/8");
        assert!(tp("::ffff:1.2.3.4").contains(ip("1.2.3.4")));
    }

    #[test]
    fn star_and_empty() {
        let all = tp("*");
        assert!(all.contains(ip("8.8.8.8")));
        assert!(all.contains(ip("2001:db8::1")));
        assert_eq!(all.to_string(), "*");
        assert_eq!(tp("10.0.0.0/8, *").to_string(), "*,10.0.0.0/8");
        let none = tp("");
        assert!(none.is_empty());
        assert!(!none.contains(ip("127.0.0.1")));
        assert!(tp(" , ").is_empty());
    }

    #[test]
    fn errors_name_the_entry() {
        let cases = [
            ("127.0.0.1, localhost", "localhost"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("fd00::/129", "fd00::/129"),
            ("10.0.0.0/", "10.0.0.0/"),
            ("10.0.0.0/+8", "10.0.0.0/+8"),
            ("10.0.0.0/8/8", "10.0.0.0/8/8"),
            ("10.0.0.1/8", "10.0.0.1/8"),
            ("fd00::1/8", "fd00::1/8"),
            ("host/8", "host/8"),
            ("[::1]", "[::1]"),
            ("**", "**"),
            ("1.2.3.4:80", "1.2.3.4:80"),
        ];
        for (list, entry) in cases {
            let e = TrustedProxies::parse(list).expect_err(list);
            assert_eq!(e.entry, entry);
            assert!(e.to_string().contains(entry), "{e}");
        }
        let e = "10.0.0.1/8"
            .parse::<TrustedProxies>()
            .expect_err("host bits");
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    fn fwd(xff: Option<&str>, xfp: Option<&str>, peer: &str, t: &TrustedProxies) -> Forwarded {
        forwarded_client(xff.map(str::as_bytes), xfp.map(str::as_bytes), ip(peer), t)
    }

    #[test]
    fn untrusted_peer_is_ignored() {
        let t = TrustedProxies::default();
        let f = fwd(Some("1.2.3.4"), Some("https"), "10.0.0.9", &t);
        assert_eq!(f, Forwarded::default());
    }

    #[test]
    fn single_proxy() {
        let t = TrustedProxies::default();
        let f = fwd(Some("203.0.113.7"), Some("https"), "127.0.0.1", &t);
        assert_eq!(f.remote_addr, Some(ip("203.0.113.7")));
        assert_eq!(f.https, Some(true));
        // A mapped peer address is trusted like its IPv4 form.
        let f = fwd(Some("203.0.113.7"), Some("http"), "::ffff:127.0.0.1", &t);
        assert_eq!(f.remote_addr, Some(ip("203.0.113.7")));
        assert_eq!(f.https, Some(false));
    }

    #[test]
    fn rightmost_untrusted_hop_wins_over_forged_entries() {
        let t = tp("127.0.0.1,10.0.0.0/8");
        // The client forged "6.6.6.6"; the edge proxy 10.0.0.2 appended the real client
        // 198.51.100.1; the local proxy appended 10.0.0.2.
        let f = fwd(
            Some("6.6.6.6, 198.51.100.1, 10.0.0.2"),
            None,
            "127.0.0.1",
            &t,
        );
        assert_eq!(f.remote_addr, Some(ip("198.51.100.1")));
        assert_eq!(f.https, None);
    }

    #[test]
    fn all_trusted_takes_leftmost() {
        let t = tp("10.0.0.0/8, 127.0.0.1");
        let f = fwd(Some("10.0.0.5, 10.0.0.2"), None, "127.0.0.1", &t);
        assert_eq!(f.remote_addr, Some(ip("10.0.0.5")));
        let f = fwd(Some("6.6.6.6, 198.51.100.1"), None, "192.0.2.1", &tp("*"));
        assert_eq!(f.remote_addr, Some(ip("6.6.6.6")));
    }

    #[test]
    fn xff_entry_forms() {
        let t = TrustedProxies::default();
        for (xff, want) in [
            ("203.0.113.7:5678", "203.0.113.7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("  203.0.113.7  ", "203.0.113.7"),
            ("203.0.113.7,,", "203.0.113.7"),
            ("1.1.1.1,203.0.113.7", "203.0.113.7"),
        ] {
            let f = fwd(Some(xff), None, "::1", &t);
            assert_eq!(f.remote_addr, Some(ip(want)), "{xff}");
        }
    }

    #[test]
    fn xff_garbage_keeps_peer() {
        let t = tp("127.0.0.1,10.0.0.0/8");
        for xff in [
            "",
            " , ",
            "unknown",
            "_hidden",
            "1.2.3.4, unknown",
            "fe80::1%eth0",
        ] {
            let f = fwd(Some(xff), None, "127.0.0.1", &t);
            assert_eq!(f.remote_addr, None, "{xff:?}");
        }
        // A garbage entry left of the client does not matter: the walk stopped before it.
        let f = fwd(Some("unknown, 198.51.100.1"), None, "127.0.0.1", &t);
        assert_eq!(f.remote_addr, Some(ip("198.51.100.1")));
        // Garbage right of the client hides it: nothing further left can be attributed.
        let f = fwd(Some("198.51.100.1, unknown"), None, "127.0.0.1", &t);
        assert_eq!(f.remote_addr, None);
        let f = forwarded_client(Some(b"\xff\xfe"), None, ip("127.0.0.1"), &t);
        assert_eq!(f.remote_addr, None);
    }

    #[test]
    fn xfp_values() {
        let t = TrustedProxies::default();
        for (xfp, want) in [
            ("https", Some(true)),
            ("HTTPS", Some(true)),
            (" https ", Some(true)),
            ("http", Some(false)),
            ("Http", Some(false)),
            ("http, https", Some(true)),
            ("https, http", Some(false)),
            ("wss", None),
            ("", None),
            ("https;x", None),
        ] {
            assert_eq!(fwd(None, Some(xfp), "127.0.0.1", &t).https, want, "{xfp:?}");
        }
        let f = forwarded_client(None, Some(b"\xffhttps"), ip("127.0.0.1"), &t);
        assert_eq!(f.https, None);
    }
}
