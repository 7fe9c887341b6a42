//! The access log: one line per finished request, with the numbers an operator needs under
//! stress (time in the admission queue, total time, which worker and generation served it).

use std::fs::OpenOptions;
use std::io::{self, LineWriter, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Request;

use crate::config::AccessLog;

/// What is known about a request when its response finishes.
pub(crate) struct AccessRecord {
    client: String,
    request_line: String,
    started: Instant,
    pub status: u16,
    pub queued: Duration,
    pub worker: u32,
    pub generation: u64,
}

impl AccessRecord {
    pub fn new<B>(req: &Request<B>, client: &str, started: Instant) -> AccessRecord {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        AccessRecord {
            client: client.to_owned(),
            request_line: format!(
                "{} {} {:?}",
                req.method(),
                target.escape_debug(),
                req.version()
            ),
            started,
            status: 0,
            queued: Duration::ZERO,
            worker: 0,
            generation: 0,
        }
    }
}

/// Writes access log lines to stdout or a file.
pub(crate) struct AccessLogger {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AccessLogger {
    /// Opens the destination (a file is appended to, created if missing).
    pub fn open(target: &AccessLog) -> io::Result<AccessLogger> {
        let out: Box<dyn Write + Send> = match target {
            AccessLog::Stdout => Box::new(LineWriter::new(io::stdout())),
            AccessLog::File(p) => Box::new(LineWriter::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
        };
        Ok(AccessLogger {
            out: Mutex::new(out),
        })
    }

    /// Logs one finished request.
    pub fn write(&self, r: &AccessRecord, bytes: u64) {
        let total = r.started.elapsed();
        let line = format!(
            "{} \"{}\" {} {} {:.3}ms queue={:.3}ms worker={} generation={}\n",
            r.client,
            r.request_line,
            r.status,
            bytes,
            total.as_secs_f64() * 1e3,
            r.queued.as_secs_f64() * 1e3,
            r.worker,
            r.generation,
        );
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk must not take requests down with it; the error log says why.
        if let Err(e) = out.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "access log write failed");
        }
    }
}
