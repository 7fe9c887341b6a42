//! What `start_response` accepts: a final status from 200 to 599 and header fields that
//! are valid HTTP, latin-1, free of control characters and bounded in number and size, so
//! that nothing an application passes can inject a header or overflow a frame. Pure
//! functions, tested without Python.

/// Most header fields an application may send in one response.
pub(crate) const MAX_HEADERS: usize = 1000;
/// Longest header name an application may send.
pub(crate) const MAX_NAME: usize = 8 * 1024;
/// Longest header value an application may send.
pub(crate) const MAX_VALUE: usize = 64 * 1024;
/// Largest header section in all: far below what a frame carries, so encoding the head
/// can never fail on what `start_response` accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 1024 * 1024;

/// The status code of a WSGI status line such as `200 OK`.
pub(crate) fn parse_status(status: &str) -> Result<u16, String> {
    let b = status.as_bytes();
    let ok =
        b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) && (b.len() == 3 || b[3] == b' ');
    let code = if ok {
        status[..3].parse::<u16>().ok()
    } else {
        None
    };
    match code {
        Some(c) if (200..=599).contains(&c) => Ok(c),
        _ => Err(format!(
            "status {status:?} is not a final status from 200 to 599 followed by a reason, like '200 OK'"
        )),
    }
}

/// RFC 9110 token characters, for header names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Counts the header fields of one response against the limits.
#[derive(Debug, Default)]
pub(crate) struct HeaderBudget {
    count: usize,
    bytes: usize,
}

impl HeaderBudget {
    /// Checks one field; the error says what is wrong, for the application's traceback.
    pub fn check(&mut self, name: &[u8], value: &[u8]) -> Result<(), String> {
        let shown = || String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!(
                "header name {:?} is not a valid HTTP token",
                shown()
            ));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!(
                "header {:?} has a control character (CR, LF or NUL) in its value",
                shown()
            ));
        }
        if name.len() > MAX_NAME || value.len() > MAX_VALUE {
            return Err(format!(
                "header {:?} is too long ({} + {} bytes; at most {MAX_NAME} for a name and {MAX_VALUE} for a value)",
                shown(),
                name.len(),
                value.len()
            ));
        }
        self.count += 1;
        self.bytes += name.len() + value.len() + 4;
        if self.count > MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} response headers"));
        }
        if self.bytes > MAX_HEAD_BYTES {
            return Err(format!(
                "response headers larger than {MAX_HEAD_BYTES} bytes in all"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_final_three_digit_codes_with_a_reason() {
        assert_eq!(parse_status("200 OK"), Ok(200));
        assert_eq!(parse_status("404"), Ok(404));
        assert_eq!(parse_status("599 Custom"), Ok(599));
        for bad in [
            "999 Nope",
            "100 Continue",
            "199 x",
            "20 OK",
            "200OK",
            "abc",
            "",
            "600 x",
        ] {
            assert!(parse_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_fields_must_be_valid_and_cannot_inject() {
        let mut b = HeaderBudget::default();
        assert!(b.check(b"Content-Type", b"text/plain").is_ok());
        assert!(b.check(b"X-Tab", b"a\tb").is_ok());
        assert!(b.check(b"Bad Name", b"x").is_err());
        assert!(b.check(b"", b"x").is_err());
        assert!(b.check(b"X-Inject", b"a\r\nSet-Cookie: evil").is_err());
        assert!(b.check(b"X-Nul", b"a\0").is_err());
    }

    #[test]
    fn header_count_and_size_are_bounded() {
        let mut b = HeaderBudget::default();
        for _ in 0..MAX_HEADERS {
            b.check(b"X-A", b"1").unwrap();
        }
        assert!(b.check(b"X-A", b"1").unwrap_err().contains("more than"));
        let mut b = HeaderBudget::default();
        assert!(b
            .check(&vec![b'x'; MAX_NAME + 1], b"")
            .unwrap_err()
            .contains("too long"));
        assert!(b.check(b"X", &vec![b'v'; MAX_VALUE + 1]).is_err());
        let mut b = HeaderBudget::default();
        let big = vec![b'v'; MAX_VALUE];
        let result = (0..20)
            .map(|_| b.check(b"X-Big", &big))
            .find(|r| r.is_err());
        assert!(result.is_some_and(|r| r.unwrap_err().contains("in all")));
    }
}
