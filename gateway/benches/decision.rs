//! In-process decision latency, p50 and p99, with 10, 1,000 and 10,000 rules.
//!
//! `cargo bench -p meshguard-gateway --bench decision`. The rules are spread over policies of
//! 10 rules each and the asked action matches only the very last rule, so every rule is tried.

use std::time::Duration;

use meshguard_gateway::bench_support::decision_latencies;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo test --benches` runs this once as a smoke test; keep that quick.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    println!("| rules | policies | applying to the agent | p50 | p99 | iterations |");
    println!("|---|---|---|---|---|---|");
    for (rules, applying) in [
        (10usize, 1usize),
        (1_000, 100),
        (10_000, 1_000),
        (10_000, 10),
    ] {
        let policies = rules / 10;
        let iterations = if quick {
            10
        } else {
            (2_000_000 / rules).clamp(200, 100_000)
        };
        let lat = decision_latencies(policies, 10, iterations, applying);
        println!(
            "| {rules} | {policies} | {applying} | {:.2?} | {:.2?} | {iterations} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
}
