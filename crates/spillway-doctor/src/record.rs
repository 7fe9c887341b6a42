//! `--record FILE.jsonl`: one [`Report`] per interval, one JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::report::Report;
use crate::sample::Sampler;

/// Appends reports to a JSON Lines file, flushing each so an interrupted run keeps them.
pub struct Recorder {
    file: File,
}

impl Recorder {
    /// Opens (creating, appending) the file.
    pub fn open(path: &Path) -> anyhow::Result<Recorder> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} for --record", path.display()))?;
        Ok(Recorder { file })
    }

    /// Writes one report as one line.
    pub fn write(&mut self, r: &Report) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .context("writing --record file")?;
        Ok(())
    }
}

/// Records without a terminal UI, printing a one-line summary per sample to stdout.
pub fn run(
    ports: &[u16],
    interval: Duration,
    path: &Path,
    samples: Option<u64>,
    metrics: Option<String>,
) -> anyhow::Result<()> {
    let mut rec = Recorder::open(path)?;
    let mut sampler = Sampler::start(ports)?.with_metrics(metrics);
    let mut n = 0u64;
    while samples.is_none_or(|max| n < max) {
        std::thread::sleep(interval);
        let r = sampler.sample()?;
        rec.write(&r)?;
        n += 1;
        println!("{}", summary_line(&r));
    }
    Ok(())
}

/// One line per sample: "ms=… ListenOverflows/s=12.0 127.0.0.1:9876 q=6/5 conns=40 findings=1".
pub fn summary_line(r: &Report) -> String {
    let mut s = format!(
        "ms={} ListenOverflows/s={:.1}",
        r.taken_at_unix_ms,
        r.counters.get("ListenOverflows").map_or(0.0, |c| c.per_sec)
    );
    for l in &r.listeners {
        s += &format!(
            " {} q={}/{} conns={}",
            l.address,
            l.accept_queue.depth,
            l.accept_queue.limit,
            l.total_connections()
        );
    }
    s += &format!(" findings={}", r.findings.len());
    s
}

/// Reads a --record file; blank lines are skipped, a bad line is an error naming it.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<Report>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Report = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not a doctor report", path.display(), i + 1))?;
        out.push(r);
    }
    Ok(out)
}
