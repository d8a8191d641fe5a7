//! Request counters and latency histograms, rendered with the deployment figures in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::core::status::Status;
use crate::store::deployments::Stats;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Series>>,
}

impl Metrics {
    pub fn observe(&self, method: &str, operation: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        *self.requests.lock().expect("metrics poisoned").entry((method.to_owned(), operation.to_owned(), status)).or_default() += 1;
        let mut lat = self.latency.lock().expect("metrics poisoned");
        let s = lat.entry(operation.to_owned()).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    pub fn render(&self, stats: &Stats) -> String {
        let mut out = String::new();
        out.push_str("# HELP pvedeploy_deployments Deployments by status.\n# TYPE pvedeploy_deployments gauge\n");
        for s in Status::ALL {
            let n = stats.by_status.iter().find(|(st, _)| *st == s).map(|(_, n)| *n).unwrap_or(0);
            let _ = writeln!(out, "pvedeploy_deployments{{status=\"{}\"}} {n}", s.as_str());
        }
        let d = &stats.deploys.recent_durations_ms;
        out.push_str("# HELP pvedeploy_deploy_duration_seconds How long each deploy that went live took (its start to a passing health check); quantiles over the newest 1000, sum and count over all.\n# TYPE pvedeploy_deploy_duration_seconds summary\n");
        for q in [0.5, 0.95] {
            let v = if d.is_empty() { 0.0 } else { d[((q * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1] as f64 / 1000.0 };
            let _ = writeln!(out, "pvedeploy_deploy_duration_seconds{{quantile=\"{q}\"}} {v}");
        }
        let _ = writeln!(out, "pvedeploy_deploy_duration_seconds_sum {}", stats.deploys.succeeded_ms_sum as f64 / 1000.0);
        let _ = writeln!(out, "pvedeploy_deploy_duration_seconds_count {}", stats.deploys.succeeded);
        out.push_str("# HELP pvedeploy_store_queries_total Queries this process has sent to the database (each may hold several statements).\n# TYPE pvedeploy_store_queries_total counter\n");
        let _ = writeln!(out, "pvedeploy_store_queries_total {}", crate::store::queries_sent());
        out.push_str("# HELP pvedeploy_http_requests_total HTTP requests by method, operation and status.\n# TYPE pvedeploy_http_requests_total counter\n");
        for ((m, op, st), n) in self.requests.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(out, "pvedeploy_http_requests_total{{method=\"{m}\",operation=\"{op}\",status=\"{st}\"}} {n}");
        }
        out.push_str("# HELP pvedeploy_http_request_duration_seconds HTTP request latency by operation.\n# TYPE pvedeploy_http_request_duration_seconds histogram\n");
        for (op, s) in self.latency.lock().expect("metrics poisoned").iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "pvedeploy_http_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{b}\"}} {}", s.buckets[i]);
            }
            let _ = writeln!(out, "pvedeploy_http_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "pvedeploy_http_request_duration_seconds_sum{{operation=\"{op}\"}} {}", s.sum);
            let _ = writeln!(out, "pvedeploy_http_request_duration_seconds_count{{operation=\"{op}\"}} {}", s.count);
        }
        out
    }
}
