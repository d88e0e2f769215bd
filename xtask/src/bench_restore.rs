//! `cargo xtask bench-restore`: the recovery point and recovery time of a site's backup and
//! restore (issue #37), measured on loopback with the release binaries.
//!
//! A gateway with N decisions in its log (one million by default, through the batch endpoint)
//! and M agents and M policies (10,000 each by default) is backed up (`backup take`); then D
//! more decisions are made and one `backup follow` round takes them. The recovery point of the
//! database copy is the time `backup take` started; the audit log's is the time of one follow
//! round plus its interval. The site is then destroyed, restored (`restore`) into an empty
//! directory and started: the recovery time runs from "start restore" to the first decision the
//! restored gateway answers, and what the restored log lacks of what the site answered is the
//! data lost. Nothing here is asserted: the numbers go to docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::bench_gateway::Killed;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchRestoreArgs {
    /// Decisions in the log before the backup.
    #[arg(long, default_value_t = 1_000_000)]
    decisions: u64,
    /// Agents, and policies, in the control plane.
    #[arg(long, default_value_t = 10_000)]
    objects: u64,
    /// Work directory (emptied first).
    #[arg(long, default_value = "target/bench-restore")]
    dir: PathBuf,
}

/// The admin token of the gateway `bench_evidence::make_decisions` drives.
const ADMIN: &str = crate::bench_evidence::ADMIN;
const PASSPHRASE: &str = "bench-restore-passphrase-not-secret";
const ORIGIN: &str = "bench.restore/meshguard-audit";
const KEYS: [&str; 3] = ["audit-log.key", "secrets.key", "policy-bundle.key"];

pub(crate) fn run(args: BenchRestoreArgs) -> anyhow::Result<()> {
    let bins = crate::build_binaries(true)?;
    let dir = crate::root().join(&args.dir);
    crate::bench_evidence::empty(&dir)?;
    let site = dir.join("site");
    let (base, gateway) = start(&bins, &site)?;
    crate::bench_evidence::make_decisions(&base, args.decisions)?;
    let token = agent_token(&base)?;
    let objects = make_objects(&base, args.objects)?;
    let bundle = |args: &[&str]| {
        let mut c = Command::new(bins.join("meshguard-bundle"));
        c.args(args)
            .current_dir(&dir)
            .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
            .env("MESHGUARD_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::null());
        c
    };
    crate::run_checked(&mut bundle(&[
        "keys", "generate", "--secret", "b.key", "--public", "b.pub",
    ]))?;
    let take = timed(&mut bundle(&[
        "backup",
        "take",
        "--gateway",
        &base,
        "--out",
        "backup",
        "--key",
        "b.key",
    ]))?;
    crate::bench_evidence::batch_calls(&reqwest::blocking::Client::new(), &base, &token, 10)?;
    let follow = timed(&mut bundle(&[
        "backup",
        "follow",
        "--gateway",
        &base,
        "--dir",
        "backup",
        "--key",
        "b.key",
        "--rounds",
        "1",
    ]))?;
    let answered = audit_size(&base)?;
    keep_keys(&site, &dir.join("keys"))?;
    drop(gateway);
    std::fs::remove_dir_all(&site)?;
    let started = Instant::now();
    let restore = timed(&mut bundle(&[
        "restore", "backup", "--pubkey", "b.pub", "--data", "restored",
    ]))?;
    for k in KEYS {
        std::fs::copy(dir.join("keys").join(k), dir.join("restored").join(k))?;
    }
    let (base, _restored) = start(&bins, &dir.join("restored"))?;
    first_decision(&base, &token)?;
    let rto = started.elapsed().as_secs_f64();
    let held = audit_size(&base)?;
    let backup_bytes = du(&dir.join("backup"))?;
    println!("| measure | value |\n|---|---|");
    println!(
        "| audit entries before the backup | {} |",
        args.decisions.div_ceil(1000) * 1000
    );
    println!("| agents and policies | {objects} each |");
    println!("| `backup take` | {take:.1} s |");
    println!("| one `backup follow` round (10,000 more entries) | {follow:.1} s |");
    println!(
        "| backup size | {:.0} MiB |",
        backup_bytes as f64 / 1048576.0
    );
    println!("| `restore` | {restore:.1} s |");
    println!("| start of restore to the first decision answered (RTO) | {rto:.1} s |");
    // The restored log's own entries: the restore, the configuration at start, and the first
    // decision it answered.
    let restored = held.saturating_sub(3);
    println!(
        "| entries the site held / the restored log holds of them | {answered} / {restored} (lost: {}) |",
        answered.saturating_sub(restored)
    );
    Ok(())
}

/// The release gateway on `data` (a site of its own): its URL and its guard.
fn start(bins: &Path, data: &Path) -> anyhow::Result<(String, Killed)> {
    crate::bench_evidence::start_gateway_on(bins, data, &[("AUDIT_ORIGIN", ORIGIN)])
}

/// `n` agents and `n` policies through the admin API, on two threads.
fn make_objects(base: &str, n: u64) -> anyhow::Result<u64> {
    let http = reqwest::blocking::Client::new();
    eprintln!("xtask: {n} agents and {n} policies");
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..2u64)
            .map(|w| {
                let http = &http;
                s.spawn(move || -> anyhow::Result<()> {
                    for i in (w..n).step_by(2) {
                        for (path, body) in [
                            ("/admin/agents", json!({"name": format!("agent-{i}")})),
                            ("/admin/policies", json!({"name": format!("p{i}"), "content": format!("name: p{i}\nrules:\n  - effect: allow\n    actions: [\"read:p{i}\"]\n")})),
                        ] {
                            http.post(format!("{base}{path}"))
                                .header("X-Admin-Token", ADMIN)
                                .json(&body)
                                .send()?
                                .error_for_status()?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked")?;
        }
        Ok(())
    })?;
    Ok(n)
}

/// A new agent's token (the decisions' policy allows it reads).
fn agent_token(base: &str) -> anyhow::Result<String> {
    let agent: Value = reqwest::blocking::Client::new()
        .post(format!("{base}/admin/agents"))
        .header("X-Admin-Token", ADMIN)
        .json(&json!({"name": "bench-restore"}))
        .send()?
        .error_for_status()?
        .json()?;
    agent["token"]
        .as_str()
        .map(str::to_owned)
        .context("a created agent has a token")
}

fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    crate::run_checked(cmd)?;
    Ok(t.elapsed().as_secs_f64())
}

fn audit_size(base: &str) -> anyhow::Result<u64> {
    let info: Value = reqwest::blocking::Client::new()
        .get(format!("{base}/admin/info"))
        .header("X-Admin-Token", ADMIN)
        .send()?
        .error_for_status()?
        .json()?;
    info["auditLog"]["size"]
        .as_u64()
        .context("/admin/info names no audit log size")
}

/// The site's key files, kept apart from its backups as docs/keys.md says.
fn keep_keys(site: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for k in KEYS {
        std::fs::copy(site.join(k), to.join(k)).with_context(|| format!("cannot keep {k}"))?;
    }
    Ok(())
}

/// Waits for the first decision the gateway answers (allowed), up to ten minutes.
fn first_decision(base: &str, token: &str) -> anyhow::Result<()> {
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let status = http
            .get(format!("{base}/proxy/check"))
            .bearer_auth(token)
            .header("X-MeshGuard-Action", "read:r0")
            .send()
            .map(|r| r.status().as_u16());
        if status.is_ok_and(|s| s == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the restored gateway answered no decision within ten minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn du(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in walk(dir)? {
        total += std::fs::metadata(e)?.len();
    }
    Ok(total)
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
