//! The target URL (plain `http://` only) and the request bytes sent to it, built once per run.

use std::net::{SocketAddr, ToSocketAddrs};

/// Why a URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A scheme other than `http`.
    #[error("scheme `{0}` is not supported; bench speaks plain http:// only")]
    Scheme(String),
    /// No host, a bad port, or a malformed authority.
    #[error("`{0}` is not a URL like http://HOST[:PORT][/PATH]")]
    Malformed(String),
    /// The host name did not resolve.
    #[error("cannot resolve `{host}`: {reason}")]
    Resolve {
        /// The host as written.
        host: String,
        /// Why resolution failed.
        reason: String,
    },
}

/// Where requests go.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL as given.
    pub url: String,
    /// Value of the Host header: the authority as written.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The resolved address; the first one the resolver returned.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and resolves a URL; resolution happens once, before the run starts.
    pub(crate) fn parse(url: &str) -> Result<Target, TargetError> {
        let malformed = || TargetError::Malformed(url.to_string());
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => return Err(TargetError::Scheme(scheme.to_string())),
            None => url,
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.is_empty()
            || authority.contains('@')
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(malformed());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(malformed)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| malformed())?,
                None if after.is_empty() => 80,
                None => return Err(malformed()),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse::<u16>().map_err(|_| malformed())?),
                None => (authority, 80),
            }
        };
        if host.is_empty() {
            return Err(malformed());
        }
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| TargetError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| TargetError::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            })?;
        Ok(Target {
            url: url.to_string(),
            authority: authority.to_string(),
            path,
            addr,
        })
    }
}

/// The request bytes: one form that keeps the connection alive and one that asks the server
/// to close it (sent as the last request of a connection, so the server, not the client,
/// ends up holding TIME_WAIT as it would with real clients that say goodbye).
#[derive(Debug)]
pub(crate) struct RequestTemplate {
    /// Request method.
    pub method: String,
    /// True for HEAD: its response has no body whatever the headers say.
    pub is_head: bool,
    keep_alive: Vec<u8>,
    close: Vec<u8>,
    /// Body length in bytes.
    pub body_len: usize,
}

impl RequestTemplate {
    /// Builds both forms of the request.
    pub(crate) fn new(
        target: &Target,
        method: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> RequestTemplate {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {} HTTP/1.1\r\n", target.path);
        if !has("host") {
            head.push_str(&format!("Host: {}\r\n", target.authority));
        }
        if !has("user-agent") {
            head.push_str(concat!(
                "User-Agent: spillway-bench/",
                env!("CARGO_PKG_VERSION"),
                "\r\n"
            ));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        let user_connection = has("connection");
        let build = |close: bool| {
            let mut bytes = head.clone().into_bytes();
            if close && !user_connection {
                bytes.extend_from_slice(b"Connection: close\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body);
            bytes
        };
        RequestTemplate {
            method: method.to_string(),
            is_head: method.eq_ignore_ascii_case("HEAD"),
            keep_alive: build(false),
            close: build(true),
            body_len: body.len(),
        }
    }

    /// The bytes to send; `last` asks the server to close the connection after responding.
    pub(crate) fn bytes(&self, last: bool) -> &[u8] {
        if last {
            &self.close
        } else {
            &self.keep_alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?x=1#frag").expect("valid");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/a/b?x=1");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        let t = Target::parse("127.0.0.1:9").expect("valid");
        assert_eq!(t.path, "/");
        let t = Target::parse("http://[::1]:81?q").expect("valid");
        assert_eq!(t.path, "/?q");
        assert_eq!(t.addr.port(), 81);
        assert!(matches!(
            Target::parse("https://127.0.0.1/"),
            Err(TargetError::Scheme(_))
        ));
        for bad in [
            "http://",
            "http://:80/",
            "http://h:99999/",
            "http://u@h/",
            "http://[::1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_bytes() {
        let t = Target::parse("http://127.0.0.1:8080/p").expect("valid");
        let r = RequestTemplate::new(
            &t,
            "POST",
            &[("X-A".into(), "1".into())],
            Some(b"hello".to_vec()),
        );
        let text = String::from_utf8(r.bytes(true).to_vec()).expect("utf8");
        assert!(text.starts_with("POST /p HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("X-A: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"));
        let keep = String::from_utf8(r.bytes(false).to_vec()).expect("utf8");
        assert!(!keep.contains("Connection"));
    }
}
