//! `cargo xtask bench-evidence`: export and verify of an evidence bundle covering N decisions
//! (one million by default), wall time and peak memory (`/usr/bin/time -v`), against
//! `sha256sum -c` over the same bundle: the least a user would otherwise run on it.
//!
//! The decisions are made through the release gateway's batch endpoint (1,000 per call, half of
//! them denied), every one durably audited, before anything is timed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench_gateway::Killed;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchEvidenceArgs {
    /// Decisions in the bundle.
    #[arg(long, default_value_t = 1_000_000)]
    decisions: u64,
    /// Work directory (emptied first).
    #[arg(long, default_value = "target/bench-evidence")]
    dir: PathBuf,
}

pub(crate) const ADMIN: &str = "bench-evidence-admin-token-5d1c9a7e3b";
const PASSPHRASE: &str = "bench-evidence-passphrase-not-secret";

/// (seconds, peak RSS in MiB) of `cmd`, from GNU time's report; fails if `cmd` does.
fn timed(cmd: &mut Command, what: &str) -> anyhow::Result<(f64, f64)> {
    let report = std::env::temp_dir().join(format!("bench-evidence-time-{}", std::process::id()));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-v")
        .arg("-o")
        .arg(&report)
        .arg(program)
        .args(args)
        .stdout(Stdio::null());
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let t = Instant::now();
    let out = wrapped
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(&report)?;
    let _ = std::fs::remove_file(&report);
    let kib: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .context("GNU time printed no peak memory")?;
    Ok((secs, kib / 1024.0))
}

pub(crate) fn run(args: BenchEvidenceArgs) -> anyhow::Result<()> {
    ensure_gnu_time()?;
    let bins = crate::build_binaries(true)?;
    let dir = crate::root().join(&args.dir);
    empty(&dir)?;
    let (base, _gateway) = start_gateway(&bins, &dir)?;
    let made = make_decisions(&base, args.decisions)?;
    let out = dir.join("bundle");
    let (export, verify, sums) = time_export_and_verify(&bins, &dir, &base, &out)?;
    print_results(&out, made, export, verify, sums)
}

type Measure = (f64, f64);

/// An evidence key, then `evidence export` of the whole log into `out`, `evidence verify` of it
/// and `sha256sum -c` over it, each timed with its peak memory.
fn time_export_and_verify(
    bins: &Path,
    dir: &Path,
    base: &str,
    out: &Path,
) -> anyhow::Result<(Measure, Measure, Measure)> {
    let bundle = |args: &[&str]| {
        let mut c = Command::new(bins.join("meshguard-bundle"));
        c.args(args)
            .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
            .env("MESHGUARD_ADMIN_TOKEN", ADMIN);
        c
    };
    let (key, public) = (dir.join("evidence.key"), dir.join("evidence.pub"));
    crate::run_checked(&mut bundle(&[
        "keys",
        "generate",
        "--secret",
        &key.display().to_string(),
        "--public",
        &public.display().to_string(),
    ]))?;
    let export = timed(
        &mut bundle(&[
            "evidence",
            "export",
            "--gateway",
            base,
            "--profile",
            "fedramp-moderate",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--out",
            &out.display().to_string(),
            "--key",
            &key.display().to_string(),
        ]),
        "evidence export",
    )?;
    let verify = timed(
        &mut bundle(&[
            "evidence",
            "verify",
            &out.display().to_string(),
            "--pubkey",
            &public.display().to_string(),
            // The benchmark's gateway has no witness.
            "--accept-unwitnessed",
            "--json",
        ]),
        "evidence verify",
    )?;
    let sums = timed(
        Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(out),
        "sha256sum -c",
    )?;
    Ok((export, verify, sums))
}

/// GNU time (`/usr/bin/time -v`), which reports the peak memory, from Debian if missing.
fn ensure_gnu_time() -> anyhow::Result<()> {
    if !Path::new("/usr/bin/time").exists() {
        crate::run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "time"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

pub(crate) fn empty(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The release gateway on 127.0.0.1 with no rate limit, its SQLite file under `dir`; its URL,
/// and the guard that kills it.
fn start_gateway(bins: &Path, dir: &Path) -> anyhow::Result<(String, Killed)> {
    start_gateway_on(bins, &dir.join("gw"), &[])
}

/// The release gateway on 127.0.0.1 with no rate limit, its SQLite file in `data`, `env` set
/// after the defaults; its URL, and the guard that kills it.
pub(crate) fn start_gateway_on(
    bins: &Path,
    data: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(String, Killed)> {
    let mut gw = Command::new(bins.join("meshguard-gateway"));
    gw.env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", ADMIN)
        .env("JWT_SECRET", "bench-evidence-jwt-secret-0f1e2d3c4b5a69788")
        .env("DB_PATH", data.join("meshguard.db"))
        .env("POLICIES_DIR", data.join("policies"))
        .env("RATE_LIMIT_RPM", "0")
        .env("LOG_LEVEL", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    let mut gw = gw.spawn().context("cannot start meshguard-gateway")?;
    let base = crate::bench_gateway::listening(&mut gw)?;
    Ok((base, Killed(gw)))
}

/// A policy that allows reads and an agent, then `decisions` (rounded up to the thousand)
/// through the batch endpoint, half of them denied; returns the seconds that took.
pub(crate) fn make_decisions(base: &str, decisions: u64) -> anyhow::Result<f64> {
    let http = reqwest::blocking::Client::new();
    let admin = |m: reqwest::Method, path: &str, body: Value| -> anyhow::Result<Value> {
        Ok(http
            .request(m, format!("{base}{path}"))
            .header("X-Admin-Token", ADMIN)
            .json(&body)
            .send()?
            .error_for_status()?
            .json()?)
    };
    let policy = "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    admin(
        reqwest::Method::POST,
        "/admin/policies",
        json!({"name": "reads", "content": policy}),
    )?;
    let agent = admin(
        reqwest::Method::POST,
        "/admin/agents",
        json!({"name": "bench"}),
    )?;
    let token = agent["token"].as_str().unwrap_or_default().to_owned();
    let calls = decisions.div_ceil(1000);
    eprintln!(
        "xtask: {} decisions through the batch endpoint",
        calls * 1000
    );
    let t = Instant::now();
    batch_calls(&http, base, &token, calls)?;
    Ok(t.elapsed().as_secs_f64())
}

/// `calls` batch calls of 1,000 actions each (every other one a write, denied), on two threads.
pub(crate) fn batch_calls(
    http: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    calls: u64,
) -> anyhow::Result<()> {
    let actions: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"action": if i % 2 == 0 { format!("read:r{i}") } else { format!("write:r{i}") }})
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "actions": actions }))?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let body = &body;
                s.spawn(move || -> anyhow::Result<()> {
                    for _ in (w..calls).step_by(2) {
                        http.post(format!("{base}/api/v1/governance/batch"))
                            .bearer_auth(token)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()?
                            .error_for_status()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked")?;
        }
        Ok(())
    })
}

/// What the bundle holds (from its manifest) and the table of times and peak memory.
fn print_results(
    out: &Path,
    made: f64,
    (export_s, export_mb): Measure,
    (verify_s, verify_mb): Measure,
    (sums_s, sums_mb): Measure,
) -> anyhow::Result<()> {
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("MANIFEST.json"))?)?;
    let entries = std::fs::metadata(out.join("audit/entries.jsonl"))?.len();
    println!(
        "{} entries ({} in the period) made in {made:.1} s; audit/entries.jsonl {:.0} MiB",
        manifest["lastSeq"].as_u64().unwrap_or(0) - manifest["firstSeq"].as_u64().unwrap_or(0) + 1,
        manifest["inPeriod"],
        entries as f64 / (1 << 20) as f64
    );
    println!("| step | wall time | peak memory |");
    println!("|---|---|---|");
    println!("| `meshguard-bundle evidence export` | {export_s:.1} s | {export_mb:.0} MiB |");
    println!(
        "| `meshguard-bundle evidence verify --json` | {verify_s:.1} s | {verify_mb:.0} MiB |"
    );
    println!("| `sha256sum -c SHA256SUMS` (the peer) | {sums_s:.1} s | {sums_mb:.0} MiB |");
    Ok(())
}
