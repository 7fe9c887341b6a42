//! Request bodies off the wire: a `Content-Length` count or a strict chunked decoder.
//!
//! The chunked grammar is read exactly as RFC 9112 §7.1 writes it, with no leniency where
//! the message boundary is at stake: a chunk size is hex digits and nothing else (no
//! blanks, no sign, no overflow), every line ends in CRLF, an extension has a name, and the
//! chunk-size line and the trailer section are bounded. A body that breaks a rule is the
//! client's error (400), never an error the application sees.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::Answer;
use crate::h1::head::Framing;

/// Longest chunk-size line (size and extensions), CRLF excluded.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

/// What one step of decoding produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line.
    SizeLine,
    /// Inside a chunk's data.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers(usize),
}

/// Decodes one request body from the bytes the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyDecoder {
    state: State,
    /// Body bytes decoded so far.
    pub decoded: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
    Done,
}

fn malformed(why: &'static str) -> Answer {
    Answer::Malformed(why)
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::SizeLine),
        };
        BodyDecoder { state, decoded: 0 }
    }

    /// The whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece from the front of `buf`, at most `max` body bytes (`max` > 0).
    /// `Ok(None)`: `buf` holds too little; read more from the client.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Option<Piece>, Answer> {
        loop {
            match self.state {
                State::Done => return Ok(Some(Piece::End)),
                State::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (left.min(max as u64) as usize).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    self.state = if left == n as u64 {
                        State::Done
                    } else {
                        State::Length(left - n as u64)
                    };
                    self.decoded += n as u64;
                    return Ok(Some(Piece::Data(data)));
                }
                State::Chunked(c) => match self.step_chunked(c, buf, max)? {
                    Step::Again(next) => self.state = next,
                    Step::NeedMore => return Ok(None),
                    Step::Data(data, next) => {
                        self.state = next;
                        self.decoded += data.len() as u64;
                        return Ok(Some(Piece::Data(data)));
                    }
                },
            }
        }
    }

    fn step_chunked(&mut self, c: Chunked, buf: &mut BytesMut, max: usize) -> Result<Step, Answer> {
        match c {
            Chunked::SizeLine => {
                let Some(line) = take_line(
                    buf,
                    MAX_CHUNK_LINE,
                    "Bad Request: chunk-size line too long\n",
                )?
                else {
                    return Ok(Step::NeedMore);
                };
                let size = parse_chunk_line(&line)?;
                Ok(Step::Again(if size == 0 {
                    State::Chunked(Chunked::Trailers(0))
                } else {
                    State::Chunked(Chunked::Data(size))
                }))
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (left.min(max as u64) as usize).min(buf.len());
                let data = buf.split_to(n).freeze();
                let next = if left == n as u64 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n as u64)
                };
                Ok(Step::Data(data, State::Chunked(next)))
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(malformed("Bad Request: chunk data not followed by CRLF\n"));
                }
                buf.advance(2);
                Ok(Step::Again(State::Chunked(Chunked::SizeLine)))
            }
            Chunked::Trailers(seen) => {
                let room = MAX_TRAILERS.saturating_sub(seen);
                let Some(line) = take_line(buf, room, "Bad Request: trailer section too large\n")?
                else {
                    return Ok(Step::NeedMore);
                };
                if line.is_empty() {
                    return Ok(Step::Again(State::Done));
                }
                check_trailer(&line)?;
                Ok(Step::Again(State::Chunked(Chunked::Trailers(
                    seen + line.len() + 2,
                ))))
            }
        }
    }
}

enum Step {
    Again(State),
    NeedMore,
    Data(Bytes, State),
}

/// Takes one CRLF-terminated line (without its CRLF) off `buf`; a bare CR or LF, or a line
/// longer than `max`, is malformed.
fn take_line(
    buf: &mut BytesMut,
    max: usize,
    too_long: &'static str,
) -> Result<Option<Bytes>, Answer> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => Err(malformed("Bad Request: bare LF in chunked body\n")),
        Some(i) => {
            if i + 1 >= buf.len() {
                return Ok(None);
            }
            if buf[i + 1] != b'\n' {
                return Err(malformed("Bad Request: bare CR in chunked body\n"));
            }
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > max => Err(malformed(too_long)),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): hex digits, then extensions that each
/// have a token name and an optional token or quoted value. Blanks only where the
/// grammar's BWS allows them: around `;` and `=` inside extensions, never after a bare
/// size (`5 `), which is the leniency smuggling needs.
fn parse_chunk_line(line: &[u8]) -> Result<u64, Answer> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(malformed("Bad Request: chunk size is not hex digits\n"));
    }
    if digits > 16 {
        return Err(malformed("Bad Request: chunk size overflows\n"));
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or_else(|| malformed("Bad Request: chunk size overflows\n"))?;
    }
    let mut rest = &line[digits..];
    while !rest.is_empty() {
        rest = parse_extension(rest)?;
    }
    Ok(size)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_extension(s: &[u8]) -> Result<&[u8], Answer> {
    let bad = || malformed("Bad Request: malformed chunk extension\n");
    let s = skip_blanks(s).strip_prefix(b";").ok_or_else(bad)?;
    let s = skip_blanks(s);
    let name = s.iter().take_while(|&&b| is_tchar(b)).count();
    if name == 0 {
        return Err(bad());
    }
    let s = &s[name..];
    let Some(value) = skip_blanks(s).strip_prefix(b"=") else {
        // Blanks here belong to the next `;`, and are refused if none follows.
        return Ok(s);
    };
    let value = skip_blanks(value);
    if let Some(q) = value.strip_prefix(b"\"") {
        let mut i = 0;
        while i < q.len() {
            match q[i] {
                b'"' => return Ok(&q[i + 1..]),
                b'\\' if i + 1 < q.len() => i += 2,
                b'\t' | b' '..=b'~' | 0x80..=0xff => i += 1,
                _ => return Err(bad()),
            }
        }
        return Err(bad());
    }
    let n = value.iter().take_while(|&&b| is_tchar(b)).count();
    if n == 0 {
        return Err(bad());
    }
    Ok(&value[n..])
}

fn skip_blanks(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn check_trailer(line: &[u8]) -> Result<(), Answer> {
    let colon = line.iter().position(|&b| b == b':');
    match colon {
        Some(i) if i > 0 && line[..i].iter().all(|&b| is_tchar(b)) => {
            // Framing and routing fields may not arrive late (RFC 9110 §6.5.1): whatever
            // merged them into the head would read another message than this one.
            let name = &line[..i];
            if [&b"content-length"[..], b"transfer-encoding", b"host"]
                .iter()
                .any(|f| name.eq_ignore_ascii_case(f))
            {
                return Err(malformed(
                    "Bad Request: a trailer may not carry Content-Length, Transfer-Encoding or Host\n",
                ));
            }
            if line[i + 1..]
                .iter()
                .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
            {
                return Err(malformed("Bad Request: malformed trailer field\n"));
            }
            Ok(())
        }
        _ => Err(malformed("Bad Request: malformed trailer field\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `wire` fed in pieces of `step` bytes; the body, or the error.
    fn decode_all(
        framing: Framing,
        wire: &[u8],
        step: usize,
        max: usize,
    ) -> Result<Vec<u8>, Answer> {
        let mut d = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut body = Vec::new();
        loop {
            match d.decode(&mut buf, max)? {
                Some(Piece::Data(b)) => {
                    assert!(!b.is_empty() && b.len() <= max);
                    body.extend_from_slice(&b);
                }
                Some(Piece::End) => return Ok(body),
                None => {
                    assert!(fed < wire.len(), "decoder wants more than the whole body");
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    fn chunked(wire: &[u8]) -> Result<Vec<u8>, Answer> {
        decode_all(Framing::Chunked, wire, usize::MAX, usize::MAX)
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let mut d = BodyDecoder::new(Framing::Length(5));
        let mut buf = BytesMut::from(&b"helloGET / HTTP/1.1"[..]);
        assert_eq!(
            d.decode(&mut buf, 100).unwrap(),
            Some(Piece::Data(Bytes::from_static(b"hello")))
        );
        assert_eq!(d.decode(&mut buf, 100).unwrap(), Some(Piece::End));
        assert_eq!(
            &buf[..],
            b"GET / HTTP/1.1",
            "the next request is left alone"
        );
        assert_eq!(d.decoded, 5);
    }

    #[test]
    fn chunked_bodies_decode_at_every_split_and_credit_size() {
        let wire =
            b"5\r\nhello\r\n1;name=value;flag\r\n \r\na\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        for step in 1..wire.len() {
            for max in [1, 3, 64] {
                assert_eq!(
                    decode_all(Framing::Chunked, wire, step, max).unwrap(),
                    b"hello 0123456789",
                    "step {step} max {max}"
                );
            }
        }
    }

    #[test]
    fn blanks_around_extension_separators_are_allowed() {
        assert_eq!(
            chunked(b"5; some; parameters=stuff\r\nhello\r\n6 ;b = \"c\"\r\n world\r\n0\r\n\r\n")
                .unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn quoted_extension_values_are_allowed() {
        assert_eq!(
            chunked(b"3;a=\"x; y\\\"z\"\r\nabc\r\n0\r\n\r\n").unwrap(),
            b"abc"
        );
    }

    #[test]
    fn strict_chunk_lines_reject_what_smuggling_needs() {
        for wire in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],    // whitespace after the size
            b" 5\r\nhello\r\n0\r\n\r\n",         // whitespace before it
            b"5;\r\nhello\r\n0\r\n\r\n",         // an empty extension
            b"5\nhello\r\n0\r\n\r\n",            // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",            // bare LF after the data
            b"5\r\nhelloXX0\r\n\r\n",            // data longer than its size
            b"0x5\r\nhello\r\n0\r\n\r\n",        // a 0x prefix
            b"+5\r\nhello\r\n0\r\n\r\n",         // a sign
            b"\r\nhello\r\n0\r\n\r\n",           // no size at all
            b"10000000000000000\r\n",            // 17 hex digits
            b"5\rhello\r\n0\r\n\r\n",            // bare CR
            b"5;a=\r\nhello\r\n0\r\n\r\n",       // extension with an empty value
            b"5;a=\"open\r\nhello\r\n0\r\n\r\n", // unterminated quote
            b"0\r\nBad Trailer\r\n\r\n",         // trailer without a colon
            b"0\r\nContent-Length: 9\r\n\r\n",   // a framing field as a trailer
            b"0\r\nHost: evil\r\n\r\n",          // a routing field as a trailer
            b"5;a \r\nhello\r\n0\r\n\r\n",       // blanks with no extension after them
            b"2 erfrferferf\r\naa\r\n0\r\n\r\n", // no semicolon before the extension
        ] {
            assert!(
                matches!(chunked(wire), Err(Answer::Malformed(_))),
                "accepted {:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn overlong_lines_are_refused_before_they_are_buffered_whole() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 10));
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&line[..]);
        assert!(matches!(d.decode(&mut buf, 100), Err(Answer::Malformed(_))));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..(MAX_TRAILERS / 8) {
            trailers.extend_from_slice(b"X-A: 12\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert!(matches!(chunked(&trailers), Err(Answer::Malformed(_))));
    }

    #[test]
    fn a_huge_valid_size_is_fine_until_the_bytes_stop() {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nabc"[..]);
        assert_eq!(
            d.decode(&mut buf, 100).unwrap(),
            Some(Piece::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf, 100).unwrap(), None);
    }
}
