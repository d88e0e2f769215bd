//! Hooks for measurement and fuzzing (`benches/decision.rs`, `examples/`, the fuzz targets of
//! `tests/fuzz`): the gateway's internals they reach, and nothing else. Not part of the
//! gateway's API.

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

/// CPU and wall time of durably auditing `rows` decisions in a log under `dir`, appended by
/// `concurrency` tasks at once on a two-worker runtime, as request handlers do: `(wall, process
/// CPU but the indexer's, the indexer thread's CPU once the index holds them all)`. The first
/// CPU covers preparing each entry on the workers, leading the groups, and the writer thread: the path
/// a decision waits on.
pub fn audit_rows(
    dir: &std::path::Path,
    rows: usize,
    concurrency: usize,
) -> (Duration, Duration, Duration) {
    let db_path = dir.join("meshguard.db");
    drop(crate::store::SqliteStore::open(&db_path).expect("the bench database opens"));
    let log = crate::audit::AuditLog::open(crate::audit::AuditConfig {
        db_path,
        log_dir: dir.join("audit-log"),
        key: crate::audit::keys::KeySource::File(dir.join("audit-log.key")),
        origin: "bench.example/meshguard-audit".to_owned(),
        checkpoint_every: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        redaction: crate::redaction::Redaction::None,
    })
    .expect("the bench audit log opens");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let cpu_before = process_cpu();
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in (t..rows).step_by(concurrency) {
                        log.append(sample_entry(i)).await.expect("appended");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("bench task");
        }
    });
    let wall = started.elapsed();
    // The index is filled behind the log, on its own thread: counted apart, once it holds
    // every entry.
    let (cpu, index_meanwhile) = (process_cpu() - cpu_before, thread_cpu("audit-index"));
    let reader = log.reader();
    while reader.index_lag() > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    (wall, cpu - index_meanwhile, thread_cpu("audit-index"))
}

/// Writes a log of `entries` decisions under `dir` straight through the audit writer (no
/// requests, no index: the index is left empty, as if lost), with one signed checkpoint over
/// all of it. Returns the time taken.
pub fn build_log(dir: &std::path::Path, entries: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let db_path = dir.join("meshguard.db");
    drop(crate::store::SqliteStore::open(&db_path)?);
    let origin = "bench.example/meshguard-audit";
    let key = {
        let conn = crate::audit::store_conn(&db_path)?;
        crate::audit::keys::open_signing_key(
            &conn,
            &crate::audit::keys::KeySource::File(dir.join("audit-log.key")),
            origin,
        )?
    };
    let mut writer =
        crate::audit::Writer::open(&db_path, &dir.join("audit-log"), origin, &key.vkey())?;
    let mut i = 0;
    while i < entries {
        let group = (entries - i).min(65_536);
        for j in 0..group {
            let prepared = crate::audit::Prepared::new(sample_entry(i + j));
            writer.insert(prepared).map_err(anyhow::Error::msg)?;
        }
        writer.append_durably()?;
        i += group;
    }
    writer
        .checkpoint(&key)?
        .ok_or_else(|| anyhow::anyhow!("no checkpoint was signed"))?;
    Ok(started.elapsed())
}

/// Opens the log `build_log` wrote, as the gateway does at start: `(time until it takes
/// entries, time until the index holds every entry)`.
pub fn start_log(dir: &std::path::Path) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    // The store first, as the gateway opens it: its migrations run (a log written by an earlier
    // release is upgraded here).
    drop(crate::store::SqliteStore::open(&dir.join("meshguard.db"))?);
    let log = crate::audit::AuditLog::open(crate::audit::AuditConfig {
        db_path: dir.join("meshguard.db"),
        log_dir: dir.join("audit-log"),
        key: crate::audit::keys::KeySource::File(dir.join("audit-log.key")),
        origin: "bench.example/meshguard-audit".to_owned(),
        checkpoint_every: 1_000_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        redaction: crate::redaction::Redaction::None,
    })?;
    let open = started.elapsed();
    let reader = log.reader();
    while reader.index_lag() > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((open, started.elapsed()))
}

/// An entry shaped like an allowed `/proxy/check` decision.
fn sample_entry(i: usize) -> meshguard_api::AuditEntry {
    meshguard_api::AuditEntry {
        id: crate::ids::new_time_ordered_id("aud"),
        timestamp: crate::clock::now_rfc3339(),
        event: "decision".into(),
        agent_id: Some("agent_yryttb9dn6ohw9dmhsep".into()),
        agent_name: Some("bench".into()),
        trust_tier: Some("verified".into()),
        action: format!("read:contacts/{i}"),
        resource: None,
        method: Some("GET".into()),
        path: Some("/proxy/check".into()),
        decision: "allow".into(),
        outcome: "allow".into(),
        policy: Some("bench".into()),
        policy_name: Some("bench".into()),
        rule: Some("rule-0".into()),
        reason: Some("Allowed by rule: rule-0".into()),
        trace_id: crate::ids::new_id("trace"),
        mode: "enforce".into(),
        snapshot: 2,
        meta: serde_json::Map::new(),
        would_deny: false,
        truncated: Default::default(),
    }
}

/// User plus system CPU time of this process so far (Linux `/proc/self/stat`, clock ticks of
/// 10 ms: measure runs of seconds).
fn process_cpu() -> Duration {
    stat_cpu("/proc/self/stat")
}

/// CPU time of this process's threads named `name` so far (`/proc/self/task/*/comm`).
pub fn thread_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| stat_cpu(&t.path().join("stat").to_string_lossy()))
        .sum()
}

fn stat_cpu(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The gateway's state with decisions evaluated and answered as usual but not written to the
/// audit log: the "audit off" line of `cargo xtask bench-gateway` (`examples/unaudited.rs`), so
/// the audit's cost is measured in the same run as the durable gateway and the floor. The
/// gateway binary has no way to turn the audit off.
pub async fn prepare_unaudited(config: crate::Config) -> anyhow::Result<crate::AppState> {
    crate::prepare_with(config, false).await
}

/// Fuzzing hook (`tests/fuzz`): parses a policy document as the gateway does (policy files,
/// the admin API, bundles). Must never panic, whatever the input.
pub fn fuzz_policy(text: &str) {
    let _ = parse_policy(text);
}

/// Fuzzing hook (`tests/fuzz`): judges a `/proxy/*` request as the proxy does before it
/// forwards anything. `input` is the method on the first line, the path after `/proxy/` (with
/// its query) on the second, then header lines, a blank line and the body. Panics when what
/// would be forwarded is not what was judged:
/// - a method outside the table is recorded under its own name, never mapped to a verb;
/// - the path sent upstream, judged again, must give the same object and the same path (one
///   canonical form, reached in one step);
/// - that path, decoded once, must be the object the policy judged.
pub fn fuzz_proxy_request(input: &[u8]) {
    use crate::routes::canonical;
    let text = String::from_utf8_lossy(input);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let mut headers = axum::http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
                axum::http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(n, v);
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let _ = canonical::override_in(&headers, query);
    let _ = canonical::override_in_form(&headers, body.as_bytes());
    let Ok(path) = canonical::canonical_path(path) else {
        return;
    };
    let again = canonical::canonical_path(&path.upstream).unwrap_or_else(|why| {
        panic!(
            "the forwarded path {:?} is refused when judged again: {why}",
            path.upstream
        )
    });
    assert_eq!(
        again, path,
        "the forwarded path judged again names another object"
    );
    let decoded = percent_encoding::percent_decode_str(&path.upstream).decode_utf8_lossy();
    assert_eq!(
        decoded, path.object,
        "the forwarded path decoded once is not the judged object"
    );
    if let Ok(m) = axum::http::Method::from_bytes(method.as_bytes()) {
        let action = canonical::derive_action(&m, &path.object);
        if canonical::verb(&m).is_none() {
            // Recorded under its own name (for the entry of its refusal), never as a verb.
            assert!(
                action.starts_with(&format!("{}:", m.as_str())),
                "{method:?} is outside the table and was recorded as {action}"
            );
        }
    }
}

/// Fuzzing hook (`tests/fuzz`): verifies a signed checkpoint note against `vkey` as the
/// gateway does when it reads its own checkpoints and proofs.
pub fn fuzz_checkpoint(vkey: &str, note: &str) {
    let _ = crate::audit::note::verify_checkpoint(vkey, note);
    use meshguard_tlog::note::{COSIGNATURE_V1, Vkey, verify_cosignature};
    if let Ok(k) = Vkey::parse_of_type(vkey, COSIGNATURE_V1) {
        let _ = verify_cosignature(note, note.lines().last().unwrap_or(""), &k);
    }
}
