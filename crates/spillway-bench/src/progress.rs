//! The progress bar on stderr while a run is going: elapsed time against the expected length,
//! responses, errors and the current rate. Drawn only when stderr is a terminal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use crate::args::{Config, Scenario};
use crate::stats::Shared;

const TICK: Duration = Duration::from_millis(250);

/// A running progress bar; [`Progress::finish`] removes it before the summary is printed.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the bar and its ticker task, or nothing when `show` is false.
    pub(crate) fn start(cfg: &Config, shared: Arc<Shared>, show: bool) -> Progress {
        if !show {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let expected = match &cfg.scenario {
            Scenario::Closed { .. } | Scenario::Open { .. } => cfg.duration,
            Scenario::Storm { .. } => cfg.timeout,
            Scenario::Idle { gaps } => gaps.iter().copied().max().unwrap_or_default(),
        };
        let bar = ProgressBar::new(expected.as_millis().max(1) as u64);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_bar} {msg}") {
            bar.set_style(style);
        }
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut last = (Instant::now(), 0u64);
                loop {
                    tokio::time::sleep(TICK).await;
                    let (responses, errors) = shared.progress();
                    let now = Instant::now();
                    let dt = now.duration_since(last.0).as_secs_f64();
                    let rate = if dt > 0.0 {
                        (responses.saturating_sub(last.1)) as f64 / dt
                    } else {
                        0.0
                    };
                    last = (now, responses);
                    bar.set_position(start.elapsed().as_millis() as u64);
                    bar.set_message(format!(
                        "{responses} responses  {errors} errors  {rate:.0}/s"
                    ));
                }
            })
        };
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// Stops the ticker and clears the bar.
    pub(crate) fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
