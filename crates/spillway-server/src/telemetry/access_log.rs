//! The access log: one line per finished request, with the numbers an operator needs under
//! stress (time in the admission queue, total time, which worker and generation served it).
//!
//! Lines are formatted and written by a thread of their own through a buffered writer, so
//! the event loop never blocks on `write(2)` to a slow disk or a full pipe; the buffer is
//! flushed whenever the thread has nothing more queued, and at shutdown every queued line
//! is written before the server exits. If the disk falls so far behind that the queue
//! fills, further lines are counted and dropped (with a warning), not waited for.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{AccessLog, AccessLogFormat};

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// What is known about a request when its response finishes.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    /// The connection's peer, `addr:port`.
    pub client: String,
    /// `REMOTE_ADDR` as the application sees it (after PROXY and trusted
    /// `X-Forwarded-For`).
    pub remote_addr: bytes::Bytes,
    /// `METHOD target HTTP/1.x`.
    pub request_line: String,
    pub request_id: bytes::Bytes,
    /// `Referer` and `User-Agent`, for the formats that log them.
    pub referer: bytes::Bytes,
    pub user_agent: bytes::Bytes,
    pub started: Instant,
    pub status: u16,
    pub queued: Duration,
    pub worker: u32,
    pub generation: u64,
    pub bytes: u64,
    /// Whose doing the status was.
    pub origin: crate::error::Origin,
    /// When the request reached its worker, and how long the application took to start
    /// its response.
    pub dispatched: Option<Instant>,
    pub application: Option<Duration>,
}

impl AccessRecord {
    /// A record for a request whose head has just been read: the rest is filled in as the
    /// exchange goes on.
    pub fn begin(
        client: String,
        remote_addr: bytes::Bytes,
        request_line: String,
        request_id: bytes::Bytes,
        referer: bytes::Bytes,
        user_agent: bytes::Bytes,
    ) -> AccessRecord {
        AccessRecord {
            client,
            remote_addr,
            request_line,
            request_id,
            referer,
            user_agent,
            started: Instant::now(),
            status: 0,
            queued: Duration::ZERO,
            worker: 0,
            generation: 0,
            bytes: 0,
            origin: crate::error::Origin::Application,
            dispatched: None,
            application: None,
        }
    }
}

enum Msg {
    Line(Box<AccessRecord>, Duration, SystemTime),
    Stop,
}

/// Writes access log lines to stdout or a file, from a thread of its own.
pub(crate) struct AccessLogger {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
    /// When a drop was last reported (ms since `epoch`), so the warning is rate-limited.
    warned_ms: AtomicU64,
    epoch: Instant,
}

impl AccessLogger {
    /// Opens the destination (a file is appended to, created if missing) and starts the
    /// writer thread.
    pub fn open(target: &AccessLog, format: AccessLogFormat) -> io::Result<AccessLogger> {
        let out: Box<dyn Write + Send> = match target {
            AccessLog::Stdout => Box::new(io::stdout()),
            AccessLog::File(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, BufWriter::with_capacity(64 * 1024, out), format))?;
        Ok(AccessLogger {
            tx,
            thread: Mutex::new(Some(thread)),
            dropped: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Logs one finished request (never blocks).
    pub fn write(&self, r: AccessRecord) {
        let total = r.started.elapsed();
        let at = SystemTime::now() - total;
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(Box::new(r), total, at)) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = self.epoch.elapsed().as_millis() as u64;
            let last = self.warned_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .warned_ms
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    dropped_total = n,
                    "access log cannot keep up (slow disk or pipe); lines are being dropped"
                );
            }
        }
    }

    /// Writes every queued line and stops the writer thread.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Stop);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn write_lines(
    rx: Receiver<Msg>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    format: AccessLogFormat,
) {
    let mut failed = false;
    let mut line = String::with_capacity(256);
    loop {
        // Block for the next line, then take whatever else is queued before flushing: a
        // busy server writes in large batches, a quiet one line by line.
        let mut msg = rx.recv().ok();
        loop {
            match msg {
                Some(Msg::Line(r, total, at)) => {
                    line.clear();
                    match format {
                        AccessLogFormat::Default => format_line(&mut line, &r, total),
                        AccessLogFormat::Combined => format_combined(&mut line, &r, total, at),
                        AccessLogFormat::Json => format_json(&mut line, &r, total, at),
                    }
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        report(&mut failed, &e);
                    }
                }
                Some(Msg::Stop) | None => {
                    if let Err(e) = out.flush() {
                        report(&mut failed, &e);
                    }
                    return;
                }
            }
            msg = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            };
        }
        if let Err(e) = out.flush() {
            report(&mut failed, &e);
        }
    }
}

/// A full disk must not take requests down with it; the error log says why, once.
fn report(failed: &mut bool, e: &io::Error) {
    if !*failed {
        tracing::warn!(error = %e, "access log write failed");
        *failed = true;
    }
}

fn format_line(out: &mut String, r: &AccessRecord, total: Duration) {
    use std::fmt::Write as _;
    push_escaped(out, r.client.as_bytes());
    out.push_str(" \"");
    push_escaped(out, r.request_line.as_bytes());
    let _ = writeln!(
        out,
        "\" {} {} {:.3}ms queue={:.3}ms worker={} generation={} request_id={}",
        r.status,
        r.bytes,
        total.as_secs_f64() * 1e3,
        r.queued.as_secs_f64() * 1e3,
        r.worker,
        r.generation,
        String::from_utf8_lossy(&r.request_id),
    );
}

/// Apache's combined format (`%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"`),
/// then Spillway's numbers as `key=value` fields, which log parsers skip or pick up.
fn format_combined(out: &mut String, r: &AccessRecord, total: Duration, at: SystemTime) {
    use std::fmt::Write as _;
    push_escaped_bytes(out, &r.remote_addr, "-");
    let _ = write!(out, " - - [{}] \"", apache_time(at));
    push_escaped(out, r.request_line.as_bytes());
    out.push_str("\" ");
    let _ = write!(out, "{} ", r.status);
    if r.bytes == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{}", r.bytes);
    }
    out.push_str(" \"");
    push_escaped_bytes(out, &r.referer, "-");
    out.push_str("\" \"");
    push_escaped_bytes(out, &r.user_agent, "-");
    let _ = writeln!(
        out,
        "\" queue={:.3}ms total={:.3}ms worker={} generation={} request_id={}",
        r.queued.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        r.worker,
        r.generation,
        String::from_utf8_lossy(&r.request_id),
    );
}

/// One JSON object per line. Strings go through serde_json, so any client input stays
/// valid JSON (bytes that are not UTF-8 become U+FFFD).
fn format_json(out: &mut String, r: &AccessRecord, total: Duration, at: SystemTime) {
    let mut parts = r.request_line.splitn(3, ' ');
    let (method, target, protocol) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let v = serde_json::json!({
        "time": rfc3339(at),
        "client": r.client,
        "remote_addr": lossy(&r.remote_addr),
        "method": method,
        "target": target,
        "protocol": protocol,
        "status": r.status,
        "bytes": r.bytes,
        "duration_ms": round3(total.as_secs_f64() * 1e3),
        "queue_ms": round3(r.queued.as_secs_f64() * 1e3),
        "worker": r.worker,
        "generation": r.generation,
        "request_id": lossy(&r.request_id),
        "referer": lossy(&r.referer),
        "user_agent": lossy(&r.user_agent),
    });
    out.push_str(&v.to_string());
    out.push('\n');
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// `10/Oct/2026:13:55:36 +0000`, as Apache's `%t` writes it (in UTC).
fn apache_time(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    let f = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    t.format(&f).unwrap_or_default()
}

/// `2026-10-10T13:55:36.123Z`.
fn rfc3339(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// [`push_escaped`], or `empty` if there is nothing.
fn push_escaped_bytes(out: &mut String, b: &[u8], empty: &str) {
    if b.is_empty() {
        out.push_str(empty);
    } else {
        push_escaped(out, b);
    }
}

/// Appends what a client sent as Apache does: `"` and `\` backslashed, bytes outside
/// printable ASCII as `\xhh`, so no value can end its field or start a forged line.
fn push_escaped(out: &mut String, b: &[u8]) {
    use std::fmt::Write as _;
    for &c in b {
        match c {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16) -> AccessRecord {
        AccessRecord {
            client: "127.0.0.1:5000".into(),
            remote_addr: bytes::Bytes::from_static(b"127.0.0.1"),
            request_line: "GET /x HTTP/1.1".into(),
            request_id: bytes::Bytes::from_static(b"rid-1"),
            referer: bytes::Bytes::new(),
            user_agent: bytes::Bytes::from_static(b"curl/8 \"x\""),
            started: Instant::now(),
            status,
            queued: Duration::from_micros(1500),
            worker: 42,
            generation: 3,
            bytes: 12,
            origin: crate::error::Origin::Application,
            dispatched: None,
            application: None,
        }
    }

    #[test]
    fn a_line_has_every_field() {
        let mut s = String::new();
        format_line(&mut s, &record(200), Duration::from_millis(2));
        assert_eq!(
            s,
            "127.0.0.1:5000 \"GET /x HTTP/1.1\" 200 12 2.000ms queue=1.500ms worker=42 generation=3 request_id=rid-1\n"
        );
    }

    #[test]
    fn what_a_client_sent_cannot_end_a_field_or_a_line() {
        let mut r = record(400);
        r.request_line = "GET /a\"b\\c\n2026 INFO \u{e9} HTTP/1.1".into();
        let mut s = String::new();
        format_line(&mut s, &r, Duration::from_millis(2));
        assert_eq!(s.lines().count(), 1, "{s}");
        assert!(
            s.contains(r#""GET /a\"b\\c\x0a2026 INFO \xc3\xa9 HTTP/1.1""#),
            "{s}"
        );
    }

    #[test]
    fn every_queued_line_is_written_at_shutdown() {
        let dir = std::env::temp_dir().join(format!("spillway-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log =
            AccessLogger::open(&AccessLog::File(path.clone()), AccessLogFormat::Default).unwrap();
        for i in 0..5000 {
            log.write(record(200 + (i % 3)));
        }
        log.shutdown();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5000);
        assert!(text
            .lines()
            .all(|l| l.ends_with("generation=3 request_id=rid-1")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn combined_and_json_lines_carry_the_numbers_and_stay_well_formed() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut r = record(200);
        r.request_line = "GET /a\"b\n HTTP/1.1".into();
        let mut s = String::new();
        format_combined(&mut s, &r, Duration::from_millis(2), at);
        assert_eq!(
            s,
            "127.0.0.1 - - [21/Sep/2026:14:13:20 +0000] \"GET /a\\\"b\\x0a HTTP/1.1\" 200 12 \"-\" \"curl/8 \\\"x\\\"\" queue=1.500ms total=2.000ms worker=42 generation=3 request_id=rid-1\n"
        );
        let mut s = String::new();
        format_json(&mut s, &r, Duration::from_millis(2), at);
        assert_eq!(s.lines().count(), 1, "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["target"], "/a\"b\n");
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["queue_ms"], 1.5);
        assert_eq!(v["worker"], 42);
        assert_eq!(v["time"], "2026-09-21T14:13:20.000Z");
    }
}
