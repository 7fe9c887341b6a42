//! What every connection shares: the configuration, the admission pool, the access log
//! and the request metrics, and how a finished request is recorded in the last two.

use std::sync::Arc;

use bytes::Bytes;

use crate::admission::dispatch::Workers;
use crate::config::ServerConfig;
use crate::error::Answer;
use crate::h1::head::HeadLimits;
use crate::http::request::RequestPolicy;
use crate::telemetry::access_log::{AccessLogger, AccessRecord};
use crate::telemetry::metrics::Metrics;

/// What every connection shares: configuration, the workers, the access log.
pub(crate) struct Front {
    pub cfg: ServerConfig,
    pub policy: RequestPolicy,
    pub limits: HeadLimits,
    pub workers: Arc<Workers>,
    pub access_log: Option<AccessLogger>,
    /// Request metrics, when they are served (`--admin`).
    pub metrics: Option<Arc<Metrics>>,
    /// The access log's format logs `Referer` and `User-Agent`.
    pub log_agents: bool,
    /// `timeout=N`, for `Keep-Alive`.
    pub keep_alive_value: Bytes,
}

impl Front {
    /// The shared state of every connection, from the configuration.
    pub fn new(
        cfg: ServerConfig,
        workers: Arc<Workers>,
        access_log: Option<AccessLogger>,
        metrics: Option<Arc<Metrics>>,
    ) -> Front {
        Front {
            policy: RequestPolicy {
                root_path: cfg.root_path.clone(),
                limit_request_field_size: cfg.limit_request_field_size,
                forwarded_allow_ips: cfg.forwarded_allow_ips.clone(),
            },
            limits: HeadLimits {
                target: cfg.limit_request_line,
                fields: cfg.limit_request_fields,
                field_size: cfg.limit_request_field_size,
            },
            keep_alive_value: Bytes::from(format!("timeout={}", cfg.keep_alive.as_secs())),
            log_agents: access_log.is_some()
                && cfg.access_log_format != crate::config::AccessLogFormat::Default,
            cfg,
            workers,
            access_log,
            metrics,
        }
    }

    /// The deadlines every exchange keeps.
    pub fn deadlines(&self) -> crate::admission::dispatch::Deadlines {
        crate::admission::dispatch::Deadlines {
            response: self.cfg.timeout,
            body: self.cfg.body_timeout,
            body_min_rate: self.cfg.body_min_rate,
        }
    }

    /// Whether requests are timed and recorded (for the access log, the metrics or
    /// `Server-Timing`); the clock is not read per request otherwise.
    pub fn records(&self) -> bool {
        self.access_log.is_some()
            || self.metrics.is_some()
            || self.cfg.server_timing != crate::ServerTiming::Off
    }

    /// `Retry-After` seconds for an answer that refuses the request for now.
    pub fn retry_after(&self, answer: Answer) -> Option<u64> {
        matches!(answer, Answer::Refused(_)).then(|| self.workers.retry_after_secs())
    }

    /// A request the front answered itself is over (`head_method`: no body was sent).
    pub fn finish_answer(&self, record: Option<AccessRecord>, answer: Answer, head_method: bool) {
        if let Some(mut r) = record {
            r.status = answer.status();
            r.origin = answer.origin();
            r.bytes = if head_method {
                0
            } else {
                answer.body().len() as u64
            };
            self.finish(r);
        }
    }

    /// A request is over: its metrics and its access-log line.
    pub fn finish(&self, r: AccessRecord) {
        if let Some(m) = &self.metrics {
            m.response(r.status, r.origin);
            m.request_duration.observe(r.started.elapsed());
            if r.dispatched.is_some() {
                m.queue_wait.observe(r.queued);
            }
            if let Some(a) = r.application {
                m.application_time.observe(a);
            }
        }
        if let Some(log) = &self.access_log {
            log.write(r);
        }
    }
}
