//! What the admin endpoint checks before it answers a browser-reachable request.
//!
//! DNS rebinding: a page on `evil.example` whose name is made to resolve to 127.0.0.1
//! reads the admin endpoint as its own origin, but its requests carry
//! `Host: evil.example`. So `Host` must be an IP address (a page can only be served from
//! an address it names itself), a localhost name, or a name the operator listed.
//!
//! Cross-site requests: any page can make a browser POST to a loopback address. A reload
//! is accepted only from a request such a page cannot send: modern browsers send
//! `Origin` and `Sec-Fetch-Site` with a cross-site POST, and an HTML form always sends
//! one of the three form content types, which are refused whatever else the request says.
//! `curl -X POST` (no `Origin`, no content type) passes.

use std::net::IpAddr;

use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::HeaderMap;

/// Content types an HTML form (or a CORS-simple request) can send.
const FORM_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Whether `host` (a `Host` value or an origin's authority, port allowed) is an address,
/// a localhost name, or one of `names` (lowercase).
pub(super) fn allowed_host(host: &str, names: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        },
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || names.contains(&name)
}

/// This machine's host name (lowercase), which a rebinding page cannot send as `Host`.
pub(super) fn own_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `len` bytes into the buffer we own.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The `Host` check; `Err` is the reason, for a 403. A request without `Host` (HTTP/1.0
/// tools) passes: browsers always send one.
pub(super) fn host(headers: &HeaderMap, names: &[String]) -> Result<(), &'static str> {
    match headers.get(HOST).map(|h| h.to_str()) {
        None => Ok(()),
        Some(Ok(h)) if allowed_host(h, names) => Ok(()),
        Some(_) => Err("forbidden: Host is not an address, localhost, this host's name or a name in --admin-hosts\n"),
    }
}

/// The cross-site check for `POST /reload`; `Err` is the reason, for a 403.
pub(super) fn same_site(headers: &HeaderMap, names: &[String]) -> Result<(), &'static str> {
    if let Some(origin) = headers.get(ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
        if !authority.is_some_and(|a| allowed_host(a, names)) {
            return Err("forbidden: a cross-site request (Origin) cannot reload\n");
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err("forbidden: a cross-site request (Sec-Fetch-Site) cannot reload\n");
        }
    }
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if FORM_TYPES.contains(&essence) {
            return Err(
                "forbidden: a form post cannot reload (send no body, or a non-form Content-Type)\n",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_that_a_rebinding_page_would_send_are_refused() {
        let names = vec!["admin.internal".to_owned()];
        for ok in [
            "127.0.0.1:9000",
            "[::1]:9000",
            "10.1.2.3",
            "localhost:9000",
            "LOCALHOST.",
            "app.localhost",
            "admin.internal:9000",
        ] {
            assert!(allowed_host(ok, &names), "{ok}");
        }
        for bad in [
            "evil.example:9000",
            "127.0.0.1.evil.example",
            "",
            "[::1",
            "admin.internal.evil",
        ] {
            assert!(!allowed_host(bad, &names), "{bad}");
        }
    }

    #[test]
    fn a_reload_a_cross_site_page_could_send_is_refused() {
        let n = Vec::new();
        assert!(same_site(&headers(&[]), &n).is_ok());
        assert!(same_site(&headers(&[("content-type", "application/json")]), &n).is_ok());
        assert!(same_site(&headers(&[("origin", "http://127.0.0.1:9000")]), &n).is_ok());
        assert!(same_site(&headers(&[("sec-fetch-site", "same-origin")]), &n).is_ok());
        for bad in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[("content-type", "application/x-www-form-urlencoded")]),
            headers(&[("content-type", "text/plain;charset=UTF-8")]),
            headers(&[("content-type", "multipart/form-data; boundary=x")]),
        ] {
            assert!(same_site(&bad, &n).is_err(), "{bad:?}");
        }
    }
}
