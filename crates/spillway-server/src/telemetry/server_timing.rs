//! Where a request's time went, told to the tools people already use: the front's measured
//! phases in a W3C `Server-Timing` response header (browsers' devtools, `curl -v`, `spillway
//! bench`), and `HTTP_X_REQUEST_START` in the environ, the header APM agents (New Relic,
//! Datadog, Scout) compute queue time from, so an unmodified agent shows Spillway's queue.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::config::ServerConfig;
use crate::telemetry::access_log::AccessRecord;

const REQUEST_START: &[u8] = b"HTTP_X_REQUEST_START";
const QUEUE_START: &[u8] = b"HTTP_X_QUEUE_START";

/// Sets `HTTP_X_REQUEST_START` to `t=<microseconds since the epoch>`, now (when the front
/// read the request head), unless a trusted proxy sent its own `X-Request-Start` or
/// `X-Queue-Start`: then the queue an agent shows starts at the proxy, which is the truer
/// start. An untrusted client's values are dropped: they would let it bend the metrics.
pub(crate) fn request_start(environ: &mut Vec<(Bytes, Bytes)>, trusted: bool) {
    let is_start = |k: &Bytes| k.as_ref() == REQUEST_START || k.as_ref() == QUEUE_START;
    if trusted && environ.iter().any(|(k, _)| is_start(k)) {
        return;
    }
    environ.retain(|(k, _)| !is_start(k));
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    environ.push((
        Bytes::from_static(REQUEST_START),
        Bytes::from(format!("t={micros}")),
    ));
}

/// The `Server-Timing` field for a response whose head is being written now, if this peer
/// gets one: `queue` (waiting for a Python thread), `app` (from dispatch until the
/// application started its response) and `total` (since the front read the request head).
pub(crate) fn field(
    cfg: &ServerConfig,
    peer: Option<IpAddr>,
    record: Option<&AccessRecord>,
) -> Option<(Bytes, Bytes)> {
    let trusted = peer.is_some_and(|ip| cfg.forwarded_allow_ips.contains(ip));
    let r = record.filter(|_| cfg.server_timing.sends_to(trusted))?;
    let app = r.dispatched.map(|d| d.elapsed());
    Some((
        Bytes::from_static(b"server-timing"),
        value(r.queued, app, r.started.elapsed()),
    ))
}

/// `queue;dur=1.80, app;dur=12.40, total;dur=14.60`, in milliseconds (two decimals: the
/// queue of an idle server is tens of microseconds).
fn value(queued: Duration, app: Option<Duration>, total: Duration) -> Bytes {
    use std::fmt::Write;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut v = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = write!(v, "queue;dur={:.2}", ms(queued));
    if let Some(a) = app {
        let _ = write!(v, ", app;dur={:.2}", ms(a));
    }
    let _ = write!(v, ", total;dur={:.2}", ms(total));
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerTiming;

    fn get<'e>(env: &'e [(Bytes, Bytes)], key: &[u8]) -> Option<&'e [u8]> {
        env.iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn the_value_lists_the_phases_in_milliseconds() {
        let v = value(
            Duration::from_micros(1_800),
            Some(Duration::from_micros(12_400)),
            Duration::from_micros(14_605),
        );
        assert_eq!(
            v.as_ref(),
            b"queue;dur=1.80, app;dur=12.40, total;dur=14.61"
        );
        let v = value(Duration::ZERO, None, Duration::from_millis(3));
        assert_eq!(v.as_ref(), b"queue;dur=0.00, total;dur=3.00");
    }

    #[test]
    fn who_gets_the_header() {
        assert!(!ServerTiming::Off.sends_to(true));
        assert!(ServerTiming::Trusted.sends_to(true));
        assert!(!ServerTiming::Trusted.sends_to(false));
        assert!(ServerTiming::All.sends_to(false));
    }

    #[test]
    fn request_start_is_set_unless_a_trusted_proxy_set_one() {
        let proxy = || {
            vec![
                (Bytes::from_static(b"HTTP_HOST"), Bytes::from_static(b"a")),
                (
                    Bytes::from_static(QUEUE_START),
                    Bytes::from_static(b"t=1700000000000000"),
                ),
            ]
        };
        let mut env = proxy();
        request_start(&mut env, true);
        assert_eq!(get(&env, QUEUE_START), Some(&b"t=1700000000000000"[..]));
        assert_eq!(get(&env, REQUEST_START), None);

        let mut env = proxy();
        request_start(&mut env, false);
        assert_eq!(get(&env, QUEUE_START), None);
        let v = get(&env, REQUEST_START).expect("set");
        let micros: u128 = std::str::from_utf8(&v[2..]).unwrap().parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        assert!(v.starts_with(b"t=") && now - micros < 5_000_000, "{v:?}");
    }
}
