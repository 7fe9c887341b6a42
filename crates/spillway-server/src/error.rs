//! Whose fault a failure was. Every answer the front gives in place of the application, and
//! every way a worker can fail, carries its origin — the client, the application, or the
//! server itself — so that logs (and metrics) can say whose 4xx or 5xx it was.

use std::fmt;

/// Why a request could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The server is shutting down and will not start new requests.
    #[error("server is shutting down")]
    Closed,
    /// `--max-queue` requests are already waiting.
    #[error("admission queue full")]
    QueueFull,
    /// The request waited `--queue-timeout` without getting a thread.
    #[error("waited too long in the admission queue")]
    QueueTimeout,
}

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The client sent something malformed or too large, or was too slow.
    Client,
    /// The application crashed, hung, or answered something invalid.
    Application,
    /// The server itself: overload, shutdown, or a fault in Spillway.
    Server,
}

impl Origin {
    /// The word used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Application => "application",
            Origin::Server => "server",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response body (`"Bad Request: why\n"`) as a log field: the why.
fn reason(body: &'static str, status_text: &str) -> &'static str {
    let body = body.trim_end();
    body.strip_prefix(status_text)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(body)
}

/// An answer the front gives itself instead of the application's: a request it refuses, or
/// one whose worker failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Answer {
    /// The request is not valid HTTP/1.x, or breaks a framing rule (400).
    #[error("bad request: {}", reason(.0, "Bad Request"))]
    Malformed(&'static str),
    /// The request target is longer than `--limit-request-line` (414).
    #[error("request target too long")]
    TargetTooLong,
    /// Too many header fields, or one too large (431).
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// A method no WSGI application can serve, e.g. CONNECT (405).
    #[error("method not allowed: {}", reason(.0, "Method Not Allowed"))]
    MethodNotAllowed(&'static str),
    /// A transfer coding other than chunked (501).
    #[error("transfer coding not implemented")]
    CodingNotImplemented,
    /// An HTTP version other than 1.0 and 1.1 (505).
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// Admission refused the request (503).
    #[error("refused: {0}")]
    Refused(AdmissionError),
    /// The worker died before answering (502).
    #[error("the worker died before answering")]
    WorkerLost,
    /// The worker broke the frame protocol, or answered without a head (502).
    #[error("the worker broke the frame protocol")]
    WorkerBroken,
    /// The response did not start within `--timeout` (504).
    #[error("the application did not answer within the request timeout")]
    TimedOut,
    /// The client sent no body bytes for `--body-timeout` (408).
    #[error("the request body stalled")]
    BodyTimeout,
    /// The body could not be held for the worker (no room in the temporary directory).
    #[error("the request body could not be held")]
    BufferFailed,
}

impl Answer {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Answer::Malformed(_) => 400,
            Answer::TargetTooLong => 414,
            Answer::HeadersTooLarge => 431,
            Answer::MethodNotAllowed(_) => 405,
            Answer::CodingNotImplemented => 501,
            Answer::VersionNotSupported => 505,
            Answer::Refused(_) => 503,
            Answer::WorkerLost | Answer::WorkerBroken => 502,
            Answer::TimedOut => 504,
            Answer::BodyTimeout => 408,
            Answer::BufferFailed => 503,
        }
    }

    /// Whose fault it is.
    pub fn origin(self) -> Origin {
        match self {
            Answer::Malformed(_)
            | Answer::TargetTooLong
            | Answer::HeadersTooLarge
            | Answer::MethodNotAllowed(_)
            | Answer::CodingNotImplemented
            | Answer::VersionNotSupported
            | Answer::BodyTimeout => Origin::Client,
            Answer::Refused(_) | Answer::WorkerBroken | Answer::BufferFailed => Origin::Server,
            Answer::WorkerLost | Answer::TimedOut => Origin::Application,
        }
    }

    /// Whether the connection must close after this answer. A request refused by the
    /// parser leaves the byte stream in an unknown state; a refusal by admission or a
    /// failed worker does not, and the client may retry on the same connection.
    pub fn closes_connection(self) -> bool {
        match self {
            Answer::Refused(AdmissionError::Closed) => true,
            Answer::Refused(_) | Answer::WorkerLost | Answer::WorkerBroken | Answer::TimedOut => {
                false
            }
            _ => true,
        }
    }

    /// The short plain-text body sent with the answer.
    pub fn body(self) -> &'static str {
        match self {
            Answer::Malformed(why) => why,
            Answer::TargetTooLong => "Request-URI Too Long\n",
            Answer::HeadersTooLarge => "Request Header Fields Too Large\n",
            Answer::MethodNotAllowed(why) => why,
            Answer::CodingNotImplemented => "Not Implemented: only chunked transfer coding\n",
            Answer::VersionNotSupported => "HTTP Version Not Supported\n",
            Answer::Refused(AdmissionError::Closed) => "Service Unavailable: shutting down\n",
            Answer::Refused(AdmissionError::QueueFull) => {
                "Service Unavailable: too many requests waiting\n"
            }
            Answer::Refused(AdmissionError::QueueTimeout) => {
                "Service Unavailable: no worker was free in time\n"
            }
            Answer::WorkerLost => "Bad Gateway: the worker died\n",
            Answer::WorkerBroken => "Bad Gateway\n",
            Answer::TimedOut => "Gateway Timeout\n",
            Answer::BodyTimeout => "Request Timeout: the request body stalled\n",
            Answer::BufferFailed => "Service Unavailable: the request body could not be held\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_has_a_status_an_origin_and_a_body() {
        let all = [
            Answer::Malformed("Bad Request\n"),
            Answer::TargetTooLong,
            Answer::HeadersTooLarge,
            Answer::MethodNotAllowed("Method Not Allowed\n"),
            Answer::CodingNotImplemented,
            Answer::VersionNotSupported,
            Answer::Refused(AdmissionError::QueueFull),
            Answer::Refused(AdmissionError::QueueTimeout),
            Answer::Refused(AdmissionError::Closed),
            Answer::WorkerLost,
            Answer::WorkerBroken,
            Answer::TimedOut,
            Answer::BodyTimeout,
            Answer::BufferFailed,
        ];
        for a in all {
            let s = a.status();
            assert!((400..600).contains(&s), "{a:?}");
            assert!(a.body().ends_with('\n'), "{a:?}");
            // 4xx from the front are the client's; of the 5xx, only the protocol features
            // a client asked for and we lack (501, 505) are.
            assert_eq!(
                a.origin() == Origin::Client,
                s < 500 || s == 501 || s == 505,
                "{a:?}"
            );
        }
    }

    #[test]
    fn refusals_keep_the_connection_and_parse_errors_close_it() {
        assert!(!Answer::Refused(AdmissionError::QueueFull).closes_connection());
        assert!(!Answer::TimedOut.closes_connection());
        assert!(Answer::Refused(AdmissionError::Closed).closes_connection());
        assert!(Answer::Malformed("x\n").closes_connection());
        assert!(Answer::HeadersTooLarge.closes_connection());
    }
}
