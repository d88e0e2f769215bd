//! Refusals made before any policy is evaluated (calls without a valid agent token, rate-limited
//! calls) cost bounded disk under a flood. The first refusal of a kind (event, agent or claimed
//! agent, reason) in a window is its own durable row, as any decision; the others of that window
//! are counted, and written as one aggregate row when the window closes: how many, the first
//! and last time, and sample trace ids. The kinds kept apart per window are capped; past the cap,
//! refusals fold into one overflow kind per event. A flood therefore writes at most about two
//! rows per kind per window, whatever its rate.
//!
//! What is counted but not yet written lives in memory until the window closes (or the gateway
//! shuts down cleanly); a crash loses at most one window of counts, never a first row.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use meshguard_api::AuditEntry;
use serde_json::json;

/// Kinds of refusal kept apart in one window.
const MAX_KINDS: usize = 1024;
/// Trace ids kept per aggregate row.
const SAMPLES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    event: String,
    agent: Option<String>,
    reason: String,
}

#[derive(Debug)]
struct Tally {
    /// The first counted refusal: the aggregate row is built from it.
    first: Option<AuditEntry>,
    count: u64,
    last: String,
    samples: Vec<String>,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Note {
    /// The first of its kind in this window: write it as its own row.
    Write,
    /// Counted, to be written in the window's aggregate row.
    Counted,
}

#[derive(Debug)]
pub(crate) struct Refusals {
    window: Duration,
    kinds: Mutex<HashMap<Kind, Tally>>,
}

impl Refusals {
    /// `window` zero: no aggregation, every refusal is its own row.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            kinds: Mutex::default(),
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn note(&self, entry: &AuditEntry) -> Note {
        if self.window.is_zero() {
            return Note::Write;
        }
        let mut kinds = self.kinds.lock().expect("refusal tallies");
        let mut kind = Kind {
            event: entry.event.clone(),
            agent: entry.agent_id.clone(),
            reason: entry.reason.clone().unwrap_or_default(),
        };
        if !kinds.contains_key(&kind) && kinds.len() >= MAX_KINDS {
            kind = Kind {
                event: entry.event.clone(),
                agent: None,
                reason: format!(
                    "more than {MAX_KINDS} kinds of refusal in one window; these are counted together"
                ),
            };
        }
        match kinds.get_mut(&kind) {
            None => {
                kinds.insert(
                    kind,
                    Tally {
                        first: None,
                        count: 0,
                        last: String::new(),
                        samples: Vec::new(),
                    },
                );
                Note::Write
            }
            Some(t) => {
                t.count += 1;
                if t.first.is_none() {
                    t.first = Some(entry.clone());
                }
                t.last.clone_from(&entry.timestamp);
                if t.samples.len() < SAMPLES {
                    // A trace id is the caller's header: kept short so the aggregate row stays
                    // small whatever the callers sent.
                    let mut trace = entry.trace_id.clone();
                    crate::audit::bound::cut_string(&mut trace, 128);
                    t.samples.push(trace);
                }
                Note::Counted
            }
        }
    }

    /// Closes the window: one aggregate row per kind with refusals counted in it.
    pub(crate) fn close_window(&self) -> Vec<AuditEntry> {
        let tallies = std::mem::take(&mut *self.kinds.lock().expect("refusal tallies"));
        let mut rows: Vec<AuditEntry> = tallies
            .into_values()
            .filter_map(|t| {
                let first = t.first?;
                let mut row = first.clone();
                row.id = crate::ids::new_time_ordered_id("aud");
                row.timestamp = crate::clock::now_rfc3339();
                row.reason = Some(format!(
                    "{} more refusal(s) like this one from {} to {} ({})",
                    t.count,
                    first.timestamp,
                    t.last,
                    first.reason.as_deref().unwrap_or("")
                ));
                row.meta.insert(
                    "aggregate".to_owned(),
                    json!({
                        "count": t.count,
                        "first": first.timestamp,
                        "last": t.last,
                        "sampleTraceIds": t.samples,
                    }),
                );
                Some(row)
            })
            .collect();
        rows.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        rows
    }
}

/// Writes the aggregate rows every window.
pub(crate) fn spawn_flusher(state: crate::state::AppState) {
    let window = state.refusals.window();
    if window.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(window);
        tick.tick().await;
        loop {
            tick.tick().await;
            flush(&state).await;
        }
    });
}

/// Writes what the current window counted (also at shutdown).
pub(crate) async fn flush(state: &crate::state::AppState) {
    for row in state.refusals.close_window() {
        if let Err(e) = state.audit.append(row).await {
            tracing::error!(error = %e, "cannot record the aggregate of refused calls");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &str, agent: Option<&str>, reason: &str, trace: &str) -> AuditEntry {
        AuditEntry {
            id: "aud_x".into(),
            timestamp: format!("2026-12-01T00:00:0{}Z", trace.len() % 10),
            event: event.into(),
            agent_id: agent.map(str::to_owned),
            agent_name: None,
            trust_tier: None,
            action: "read:x".into(),
            resource: None,
            method: None,
            path: None,
            decision: "deny".into(),
            outcome: "deny".into(),
            policy: None,
            policy_name: None,
            rule: None,
            reason: Some(reason.into()),
            trace_id: trace.into(),
            mode: "enforce".into(),
            snapshot: 0,
            meta: Default::default(),
            would_deny: false,
            truncated: Default::default(),
        }
    }

    #[test]
    fn the_first_of_a_kind_is_written_the_rest_counted_into_one_row() {
        let r = Refusals::new(Duration::from_secs(60));
        assert_eq!(
            r.note(&entry("bypass_attempt", None, "bad", "t0")),
            Note::Write
        );
        for i in 1..=25 {
            let t = format!("t{i}");
            assert_eq!(
                r.note(&entry("bypass_attempt", None, "bad", &t)),
                Note::Counted
            );
        }
        // Another kind is kept apart.
        assert_eq!(r.note(&entry("rate_limit", None, "bad", "r0")), Note::Write);
        let rows = r.close_window();
        assert_eq!(rows.len(), 1, "the rate limit had no second refusal");
        let agg = &rows[0].meta["aggregate"];
        assert_eq!(agg["count"], 25);
        assert_eq!(agg["sampleTraceIds"].as_array().unwrap().len(), SAMPLES);
        assert_eq!(agg["sampleTraceIds"][0], "t1");
        // A new window starts afresh.
        assert!(r.close_window().is_empty());
        assert_eq!(
            r.note(&entry("bypass_attempt", None, "bad", "t99")),
            Note::Write
        );
    }

    #[test]
    fn kinds_past_the_cap_fold_together_and_no_window_means_every_row() {
        let r = Refusals::new(Duration::from_secs(60));
        for i in 0..MAX_KINDS {
            assert_eq!(
                r.note(&entry("bypass_attempt", Some(&format!("a{i}")), "x", "t")),
                Note::Write
            );
        }
        assert_eq!(
            r.note(&entry("bypass_attempt", Some("new"), "x", "t")),
            Note::Write
        );
        assert_eq!(
            r.note(&entry("bypass_attempt", Some("newer"), "x", "t")),
            Note::Counted
        );
        let off = Refusals::new(Duration::ZERO);
        assert_eq!(off.note(&entry("rate_limit", None, "x", "t")), Note::Write);
        assert_eq!(off.note(&entry("rate_limit", None, "x", "t")), Note::Write);
    }
}
