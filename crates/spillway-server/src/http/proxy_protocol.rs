//! HAProxy PROXY protocol v1 (text) and v2 (binary) header parsing, with no I/O: the
//! listener feeds the first bytes of a connection to [`parse`] until it is `Done`, then
//! hands the remaining bytes to HTTP. Follows haproxy's `doc/proxy-protocol.txt`.
//!
//! Which peers may send a header at all is decided by the caller (`--forwarded-allow-ips`);
//! this module only says what a header claims.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 header, CRLF included (spec section 2.1: "a 107-byte buffer").
pub const V1_MAX_LEN: usize = 107;
/// Longest v2 header: the 16 fixed bytes plus the largest 16-bit address length.
pub const V2_MAX_LEN: usize = 16 + 65535;
/// The 12 bytes every v2 header starts with; they cannot start any HTTP request.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_FIXED_LEN: usize = 16;

/// Addresses a PROXY header reports for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The original client, or `None` when the header does not say (LOCAL, UNKNOWN, UNSPEC,
    /// UNIX, or a non-stream transport): the caller then keeps the real peer address.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, `None` exactly when `source` is.
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// A header that carries no address (the caller keeps the socket's own addresses).
    pub const UNKNOWN: ProxyHeader = ProxyHeader {
        source: None,
        destination: None,
    };
}

/// Result of feeding the bytes received so far to [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far is a valid header prefix: read more and call again with all of them.
    Incomplete,
    /// A complete header; the first `consumed` bytes of the buffer belong to it.
    Done {
        /// What the header says.
        header: ProxyHeader,
        /// Length of the header; the application's bytes start here.
        consumed: usize,
    },
}

/// Why the bytes are not an acceptable PROXY header. The connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection starts with neither the v1 nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// No CRLF within the 107 bytes a v1 header may span.
    #[error("PROXY v1 header has no CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    /// The v1 line does not follow the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(&'static str),
    /// The v2 version nibble is not 2.
    #[error("unsupported PROXY v2 version {0}")]
    V2Version(u8),
    /// The v2 command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("unknown PROXY v2 command {0:#x}")]
    V2Command(u8),
    /// The v2 family/transport byte holds a value the spec does not define.
    #[error("invalid PROXY v2 address family/transport byte {0:#04x}")]
    V2Family(u8),
    /// The v2 address block is shorter than its family's addresses.
    #[error(
        "PROXY v2 address block of {len} bytes is shorter than the {need} bytes its family needs"
    )]
    V2ShortAddress {
        /// Length announced in the header.
        len: usize,
        /// Length the family's addresses take.
        need: usize,
    },
}

/// Parses a PROXY header (v1 or v2) at the start of `buf`.
///
/// Returns `Incomplete` only while `buf` is a proper prefix of a header that can still be
/// valid, so a caller that reads until `Done` or an error never buffers more than
/// [`V1_MAX_LEN`] or [`V2_MAX_LEN`] bytes.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first == V1_PREFIX[0] {
        parse_v1(buf)
    } else if first == V2_SIGNATURE[0] {
        parse_v2(buf)
    } else {
        Err(ProxyHeaderError::NotProxy)
    }
}

/// True when `buf` and `sig` agree on their common length.
fn prefix_matches(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if !prefix_matches(buf, V1_PREFIX) {
        return Err(ProxyHeaderError::NotProxy);
    }
    // The line ends at the first CR or LF; neither may appear inside it.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if window[end] == b'\n' {
        return Err(ProxyHeaderError::V1Malformed("LF without CR"));
    }
    match window.get(end + 1) {
        Some(b'\n') => {}
        Some(_) => return Err(ProxyHeaderError::V1Malformed("CR without LF")),
        // The LF would fall past the 107th byte.
        None if buf.len() >= V1_MAX_LEN => return Err(ProxyHeaderError::V1TooLong),
        None => return Ok(Parsed::Incomplete),
    }
    // `end >= 6`: the prefix check above saw "PROXY " first, which holds no CR or LF.
    let header = parse_v1_line(&buf[V1_PREFIX.len()..end])?;
    Ok(Parsed::Done {
        header,
        consumed: end + 2,
    })
}

/// Parses what follows "PROXY " on the line, CRLF excluded.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let line = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::V1Malformed("not ASCII"))?;
    // Exactly one space between fields (spec 2.1), so split on ' ' and let empty fields fail.
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let want_v4 = match proto {
        // "the receiver must ignore anything presented before the CRLF is found".
        "UNKNOWN" => return Ok(ProxyHeader::UNKNOWN),
        "TCP4" => true,
        "TCP6" => false,
        _ => {
            return Err(ProxyHeaderError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyHeaderError::V1Malformed(
            "expected exactly: address address port port",
        ));
    };
    let src = v1_ip(src, want_v4)?;
    let dst = v1_ip(dst, want_v4)?;
    let sport = v1_port(sport)?;
    let dport = v1_port(dport)?;
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    })
}

fn v1_ip(s: &str, want_v4: bool) -> Result<IpAddr, ProxyHeaderError> {
    if want_v4 {
        s.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyHeaderError::V1Malformed("bad IPv4 address for TCP4"))
    } else {
        s.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyHeaderError::V1Malformed("bad IPv6 address for TCP6"))
    }
}

fn v1_port(s: &str) -> Result<u16, ProxyHeaderError> {
    // u16::from_str would also take "+80"; the spec allows digits only.
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyHeaderError::V1Malformed("bad port"));
    }
    s.parse()
        .map_err(|_| ProxyHeaderError::V1Malformed("port above 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if !prefix_matches(buf, &V2_SIGNATURE) {
        return Err(ProxyHeaderError::NotProxy);
    }
    // Check the version/command and family bytes as soon as they arrive, so that garbage
    // is refused without waiting for a length's worth of bytes.
    if let Some(&ver_cmd) = buf.get(12) {
        let version = ver_cmd >> 4;
        if version != 2 {
            return Err(ProxyHeaderError::V2Version(version));
        }
        let command = ver_cmd & 0x0f;
        if command > 1 {
            return Err(ProxyHeaderError::V2Command(command));
        }
    }
    if let Some(&fam) = buf.get(13) {
        // Families 0..=3 (UNSPEC, INET, INET6, UNIX) and transports 0..=2 (UNSPEC, STREAM,
        // DGRAM) are defined; the spec says anything else "must be rejected as invalid".
        if fam >> 4 > 3 || fam & 0x0f > 2 {
            return Err(ProxyHeaderError::V2Family(fam));
        }
    }
    let (Some(&cmd), Some(&fam), Some(&hi), Some(&lo)) =
        (buf.get(12), buf.get(13), buf.get(14), buf.get(15))
    else {
        return Ok(Parsed::Incomplete);
    };
    // A u16 length: the header can never exceed V2_MAX_LEN.
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + len;
    let Some(addr) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Parsed::Incomplete);
    };
    let header = if cmd & 0x0f == 0 {
        // LOCAL: a health check from the proxy itself; the spec says to ignore the address
        // block and use the real connection endpoints.
        ProxyHeader::UNKNOWN
    } else {
        v2_addresses(fam, addr)?
    };
    // Whatever follows the addresses (TLVs) is skipped: `total` covers it.
    Ok(Parsed::Done {
        header,
        consumed: total,
    })
}

/// Reads the addresses of a PROXY (not LOCAL) command; TLVs after them are ignored.
fn v2_addresses(fam: u8, addr: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let need = match fam {
        0x11 => 12, // TCP over IPv4: 4 + 4 + 2 + 2
        0x21 => 36, // TCP over IPv6: 16 + 16 + 2 + 2
        0x31 | 0x32 => 216,
        0x12 => 12,
        0x22 => 36,
        // UNSPEC family or transport: the receiver keeps its own addresses.
        _ => 0,
    };
    if addr.len() < need {
        return Err(ProxyHeaderError::V2ShortAddress {
            len: addr.len(),
            need,
        });
    }
    let port = |at: usize| u16::from_be_bytes([addr[at], addr[at + 1]]);
    let (src, dst, sport, dport) = match fam {
        0x11 => {
            let src: [u8; 4] = [addr[0], addr[1], addr[2], addr[3]];
            let dst: [u8; 4] = [addr[4], addr[5], addr[6], addr[7]];
            (IpAddr::from(src), IpAddr::from(dst), port(8), port(10))
        }
        0x21 => {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&addr[..16]);
            dst.copy_from_slice(&addr[16..32]);
            (IpAddr::from(src), IpAddr::from(dst), port(32), port(34))
        }
        // UNIX paths and datagram transports mean nothing to a TCP HTTP server: like
        // haproxy itself, keep the connection's own addresses.
        _ => return Ok(ProxyHeader::UNKNOWN),
    };
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(Parsed::Done { header, consumed }) => (header, consumed),
            other => panic!("expected Done for {buf:?}, got {other:?}"),
        }
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("test address"))
    }

    /// Every proper prefix of a valid header must be Incomplete, never an error.
    fn assert_prefixes_incomplete(header: &[u8]) {
        for split in 0..header.len() {
            assert_eq!(
                parse(&header[..split]),
                Ok(Parsed::Incomplete),
                "split at {split} of {header:?}"
            );
        }
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        let len = u16::try_from(body.len()).expect("test body fits u16");
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn v2_tcp4_body() -> Vec<u8> {
        let mut b = vec![192, 168, 0, 1, 192, 168, 0, 11];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    // --- v1 -----------------------------------------------------------------------------

    #[test]
    fn v1_spec_tcp4_example() {
        let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let (header, consumed) = done(h);
        assert_eq!(consumed, 47);
        assert_eq!(&h[consumed..consumed + 3], b"GET");
        assert_eq!(header.source, sa("192.168.0.1:56324"));
        assert_eq!(header.destination, sa("192.168.0.11:443"));
    }

    #[test]
    fn v1_spec_worst_case_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        let (header, consumed) = done(h);
        assert_eq!(consumed, h.len());
        assert_eq!(header.source, sa("255.255.255.255:65535"));

        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let h = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
        assert_eq!(h.len(), 104);
        let (header, consumed) = done(h.as_bytes());
        assert_eq!(consumed, 104);
        assert_eq!(header.destination, sa(&format!("[{f}]:65535")));
    }

    #[test]
    fn v1_tcp6_compressed() {
        let (header, _) = done(b"PROXY TCP6 2001:db8::1 ::1 1234 80\r\n");
        assert_eq!(header.source, sa("[2001:db8::1]:1234"));
        assert_eq!(header.destination, sa("[::1]:80"));
    }

    #[test]
    fn v1_unknown_short_and_worst_case() {
        assert_eq!(
            done(b"PROXY UNKNOWN\r\n"),
            (ProxyHeader::UNKNOWN, 15),
            "the shortest header"
        );
        // 107 bytes: the largest header the spec allows; what follows UNKNOWN is ignored.
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let h = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
        assert_eq!(h.len(), V1_MAX_LEN);
        assert_eq!(done(h.as_bytes()), (ProxyHeader::UNKNOWN, V1_MAX_LEN));
        assert_eq!(
            done(b"PROXY UNKNOWN anything at all\r\nxyz"),
            (ProxyHeader::UNKNOWN, 31)
        );
    }

    #[test]
    fn v1_every_split_is_incomplete() {
        assert_prefixes_incomplete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
        assert_prefixes_incomplete(b"PROXY TCP6 2001:db8::1 ::1 1234 80\r\n");
        assert_prefixes_incomplete(b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v1_too_long() {
        let mut h = b"PROXY UNKNOWN ".to_vec();
        h.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&h), Ok(Parsed::Incomplete));
        h.push(b'x');
        assert_eq!(parse(&h), Err(ProxyHeaderError::V1TooLong));
        // CR as the 107th byte: the LF would be the 108th.
        let mut h = b"PROXY UNKNOWN ".to_vec();
        h.resize(V1_MAX_LEN - 1, b'x');
        h.push(b'\r');
        assert_eq!(parse(&h), Err(ProxyHeaderError::V1TooLong));
        h.push(b'\n');
        assert_eq!(parse(&h), Err(ProxyHeaderError::V1TooLong));
    }

    #[test]
    fn v1_malformed() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",
            b"PROXY \r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 +2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 -2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 000002\r\n",
            b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\xff\r\n",
        ];
        for h in bad {
            match parse(h) {
                Err(ProxyHeaderError::V1Malformed(_)) => {}
                other => panic!("{}: expected V1Malformed, got {other:?}", h.escape_ascii()),
            }
        }
    }

    #[test]
    fn v1_signature_mismatch_is_not_proxy() {
        for h in [
            &b"PROXX"[..],
            b"POST / HTTP/1.1\r\n",
            b"PROXYTCP4",
            b"P\r\n",
            b"PROXY\r\n",
        ] {
            assert_eq!(parse(h), Err(ProxyHeaderError::NotProxy), "{h:?}");
        }
    }

    // --- v2 -----------------------------------------------------------------------------

    #[test]
    fn v2_tcp4_with_trailing_data() {
        let mut h = v2(1, 0x11, &v2_tcp4_body());
        let len = h.len();
        h.extend_from_slice(b"GET /");
        let (header, consumed) = done(&h);
        assert_eq!(consumed, len);
        assert_eq!(header.source, sa("192.168.0.1:56324"));
        assert_eq!(header.destination, sa("192.168.0.11:443"));
    }

    #[test]
    fn v2_tcp6() {
        let src: Ipv6Addr = "2001:db8::7".parse().expect("addr");
        let dst: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&dst.octets());
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&8443u16.to_be_bytes());
        let h = v2(1, 0x21, &body);
        let (header, consumed) = done(&h);
        assert_eq!(consumed, 16 + 36);
        assert_eq!(header.source, sa("[2001:db8::7]:40000"));
        assert_eq!(header.destination, sa("[2001:db8::1]:8443"));
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut body = v2_tcp4_body();
        // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "example.com", PP2_TYPE_NOOP padding.
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        body.extend_from_slice(&[0x02, 0x00, 0x0b]);
        body.extend_from_slice(b"example.com");
        body.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let h = v2(1, 0x11, &body);
        let (header, consumed) = done(&h);
        assert_eq!(consumed, h.len());
        assert_eq!(header.source, sa("192.168.0.1:56324"));
    }

    #[test]
    fn v2_local_ignores_addresses() {
        // haproxy's health checks send LOCAL with UNSPEC and no address block.
        let h = v2(0, 0x00, &[]);
        assert_eq!(done(&h), (ProxyHeader::UNKNOWN, 16));
        // A LOCAL header may still carry addresses: they must be ignored.
        let h = v2(0, 0x11, &v2_tcp4_body());
        assert_eq!(done(&h), (ProxyHeader::UNKNOWN, 28));
        // ... even a short block, as nothing is read from it.
        let h = v2(0, 0x21, &[1, 2, 3]);
        assert_eq!(done(&h), (ProxyHeader::UNKNOWN, 19));
    }

    #[test]
    fn v2_unspec_unix_and_dgram_are_unknown() {
        assert_eq!(done(&v2(1, 0x00, &[])), (ProxyHeader::UNKNOWN, 16));
        assert_eq!(done(&v2(1, 0x10, &[9; 12])), (ProxyHeader::UNKNOWN, 28));
        assert_eq!(done(&v2(1, 0x31, &[0; 216])), (ProxyHeader::UNKNOWN, 232));
        assert_eq!(done(&v2(1, 0x32, &[0; 216])), (ProxyHeader::UNKNOWN, 232));
        assert_eq!(
            done(&v2(1, 0x12, &v2_tcp4_body())),
            (ProxyHeader::UNKNOWN, 28)
        );
        assert_eq!(done(&v2(1, 0x22, &[0; 36])), (ProxyHeader::UNKNOWN, 52));
    }

    #[test]
    fn v2_every_split_is_incomplete() {
        assert_prefixes_incomplete(&v2(1, 0x11, &v2_tcp4_body()));
        assert_prefixes_incomplete(&v2(0, 0x00, &[]));
        let mut body = v2_tcp4_body();
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
        assert_prefixes_incomplete(&v2(1, 0x11, &body));
    }

    #[test]
    fn v2_largest_header() {
        let mut body = v2_tcp4_body();
        // Fill to the 65535-byte maximum with one NOOP TLV.
        let pad = 65535 - body.len() - 3;
        body.push(0x04);
        body.extend_from_slice(&u16::try_from(pad).expect("fits").to_be_bytes());
        body.resize(65535, 0);
        let h = v2(1, 0x11, &body);
        assert_eq!(h.len(), V2_MAX_LEN);
        assert_eq!(parse(&h[..V2_MAX_LEN - 1]), Ok(Parsed::Incomplete));
        let (header, consumed) = done(&h);
        assert_eq!(consumed, V2_MAX_LEN);
        assert_eq!(header.source, sa("192.168.0.1:56324"));
    }

    #[test]
    fn v2_bad_version_command_family() {
        let mut h = v2(1, 0x11, &v2_tcp4_body());
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(ProxyHeaderError::V2Version(1)));
        // Refused as soon as byte 13 arrives.
        assert_eq!(parse(&h[..13]), Err(ProxyHeaderError::V2Version(1)));
        h[12] = 0x22;
        assert_eq!(parse(&h[..13]), Err(ProxyHeaderError::V2Command(2)));
        h[12] = 0x2f;
        assert_eq!(parse(&h), Err(ProxyHeaderError::V2Command(0xf)));
        h[12] = 0x21;
        for fam in [0x13, 0x41, 0xff, 0x03] {
            h[13] = fam;
            assert_eq!(parse(&h[..14]), Err(ProxyHeaderError::V2Family(fam)));
            assert_eq!(parse(&h), Err(ProxyHeaderError::V2Family(fam)));
        }
    }

    #[test]
    fn v2_address_block_too_short() {
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 11])),
            Err(ProxyHeaderError::V2ShortAddress { len: 11, need: 12 })
        );
        assert_eq!(
            parse(&v2(1, 0x21, &[0; 12])),
            Err(ProxyHeaderError::V2ShortAddress { len: 12, need: 36 })
        );
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 200])),
            Err(ProxyHeaderError::V2ShortAddress {
                len: 200,
                need: 216
            })
        );
    }

    #[test]
    fn v2_signature_mismatch_is_not_proxy() {
        let mut h = v2(1, 0x11, &v2_tcp4_body());
        for i in 1..12 {
            let saved = h[i];
            h[i] ^= 0x40;
            assert_eq!(parse(&h[..=i]), Err(ProxyHeaderError::NotProxy), "byte {i}");
            assert_eq!(parse(&h), Err(ProxyHeaderError::NotProxy), "byte {i}");
            h[i] = saved;
        }
        // A blank line before a request is not a v2 header either.
        assert_eq!(parse(b"\r\nGET /"), Err(ProxyHeaderError::NotProxy));
    }

    #[test]
    fn bytes_captured_from_haproxy_2_6() {
        // `server ... send-proxy-v2` on a request from 127.0.0.1:46462 to port 18080.
        let h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01\xb5\x7e\x46\xa0GET /x HTTP/1.1\r\n";
        let (header, consumed) = done(h);
        assert_eq!(consumed, 28);
        assert_eq!(header.source, sa("127.0.0.1:46462"));
        assert_eq!(header.destination, sa("127.0.0.1:18080"));
        // `check` with send-proxy-v2 and no `port`: health checks arrive as LOCAL.
        let h = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00GET /readyz HTTP/1.0\r\n\r\n";
        assert_eq!(done(h), (ProxyHeader::UNKNOWN, 16));
        // `server ... send-proxy`.
        let h = b"PROXY TCP4 127.0.0.1 127.0.0.1 46474 18080\r\nGET /v1 HTTP/1.1\r\n";
        let (header, consumed) = done(h);
        assert_eq!(&h[consumed..consumed + 4], b"GET ");
        assert_eq!(header.source, sa("127.0.0.1:46474"));
    }

    // --- neither ------------------------------------------------------------------------

    #[test]
    fn empty_is_incomplete_and_garbage_is_refused() {
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
        for h in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"\0",
            b"\xff\xff",
        ] {
            assert_eq!(parse(h), Err(ProxyHeaderError::NotProxy));
        }
    }

    #[test]
    fn consumed_never_exceeds_input_for_small_inputs() {
        // A cheap stand-in for the fuzz target: all 1- and 2-byte suffixes after each valid
        // prefix must parse without panicking and never over-consume.
        let seeds: [&[u8]; 2] = [b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &V2_SIGNATURE];
        for seed in seeds {
            for split in 0..=seed.len() {
                for a in 0..=255u8 {
                    let mut v = seed[..split].to_vec();
                    v.push(a);
                    if let Ok(Parsed::Done { consumed, .. }) = parse(&v) {
                        assert!(consumed <= v.len());
                    }
                }
            }
        }
    }
}
