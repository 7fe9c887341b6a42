//! A request head, as the application will see it: the target checked against the method,
//! `Host` rules, field limits, environ names for headers (repeats joined), the path
//! percent-decoded and split at `--root-path`, and the client address and scheme, with
//! `X-Forwarded-*` believed only from a trusted peer. Pure: the same head, peer and policy
//! always give the same frame, whichever protocol the head came in on.

use std::net::IpAddr;

use bytes::Bytes;
use spillway_proto::{BodyKind, Protocol, RequestHead, Scheme};

use crate::config::trusted::{forwarded_client, TrustedProxies};
use crate::error::Answer;
use crate::h1::head::Framing;

/// A request head as any protocol delivers it, borrowed from where it was parsed.
#[derive(Debug)]
pub(crate) struct HeadView<'a> {
    pub method: &'a str,
    /// The raw request target.
    pub target: &'a str,
    pub version: Protocol,
    pub headers: &'a [httparse::Header<'a>],
    pub framing: Framing,
    pub expect_continue: bool,
}

/// The client and server ends of a connection, as environ strings.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The address trust is decided on: the TCP peer, or the client a trusted PROXY
    /// header named (None for unix sockets).
    pub ip: Option<IpAddr>,
    pub remote_addr: Bytes,
    pub remote_port: Bytes,
    pub server_name: Bytes,
    pub server_port: Bytes,
    /// `addr:port` for logs.
    pub label: String,
    /// What the TLS handshake established, on a TLS listener.
    pub tls: Option<std::sync::Arc<crate::http::tls::TlsSession>>,
}

/// What the configuration says about building heads.
#[derive(Debug, Clone)]
pub(crate) struct RequestPolicy {
    /// `SCRIPT_NAME` prefix, empty for none.
    pub root_path: String,
    /// Longest header field, name and value.
    pub limit_request_field_size: usize,
    /// Peers whose `X-Forwarded-*` are believed.
    pub forwarded_allow_ips: TrustedProxies,
}

/// mod_ssl's variables for a TLS connection (the keys are never `HTTP_*`, so no header
/// can set them).
fn tls_environ(tls: &crate::http::tls::TlsSession, headers: &mut Vec<(Bytes, Bytes)>) {
    let mut put = |k: &'static [u8], v: &[u8]| {
        headers.push((Bytes::from_static(k), Bytes::copy_from_slice(v)));
    };
    put(b"HTTPS", b"on");
    put(b"SSL_PROTOCOL", tls.protocol.as_bytes());
    put(b"SSL_CIPHER", tls.cipher.as_bytes());
    match (&tls.client_s_dn, &tls.client_i_dn) {
        (Some(s), Some(i)) => {
            put(b"SSL_CLIENT_VERIFY", b"SUCCESS");
            put(b"SSL_CLIENT_S_DN", s.as_bytes());
            put(b"SSL_CLIENT_I_DN", i.as_bytes());
        }
        _ => put(b"SSL_CLIENT_VERIFY", b"NONE"),
    }
}

/// Builds the frame head for a request, or the answer that refuses it.
pub(crate) fn build_head(
    view: &HeadView<'_>,
    peer: &Peer,
    policy: &RequestPolicy,
) -> Result<RequestHead, Answer> {
    let target = parse_target(view)?;
    let headers = environ_headers(view.headers, policy.limit_request_field_size)?;
    let mut headers = check_host(headers, view.version, target.authority)?;
    let (script_name, path_info) = split_root(target.path, &policy.root_path);
    let (remote_addr, remote_port, mut scheme) = client_of(view.headers, peer, policy);
    if let Some(tls) = &peer.tls {
        scheme = Scheme::Https;
        tls_environ(tls, &mut headers);
    }
    let offered = view
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .map(|h| h.value);
    let trusted = peer
        .ip
        .is_some_and(|ip| policy.forwarded_allow_ips.contains(ip));
    crate::telemetry::server_timing::request_start(&mut headers, trusted);
    // Last, where `request_id_of` finds it.
    headers.push((
        Bytes::from_static(crate::telemetry::request_id::REQUEST_ID_KEY),
        crate::telemetry::request_id::choose(offered, trusted),
    ));
    headers.shrink_to_fit();
    Ok(RequestHead {
        method: Bytes::copy_from_slice(view.method.as_bytes()),
        script_name,
        path_info,
        query_string: Bytes::copy_from_slice(target.query.as_bytes()),
        protocol: view.version,
        scheme,
        server_name: peer.server_name.clone(),
        server_port: peer.server_port.clone(),
        remote_addr,
        remote_port,
        body: match view.framing {
            Framing::None => BodyKind::Empty,
            Framing::Length(n) => BodyKind::Length(n),
            Framing::Chunked => BodyKind::Chunked,
        },
        expect_continue: view.expect_continue,
        headers,
    })
}

struct Target<'a> {
    path: &'a str,
    query: &'a str,
    /// The authority of an absolute-form target, which wins over `Host`.
    authority: Option<&'a str>,
}

/// RFC 9112 §3.2: origin-form for everything, absolute-form accepted (proxies send it),
/// authority-form only for CONNECT (a tunnel no WSGI application can serve), asterisk-form
/// only for OPTIONS.
fn parse_target<'a>(view: &HeadView<'a>) -> Result<Target<'a>, Answer> {
    if view.method == "CONNECT" {
        return Err(Answer::MethodNotAllowed("Method Not Allowed: CONNECT\n"));
    }
    let t = view.target;
    if t == "*" {
        if view.method != "OPTIONS" {
            return Err(Answer::Malformed("Bad Request: * target outside OPTIONS\n"));
        }
        return Ok(Target {
            path: "*",
            query: "",
            authority: None,
        });
    }
    let bad = || Answer::Malformed("Bad Request: invalid request target\n");
    // A fragment is the client's own business (RFC 9110 §4.2.5) and never part of what
    // the server resolves; clients that send one anyway get it dropped, as by gunicorn
    // and nginx, rather than a path that ends in it.
    let t = t.split_once('#').map_or(t, |(before, _)| before);
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    let (authority, rest) = if t.starts_with('/') {
        (None, t)
    } else if let Some((scheme, after)) = t.split_once("://") {
        // An origin server is asked for http(s) resources only; a userinfo part is
        // refused (RFC 9110 §4.2.4: treat it as an error), and the authority must be a
        // host and port, since it becomes HTTP_HOST.
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(bad());
        }
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        if authority.is_empty() || !is_authority(authority.as_bytes()) {
            return Err(bad());
        }
        (Some(authority), rest)
    } else {
        return Err(Answer::Malformed(
            "Bad Request: authority-form target outside CONNECT\n",
        ));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        path,
        query,
        authority,
    })
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): an IP literal in brackets, or a reg-name
/// of unreserved, percent-encoded and sub-delim characters; then digits.
fn is_authority(a: &[u8]) -> bool {
    let port = if a.first() == Some(&b'[') {
        let Some(close) = a.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &a[1..close];
        let ip_chars = literal
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b));
        if literal.is_empty() || !ip_chars {
            return false;
        }
        &a[close + 1..]
    } else {
        let colon = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        if !is_reg_name(&a[..colon]) {
            return false;
        }
        &a[colon..]
    };
    match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => digits.iter().all(u8::is_ascii_digit),
    }
}

fn is_reg_name(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        match h[i] {
            b'%' if h
                .get(i + 1..i + 3)
                .is_some_and(|x| x.iter().all(u8::is_ascii_hexdigit)) =>
            {
                i += 3
            }
            b if REG_NAME[b as usize] => i += 1,
            _ => return false,
        }
    }
    true
}

/// Unreserved and sub-delim characters (RFC 3986 §3.2.2), as a table: every request's
/// Host goes through this, and a table lookup is a fraction of the cost of a search.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+,;=";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Environ entries for the headers: names mapped (`HTTP_X_Y`, `CONTENT_TYPE`), repeats
/// joined in order, and the names never passed on dropped.
fn environ_headers(
    fields: &[httparse::Header<'_>],
    limit: usize,
) -> Result<Vec<(Bytes, Bytes)>, Answer> {
    let mut pairs: Vec<(Bytes, Vec<u8>)> = Vec::with_capacity(fields.len());
    for f in fields {
        if f.name.len() + f.value.len() + 2 > limit {
            return Err(Answer::HeadersTooLarge);
        }
        let Some(key) = environ_key(f.name) else {
            continue;
        };
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            // RFC 9110 §5.3 joins with a comma; Cookie is the exception (RFC 6265 uses "; ").
            Some(_) if key.as_ref() == b"CONTENT_TYPE" => {
                // One media type (RFC 9110 §8.3); joined, two would read as a third.
                return Err(Answer::Malformed(
                    "Bad Request: more than one Content-Type header\n",
                ));
            }
            Some((_, v)) => {
                let sep: &[u8] = if key.as_ref() == b"HTTP_COOKIE" {
                    b"; "
                } else {
                    b","
                };
                v.extend_from_slice(sep);
                v.extend_from_slice(f.value);
            }
            None => pairs.push((key, f.value.to_vec())),
        }
    }
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, Bytes::from(v)))
        .collect())
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`. With an absolute-form
/// target its authority is the host (§3.2.2), whatever `Host` says.
fn check_host(
    mut headers: Vec<(Bytes, Bytes)>,
    version: Protocol,
    authority: Option<&str>,
) -> Result<Vec<(Bytes, Bytes)>, Answer> {
    let host = headers.iter().position(|(k, _)| k.as_ref() == b"HTTP_HOST");
    if let Some(i) = host {
        let value = &headers[i].1;
        if value.contains(&b',') {
            return Err(Answer::Malformed(
                "Bad Request: more than one Host header\n",
            ));
        }
        if !value.is_empty() && !is_authority(value) {
            return Err(Answer::Malformed("Bad Request: invalid Host header\n"));
        }
    }
    match (host, authority) {
        (None, None) if version == Protocol::Http11 => Err(Answer::Malformed(
            "Bad Request: HTTP/1.1 requires a Host header\n",
        )),
        (Some(i), Some(a)) => {
            headers[i].1 = Bytes::copy_from_slice(a.as_bytes());
            Ok(headers)
        }
        (None, Some(a)) => {
            headers.push((
                Bytes::from_static(b"HTTP_HOST"),
                Bytes::copy_from_slice(a.as_bytes()),
            ));
            Ok(headers)
        }
        _ => Ok(headers),
    }
}

/// `SCRIPT_NAME` and `PATH_INFO`: the path percent-decoded, the root path split off when
/// the path starts with it (at a segment boundary).
fn split_root(path: &str, root: &str) -> (Bytes, Bytes) {
    let decoded: Bytes = if path.contains('%') {
        Bytes::from(percent_encoding::percent_decode_str(path).collect::<Vec<u8>>())
    } else {
        Bytes::copy_from_slice(path.as_bytes())
    };
    let root = root.as_bytes();
    if !root.is_empty()
        && decoded.starts_with(root)
        && (decoded.len() == root.len() || decoded[root.len()] == b'/')
    {
        (Bytes::copy_from_slice(root), decoded.slice(root.len()..))
    } else {
        (Bytes::copy_from_slice(root), decoded)
    }
}

/// `REMOTE_ADDR`, `REMOTE_PORT` and the scheme: the peer's, unless a trusted peer said
/// otherwise in `X-Forwarded-For` / `X-Forwarded-Proto`. Everyone else's claim reaches
/// the application as the plain `HTTP_X_FORWARDED_*` header it is.
fn client_of(
    fields: &[httparse::Header<'_>],
    peer: &Peer,
    policy: &RequestPolicy,
) -> (Bytes, Bytes, Scheme) {
    let mut out = (
        peer.remote_addr.clone(),
        peer.remote_port.clone(),
        Scheme::Http,
    );
    let Some(ip) = peer
        .ip
        .filter(|ip| policy.forwarded_allow_ips.contains(*ip))
    else {
        return out;
    };
    // Repeated field lines are one comma-separated list (RFC 9110 §5.3).
    let joined = |name: &str| {
        let mut list: Option<Vec<u8>> = None;
        for f in fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name)) {
            let v = list.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.push(b',');
            }
            v.extend_from_slice(f.value);
        }
        list
    };
    let (xff, xfp) = (joined("x-forwarded-for"), joined("x-forwarded-proto"));
    if xff.is_none() && xfp.is_none() {
        return out;
    }
    let f = forwarded_client(
        xff.as_deref(),
        xfp.as_deref(),
        ip,
        &policy.forwarded_allow_ips,
    );
    if let Some(client) = f.remote_addr {
        out.0 = Bytes::from(client.to_string());
        out.1 = Bytes::new();
    }
    if f.https == Some(true) {
        out.2 = Scheme::Https;
    }
    out
}

/// The environ key for a header name, or `None` for headers never passed to the app.
fn environ_key(name: &str) -> Option<Bytes> {
    // Headers with `_` would collide with their `-` twin in the environ (X_Auth vs
    // X-Auth): a spoofing vector, dropped as nginx and gunicorn do. `Proxy` would become
    // HTTP_PROXY, which many HTTP clients read as their proxy setting (httpoxy).
    if name.contains('_') || name.eq_ignore_ascii_case("proxy") {
        return None;
    }
    // Set by `build_head`: the trusted peer's, or a new one.
    if name.eq_ignore_ascii_case("x-request-id") {
        return None;
    }
    const FIXED: [(&str, &[u8]); 13] = [
        ("host", b"HTTP_HOST"),
        ("content-type", b"CONTENT_TYPE"),
        ("content-length", b"CONTENT_LENGTH"),
        ("user-agent", b"HTTP_USER_AGENT"),
        ("accept", b"HTTP_ACCEPT"),
        ("accept-encoding", b"HTTP_ACCEPT_ENCODING"),
        ("accept-language", b"HTTP_ACCEPT_LANGUAGE"),
        ("connection", b"HTTP_CONNECTION"),
        ("cookie", b"HTTP_COOKIE"),
        ("authorization", b"HTTP_AUTHORIZATION"),
        ("x-auth-token", b"HTTP_X_AUTH_TOKEN"),
        ("x-forwarded-for", b"HTTP_X_FORWARDED_FOR"),
        ("x-forwarded-proto", b"HTTP_X_FORWARDED_PROTO"),
    ];
    if let Some((_, key)) = FIXED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Some(Bytes::from_static(key));
    }
    let mut k = Vec::with_capacity(5 + name.len());
    k.extend_from_slice(b"HTTP_");
    k.extend(name.bytes().map(|b| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        }
    }));
    Some(Bytes::from(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            ip: Some("10.0.0.9".parse().unwrap()),
            remote_addr: Bytes::from_static(b"10.0.0.9"),
            remote_port: Bytes::from_static(b"40000"),
            server_name: Bytes::from_static(b"127.0.0.1"),
            server_port: Bytes::from_static(b"8000"),
            label: "10.0.0.9:40000".into(),
            tls: None,
        }
    }

    fn policy() -> RequestPolicy {
        RequestPolicy {
            root_path: String::new(),
            limit_request_field_size: 8190,
            forwarded_allow_ips: TrustedProxies::parse("10.0.0.0/8").unwrap(),
        }
    }

    fn build(
        method: &str,
        target: &str,
        version: Protocol,
        fields: &[(&'static str, &'static str)],
        peer: &Peer,
        policy: &RequestPolicy,
    ) -> Result<RequestHead, Answer> {
        let headers: Vec<httparse::Header<'static>> = fields
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        let view = HeadView {
            method,
            target,
            version,
            headers: &headers,
            framing: Framing::None,
            expect_continue: false,
        };
        build_head(&view, peer, policy)
    }

    fn get(target: &str, fields: &[(&'static str, &'static str)]) -> Result<RequestHead, Answer> {
        build("GET", target, Protocol::Http11, fields, &peer(), &policy())
    }

    fn env<'h>(h: &'h RequestHead, key: &str) -> Option<&'h [u8]> {
        h.headers
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn an_origin_form_request_maps_to_environ_fields() {
        let h = get(
            "/a%20b/c?x=1&y=%20",
            &[
                ("Host", "example"),
                ("Content-Type", "text/plain"),
                ("X-Trace-Id", "7"),
            ],
        )
        .unwrap();
        assert_eq!(&h.method[..], b"GET");
        assert_eq!(&h.path_info[..], b"/a b/c");
        assert_eq!(&h.query_string[..], b"x=1&y=%20", "the query stays raw");
        assert_eq!(env(&h, "HTTP_HOST"), Some(&b"example"[..]));
        assert_eq!(env(&h, "CONTENT_TYPE"), Some(&b"text/plain"[..]));
        assert_eq!(env(&h, "HTTP_X_TRACE_ID"), Some(&b"7"[..]));
        assert_eq!(&h.remote_addr[..], b"10.0.0.9");
        assert_eq!(h.scheme, Scheme::Http);
    }

    #[test]
    fn http11_needs_exactly_one_host_and_http10_none() {
        assert!(matches!(get("/", &[]), Err(Answer::Malformed(_))));
        assert!(matches!(
            get("/", &[("Host", "a"), ("host", "b")]),
            Err(Answer::Malformed(_))
        ));
        assert!(build("GET", "/", Protocol::Http10, &[], &peer(), &policy()).is_ok());
    }

    #[test]
    fn an_absolute_form_authority_wins_over_host() {
        let h = get("http://real.example:8080/p?q=1", &[("Host", "spoofed")]).unwrap();
        assert_eq!(env(&h, "HTTP_HOST"), Some(&b"real.example:8080"[..]));
        assert_eq!(
            (&h.path_info[..], &h.query_string[..]),
            (&b"/p"[..], &b"q=1"[..])
        );
        let h = get("http://only.example", &[]).unwrap();
        assert_eq!(env(&h, "HTTP_HOST"), Some(&b"only.example"[..]));
        assert_eq!(&h.path_info[..], b"/");
    }

    #[test]
    fn target_forms_are_checked_against_the_method() {
        assert_eq!(
            build(
                "CONNECT",
                "example:443",
                Protocol::Http11,
                &[("Host", "x")],
                &peer(),
                &policy()
            )
            .unwrap_err()
            .status(),
            405
        );
        assert!(matches!(
            get("example:443", &[("Host", "x")]),
            Err(Answer::Malformed(_))
        ));
        assert!(matches!(
            get("*", &[("Host", "x")]),
            Err(Answer::Malformed(_))
        ));
        let h = build(
            "OPTIONS",
            "*",
            Protocol::Http11,
            &[("Host", "x")],
            &peer(),
            &policy(),
        )
        .unwrap();
        assert_eq!(&h.path_info[..], b"*");
        let h = get("/a?b=1#frag?x", &[("Host", "x")]).unwrap();
        assert_eq!(
            (&h.path_info[..], &h.query_string[..]),
            (&b"/a"[..], &b"b=1"[..]),
            "the fragment is dropped"
        );
        for bad in [
            "http://user@host/",
            "http://user:pass@host:80/",
            "s://]ufd/:",
            "ftp://host/",
            "http://ho st/",
            "http://host:8o/",
            "http://[::1/",
            "http://%zz/",
        ] {
            assert!(
                matches!(get(bad, &[]), Err(Answer::Malformed(_))),
                "accepted {bad}"
            );
        }
        let h = get("HTTPS://[::1]:8443/p", &[]).unwrap();
        assert_eq!(env(&h, "HTTP_HOST"), Some(&b"[::1]:8443"[..]));
    }

    #[test]
    fn host_must_be_a_host_and_content_type_one_value() {
        for bad in ["a b", "a/b", "a@b", "a:b:c", "[zz]"] {
            assert!(
                matches!(get("/", &[("Host", bad)]), Err(Answer::Malformed(_))),
                "accepted Host: {bad}"
            );
        }
        assert!(get("/", &[("Host", "api.example:8080")]).is_ok());
        assert!(get("/", &[("Host", "[2001:db8::1]")]).is_ok());
        assert!(matches!(
            get(
                "/",
                &[
                    ("Host", "x"),
                    ("Content-Type", "a/b"),
                    ("Content-Type", "c/d")
                ]
            ),
            Err(Answer::Malformed(_))
        ));
    }

    #[test]
    fn root_path_is_split_at_a_segment_boundary() {
        let p = RequestPolicy {
            root_path: "/identity".into(),
            ..policy()
        };
        let go =
            |t: &str| build("GET", t, Protocol::Http11, &[("Host", "x")], &peer(), &p).unwrap();
        let h = go("/identity/v3/auth");
        assert_eq!(
            (&h.script_name[..], &h.path_info[..]),
            (&b"/identity"[..], &b"/v3/auth"[..])
        );
        let h = go("/identity");
        assert_eq!(&h.path_info[..], b"");
        let h = go("/identityx/y");
        assert_eq!(
            &h.path_info[..],
            b"/identityx/y",
            "not at a boundary: left alone"
        );
    }

    #[test]
    fn repeated_headers_are_joined_and_cookies_with_semicolons() {
        let h = get(
            "/",
            &[
                ("Host", "x"),
                ("Accept", "a"),
                ("accept", "b"),
                ("Cookie", "c=1"),
                ("Cookie", "d=2"),
            ],
        )
        .unwrap();
        assert_eq!(env(&h, "HTTP_ACCEPT"), Some(&b"a,b"[..]));
        assert_eq!(env(&h, "HTTP_COOKIE"), Some(&b"c=1; d=2"[..]));
    }

    #[test]
    fn underscore_names_and_proxy_never_reach_the_application() {
        let h = get(
            "/",
            &[
                ("Host", "x"),
                ("X_Auth", "evil"),
                ("Proxy", "http://evil"),
                ("X-Auth", "ok"),
            ],
        )
        .unwrap();
        assert_eq!(env(&h, "HTTP_X_AUTH"), Some(&b"ok"[..]));
        assert_eq!(env(&h, "HTTP_PROXY"), None);
    }

    #[test]
    fn a_field_over_the_size_limit_is_431() {
        let p = RequestPolicy {
            limit_request_field_size: 20,
            ..policy()
        };
        let r = build(
            "GET",
            "/",
            Protocol::Http11,
            &[("Host", "x"), ("X-Long", "0123456789abcdef")],
            &peer(),
            &p,
        );
        assert_eq!(r.unwrap_err(), Answer::HeadersTooLarge);
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let fields = [
            ("Host", "x"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ];
        let h = build("GET", "/", Protocol::Http11, &fields, &peer(), &policy()).unwrap();
        assert_eq!(&h.remote_addr[..], b"6.6.6.6");
        assert_eq!(&h.remote_port[..], b"");
        assert_eq!(h.scheme, Scheme::Https);
        let stranger = Peer {
            ip: Some("192.0.2.1".parse().unwrap()),
            remote_addr: Bytes::from_static(b"192.0.2.1"),
            ..peer()
        };
        let h = build("GET", "/", Protocol::Http11, &fields, &stranger, &policy()).unwrap();
        assert_eq!(&h.remote_addr[..], b"192.0.2.1");
        assert_eq!(h.scheme, Scheme::Http);
        assert_eq!(
            env(&h, "HTTP_X_FORWARDED_FOR"),
            Some(&b"6.6.6.6"[..]),
            "passed on as a plain header"
        );
    }
}
