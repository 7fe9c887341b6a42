//! What the sizing steers by that only the operating system knows: the CPU time of this
//! process (how much of a core the GIL-holding threads use) and how busy the whole host
//! is, as rates over the last window, plus the average wait to take the GIL. (What the
//! threads complete is measured by the pool itself, per request.)

use std::time::{Duration, Instant};

/// Shorter windows are too noisy to act on; the last rates are reused meanwhile.
const MIN_WINDOW: Duration = Duration::from_millis(20);
/// Longer windows include an idle spell: their rates say nothing about now.
const MAX_WINDOW: Duration = Duration::from_millis(250);

/// The rates of one window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Measured {
    /// CPU the process used, in cores.
    pub cpu: f64,
    /// Share of the host's CPU time that was busy, 0 to 1.
    pub host_busy: f64,
    /// Average wait to take the GIL.
    pub gil_wait: Duration,
    /// The window was recent and short enough to act on.
    pub fresh: bool,
}

/// Rates measured since the previous sample.
pub(crate) struct Meter {
    at: Instant,
    cpu_ns: u64,
    host: Option<(u64, u64)>,
    gil: (u64, u64),
    last: Measured,
}

impl Meter {
    /// A meter starting now.
    pub fn new() -> Meter {
        Meter {
            at: Instant::now(),
            cpu_ns: process_cpu_ns(),
            host: host_times(),
            gil: crate::gil::totals(),
            last: Measured::default(),
        }
    }

    /// The rates since the last call.
    pub fn sample(&mut self) -> Measured {
        let elapsed = self.at.elapsed();
        if elapsed < MIN_WINDOW {
            return self.last;
        }
        let cpu_ns = process_cpu_ns();
        let cpu_delta = cpu_ns.saturating_sub(self.cpu_ns);
        let cpu = cpu_delta as f64 / elapsed.as_nanos() as f64;
        let gil = crate::gil::totals();
        let gil_delta = gil.0.saturating_sub(self.gil.0);
        let host = host_times();
        let host_busy = match (self.host, host) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => self.last.host_busy,
        };
        let takes = gil.1.saturating_sub(self.gil.1);
        let gil_wait = Duration::from_nanos(gil_delta.checked_div(takes).unwrap_or(0));
        let last = Measured {
            cpu,
            host_busy,
            gil_wait,
            fresh: elapsed <= MAX_WINDOW,
        };
        *self = Meter {
            at: Instant::now(),
            cpu_ns,
            host,
            gil,
            last,
        };
        last
    }
}

fn cpu_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; the CPU-time clocks always exist
    // on Linux.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of this process (all threads), in nanoseconds.
pub(crate) fn process_cpu_ns() -> u64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Busy and total jiffies of all CPUs, from the first line of /proc/stat.
fn host_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_busy_and_total() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 40 1 4 0 0 0"),
            Some((160, 1000))
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5"), None);
    }

    #[test]
    fn a_busy_process_shows_its_cpu() {
        let mut m = Meter::new();
        let until = Instant::now() + Duration::from_millis(60);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let m = m.sample();
        assert!(m.fresh);
        assert!(m.cpu > 0.5, "{m:?}");
        assert!((0.0..=1.0).contains(&m.host_busy), "{m:?}");
    }
}
