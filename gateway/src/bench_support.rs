//! Measurement hooks for `benches/decision.rs`: the engine stays private, the bench reaches it
//! only through this function. Not part of the gateway's API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshguard_api::TrustTier;

use crate::policy::{EvalRequest, PolicySet, evaluate, parse_policy};

/// Decision latencies (sorted) over `iterations` evaluations against `policies` policies of
/// `rules_per_policy` rules each, asking an action that only the last rule of the last policy
/// allows (the slowest path: everything before it is tried).
///
/// With `applying < policies`, only the last `applying` policies apply to the agent; the others
/// name another tag, as in a gateway serving many kinds of agents.
pub fn decision_latencies(
    policies: usize,
    rules_per_policy: usize,
    iterations: usize,
    applying: usize,
) -> Vec<Duration> {
    let mut docs = Vec::with_capacity(policies);
    for p in 0..policies {
        let tag = if p + applying >= policies {
            "bench"
        } else {
            "other"
        };
        let mut text = format!("name: p{p:05}\nappliesTo:\n  tags: [{tag}]\nrules:\n");
        for r in 0..rules_per_policy {
            text.push_str(&format!("  - name: r{r}\n    effect: allow\n    actions: [\"svc{p}-{r}:*\", \"read:res{r}/*/x\"]\n"));
        }
        let doc = parse_policy(&text).doc.expect("bench policies parse");
        docs.push((format!("p{p:05}"), Arc::new(doc)));
    }
    let set = PolicySet::new(1, docs);
    let tags = vec!["bench".to_owned()];
    let last = format!("svc{}-{}:call", policies - 1, rules_per_policy - 1);
    let mut out = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let req = EvalRequest {
            agent_id: "agent_bench",
            agent_name: "bench",
            tier: TrustTier::Verified,
            tags: &tags,
            action: &last,
            resource: None,
            context: None,
        };
        let start = Instant::now();
        let d = evaluate(&set, &req);
        out.push(start.elapsed());
        std::hint::black_box(d);
    }
    out.sort();
    out
}
