//! `/metrics` in the Prometheus text format, when `METRICS_ENABLED` is set.
//!
//! Counters are plain atomics updated on the decision path (a relaxed add each); the text is
//! written by hand because the format is a few lines and a metrics crate would bring a registry
//! and its own global state for five series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Writes one gauge: its `# HELP` and `# TYPE` lines and `name` followed by `sample` (the
/// labels, if any, a space and the value).
pub(crate) fn gauge(out: &mut String, name: &str, help: &str, sample: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{sample}");
}

/// Upper bounds of the governance-latency histogram, in seconds.
const BUCKETS: [f64; 8] = [0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    would_deny: AtomicU64,
    rate_limited: AtomicU64,
    bypass_attempts: AtomicU64,
    audit_entries: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    /// The active-agent count and when it was taken: a scrape reads the store at most once per
    /// [`AGENTS_FRESH_FOR`], however often it is scraped (the endpoint needs no credentials).
    agents: std::sync::Mutex<Option<(std::time::Instant, usize)>>,
}

/// How long an active-agent count is served before the store is read again.
pub(crate) const AGENTS_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(15);

impl Metrics {
    /// The cached active-agent count, if taken within [`AGENTS_FRESH_FOR`].
    pub(crate) fn fresh_agents(&self) -> Option<usize> {
        let cached = *self.agents.lock().expect("not poisoned");
        cached
            .filter(|(at, _)| at.elapsed() < AGENTS_FRESH_FOR)
            .map(|(_, n)| n)
    }

    pub(crate) fn remember_agents(&self, n: usize) {
        *self.agents.lock().expect("not poisoned") = Some((std::time::Instant::now(), n));
    }

    pub(crate) fn decision(
        &self,
        allowed: bool,
        would_deny: bool,
        latency: Duration,
        audited: bool,
    ) {
        if allowed { &self.allowed } else { &self.denied }.fetch_add(1, Ordering::Relaxed);
        if would_deny {
            self.would_deny.fetch_add(1, Ordering::Relaxed);
        }
        if audited {
            self.audit_entries.fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos
            .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn refusal(&self, event: &str) {
        match event {
            "rate_limit" => &self.rate_limited,
            _ => &self.bypass_attempts,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.denied.fetch_add(1, Ordering::Relaxed);
        self.audit_entries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, mode: &str, active_agents: usize) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP meshguard_policy_checks_total Governance decisions, by decision."
        );
        let _ = writeln!(out, "# TYPE meshguard_policy_checks_total counter");
        let _ = writeln!(
            out,
            "meshguard_policy_checks_total{{decision=\"allow\",mode=\"{mode}\"}} {}",
            get(&self.allowed)
        );
        let _ = writeln!(
            out,
            "meshguard_policy_checks_total{{decision=\"deny\",mode=\"{mode}\"}} {}",
            get(&self.denied)
        );
        let _ = writeln!(
            out,
            "# HELP meshguard_would_deny_total Audit-mode calls that enforce mode would have denied."
        );
        let _ = writeln!(out, "# TYPE meshguard_would_deny_total counter");
        let _ = writeln!(out, "meshguard_would_deny_total {}", get(&self.would_deny));
        let _ = writeln!(
            out,
            "# HELP meshguard_rate_limited_total Calls refused by a rate limit."
        );
        let _ = writeln!(out, "# TYPE meshguard_rate_limited_total counter");
        let _ = writeln!(
            out,
            "meshguard_rate_limited_total {}",
            get(&self.rate_limited)
        );
        let _ = writeln!(
            out,
            "# HELP meshguard_bypass_attempts_total Data-plane calls without a valid agent token."
        );
        let _ = writeln!(out, "# TYPE meshguard_bypass_attempts_total counter");
        let _ = writeln!(
            out,
            "meshguard_bypass_attempts_total {}",
            get(&self.bypass_attempts)
        );
        let _ = writeln!(
            out,
            "# HELP meshguard_audit_entries_total Audit rows acknowledged durable since start."
        );
        let _ = writeln!(out, "# TYPE meshguard_audit_entries_total counter");
        let _ = writeln!(
            out,
            "meshguard_audit_entries_total {}",
            get(&self.audit_entries)
        );
        gauge(
            &mut out,
            "meshguard_active_agents",
            "Agents not revoked.",
            &format!(" {active_agents}"),
        );
        let _ = writeln!(
            out,
            "# HELP meshguard_request_duration_seconds Governance step (evaluate and durable audit)."
        );
        let _ = writeln!(out, "# TYPE meshguard_request_duration_seconds histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "meshguard_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                get(count)
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "meshguard_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "meshguard_request_duration_seconds_sum {}",
            get(&self.latency_sum_nanos) as f64 / 1e9
        );
        let _ = writeln!(out, "meshguard_request_duration_seconds_count {count}");
        out
    }
}
