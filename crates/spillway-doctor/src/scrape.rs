//! Reading a Spillway front's own `/metrics`: one plain blocking HTTP/1.0 GET over a TCP
//! or Unix socket (an HTTP client crate would be most of doctor's size for one request a
//! second), and the samples of the Prometheus text format.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest a scrape may take: doctor samples once an interval and must not hang on a
/// front that stopped answering.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read; Spillway's exposition is a few kB per worker.
const MAX_BYTES: u64 = 8 << 20;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of a label, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    /// The samples of one metric.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// The value of an unlabelled metric (or the sum over its series).
    pub fn value(&self, name: &str) -> Option<f64> {
        let mut it = self.series(name).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }
}

/// Fetches `url` (`http://HOST:PORT/PATH` or `unix:/path/to/socket` for `/metrics` on an
/// admin endpoint bound to a Unix socket) and parses the body.
pub fn fetch(url: &str) -> Result<Metrics, String> {
    let body = get(url)?;
    Ok(parse(&body))
}

fn get(url: &str) -> Result<String, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        let s = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to {path}: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT)).ok();
        s.set_write_timeout(Some(TIMEOUT)).ok();
        return exchange(s, "localhost", "/metrics");
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// and unix: URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT)).ok();
    s.set_write_timeout(Some(TIMEOUT)).ok();
    exchange(s, authority, path)
}

/// HTTP/1.0 without keep-alive: the body ends at the close, never chunked.
fn exchange(mut s: impl Read + Write, host: &str, path: &str) -> Result<String, String> {
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("sending the request: {e}"))?;
    let mut raw = Vec::new();
    s.take(MAX_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the response: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the response has no complete head")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let line = head.lines().next().unwrap_or("");
        return Err(format!("answered {line:?}"));
    }
    Ok(body.to_string())
}

/// The samples of a Prometheus text exposition; comments and lines that are not samples
/// are skipped.
pub fn parse(text: &str) -> Metrics {
    Metrics(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..=close], &line[close + 1..])
        }
        None => line.split_at(line.find(char::is_whitespace)?),
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, l)) => (name, parse_labels(l.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values with `\"`, `\\` and `\n` escapes).
fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if s.is_empty() {
            return Some(out);
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim().to_string(), value));
        s = &rest[end + 1..];
    }
}

/// The `q` quantile (0..1) of a histogram from its cumulative `_bucket` samples, as
/// Prometheus' `histogram_quantile` computes it (linear within the bucket). `buckets` are
/// `(le, count)` pairs; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &b {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let within = (rank - prev.1) / (count - prev.1).max(f64::MIN_POSITIVE);
            return Some(prev.0 + (le - prev.0) * within);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let m = parse(
            "# TYPE spillway_queue_requests gauge\nspillway_queue_requests 240\n\
             spillway_queue_refusals_total{reason=\"queue_full\"} 12\n\
             spillway_worker_busy_threads{pid=\"495\",generation=\"1\"} 64.0\n\
             spillway_x_bucket{le=\"+Inf\",note=\"a \\\"b\\\"\"} 3\nnot a sample\n",
        );
        assert_eq!(m.value("spillway_queue_requests"), Some(240.0));
        let r: Vec<_> = m.series("spillway_queue_refusals_total").collect();
        assert_eq!(r[0].label("reason"), Some("queue_full"));
        assert_eq!(r[0].value, 12.0);
        let w = m.series("spillway_worker_busy_threads").next().unwrap();
        assert_eq!((w.label("pid"), w.value), (Some("495"), 64.0));
        let b = m.series("spillway_x_bucket").next().unwrap();
        assert_eq!(b.label("note"), Some("a \"b\""));
        assert_eq!(m.0.len(), 4);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(0.5, &b), Some(0.1));
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 0.95).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
    }
}
