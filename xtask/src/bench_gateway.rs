//! `cargo xtask bench-gateway`: `GET /proxy/check` over loopback with wrk, every decision
//! durably audited, against the same gateway with the audit off and a hello-world server on the
//! same HTTP stack (the floor), in one run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{cargo, root, run_checked};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchGatewayArgs {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Open connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Rounds of (gateway on disk, gateway on tmpfs, audit off, floor), interleaved so a drift
    /// of the shared machine hits all four alike; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn listening(child: &mut Child) -> anyhow::Result<String> {
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("listening on ") => {
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(l["listening on ".len()..].to_owned());
            }
            Some(_) => {}
            None => bail!("the server exited before listening"),
        }
    }
}

/// `(requests per second, p99)` as wrk printed them.
fn wrk(
    url: &str,
    headers: &[(&str, &str)],
    args: &BenchGatewayArgs,
) -> anyhow::Result<(String, String)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", args.connections),
        &format!("-d{}s", args.seconds),
        "--latency",
    ]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    let out = cmd.arg(url).output().context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed:\n{text}");
    }
    if text.contains("Non-2xx") {
        bail!("wrk saw error answers; the benchmark would measure failures:\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .map(|v| v.trim().to_owned());
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_owned());
    Ok((rps.unwrap_or_default(), p99.unwrap_or_default()))
}

/// The run with the median requests/s: its `(requests/s, p99)`.
fn median(runs: &[(String, String)]) -> (String, String) {
    let mut sorted: Vec<&(String, String)> = runs.iter().collect();
    sorted.sort_by(|a, b| {
        let rate = |r: &(String, String)| r.0.parse::<f64>().unwrap_or(0.0);
        rate(a).total_cmp(&rate(b))
    });
    sorted
        .get(sorted.len() / 2)
        .map(|r| (r.0.clone(), r.1.clone()))
        .unwrap_or_default()
}

/// Starts the release `server` (the gateway, or the same with the audit off) with its database
/// under `work`, and runs wrk against `/proxy/check`: (requests/s, p99, audit rows written).
fn measure(
    server: &Path,
    work: &Path,
    args: &BenchGatewayArgs,
) -> anyhow::Result<(String, String, Value)> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    std::fs::create_dir_all(work)?;
    let token = "bench-admin-token-8a6c4e2f0b9d7153";
    let mut gw = Command::new(server)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", token)
        .env(
            "JWT_SECRET",
            "bench-jwt-secret-1f2e3d4c5b6a79880f1e2d3c4b5a6978",
        )
        .env("DB_PATH", work.join("meshguard.db"))
        .env("POLICIES_DIR", work.join("policies"))
        .env("RATE_LIMIT_RPM", "0")
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .spawn()?;
    let base = listening(&mut gw)?;
    let _gw = Killed(gw);
    let client = reqwest::blocking::Client::new();
    std::thread::sleep(Duration::from_millis(300));
    let policy = "name: bench\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    client
        .post(format!("{base}/admin/policies"))
        .header("X-Admin-Token", token)
        .json(&serde_json::json!({"name": "bench", "content": policy}))
        .send()?
        .error_for_status()?;
    let agent: Value = client
        .post(format!("{base}/admin/agents"))
        .header("X-Admin-Token", token)
        .json(&serde_json::json!({"name": "bench"}))
        .send()?
        .error_for_status()?
        .json()?;
    let bearer = format!("Bearer {}", agent["token"].as_str().unwrap_or_default());
    let (gw_rps, gw_p99) = wrk(
        &format!("{base}/proxy/check"),
        &[
            ("Authorization", &bearer),
            ("X-MeshGuard-Action", "read:contacts"),
        ],
        args,
    )?;
    let audited: Value = client
        .get(format!("{base}/admin/audit/stats?period=1h"))
        .header("X-Admin-Token", token)
        .send()?
        .json()?;

    Ok((gw_rps, gw_p99, audited["total"].clone()))
}

/// wrk, the load generator the benchmarks share (apt `wrk`).
pub(crate) fn ensure_wrk() -> anyhow::Result<()> {
    if !Path::new("/usr/bin/wrk").exists() {
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

pub(crate) fn run(args: BenchGatewayArgs) -> anyhow::Result<()> {
    ensure_wrk()?;
    build()?;
    let mut hello = Command::new(root().join("target/release/examples/hello"))
        .stdout(Stdio::piped())
        .spawn()?;
    let hello_url = listening(&mut hello)?;
    let _hello = Killed(hello);
    let shm = Path::new("/dev/shm/meshguard-bench-gateway");
    let rounds = interleaved_rounds(&args, &hello_url, shm)?;
    let _ = std::fs::remove_dir_all(shm);
    print_results(&args, &rounds);
    Ok(())
}

/// The gateway, the hello-world floor and the bench-only gateway that records nothing, release.
fn build() -> anyhow::Result<()> {
    run_checked(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "meshguard-gateway",
        "--bin",
        "meshguard-gateway",
        "--example",
        "hello",
        "--example",
        "unaudited",
    ]))
}

/// (requests/s, p99) of every round, per server; and the audit entries of the last disk run.
struct Rounds {
    disk: Vec<(String, String)>,
    tmpfs: Vec<(String, String)>,
    off: Vec<(String, String)>,
    floor: Vec<(String, String)>,
    rows: Value,
}

/// Each round measures the durable gateway, the same on tmpfs, the same with audit off and the
/// floor, one after the other, so a slow spell of the machine falls on all of them.
fn interleaved_rounds(
    args: &BenchGatewayArgs,
    hello_url: &str,
    shm: &Path,
) -> anyhow::Result<Rounds> {
    let gateway = root().join("target/release/meshguard-gateway");
    let unaudited = root().join("target/release/examples/unaudited");
    let disk_dir = root().join("target/bench-gateway");
    let mut r = Rounds {
        disk: Vec::new(),
        tmpfs: Vec::new(),
        off: Vec::new(),
        floor: Vec::new(),
        rows: Value::Null,
    };
    for round in 1..=args.rounds.max(1) {
        let (rps, p99, written) = measure(&gateway, &disk_dir, args)?;
        r.rows = written;
        r.disk.push((rps, p99));
        // The same gateway with its database on tmpfs, where fsync returns at once: the
        // difference is what durability costs.
        let (rps, p99, _) = measure(&gateway, shm, args)?;
        r.tmpfs.push((rps, p99));
        // The same gateway recording nothing (a bench-only build; the binary has no such
        // setting): the difference is what the audit log costs.
        let (rps, p99, _) = measure(&unaudited, &disk_dir, args)?;
        r.off.push((rps, p99));
        r.floor.push(wrk(&format!("{hello_url}/"), &[], args)?);
        eprintln!(
            "round {round}: disk {} | tmpfs {} | audit off {} | floor {} req/s",
            r.disk[r.disk.len() - 1].0,
            r.tmpfs[r.tmpfs.len() - 1].0,
            r.off[r.off.len() - 1].0,
            r.floor[r.floor.len() - 1].0
        );
    }
    Ok(r)
}

/// The table of medians and the throughputs against the floor.
fn print_results(args: &BenchGatewayArgs, r: &Rounds) {
    let (gw_rps, gw_p99) = median(&r.disk);
    let (shm_rps, shm_p99) = median(&r.tmpfs);
    let (off_rps, off_p99) = median(&r.off);
    let (h_rps, h_p99) = median(&r.floor);
    println!(
        "\n| server ({} connections, {} s, wrk -t2, median of {} interleaved rounds) | requests/s | p99 |",
        args.connections,
        args.seconds,
        args.rounds.max(1)
    );
    println!("|---|---|---|");
    println!(
        "| meshguard-gateway GET /proxy/check, every decision durably audited | {gw_rps} | {gw_p99} |"
    );
    println!(
        "| the same, database on tmpfs (fsync is free: durability's cost is the difference) | {shm_rps} | {shm_p99} |"
    );
    println!(
        "| the same, audit off (bench-only build: decisions answered, none recorded) | {off_rps} | {off_p99} |"
    );
    println!("| hello world on axum/hyper/tokio (the floor) | {h_rps} | {h_p99} |");
    let rate = |r: &str| r.parse::<f64>().unwrap_or(f64::NAN);
    println!(
        "\nthroughput against the floor (medians): durable {:.2}, tmpfs {:.2}, audit off {:.2}; durable against audit off {:.2}; audit entries written in the last disk run: {}",
        rate(&gw_rps) / rate(&h_rps),
        rate(&shm_rps) / rate(&h_rps),
        rate(&off_rps) / rate(&h_rps),
        rate(&gw_rps) / rate(&off_rps),
        r.rows,
    );
    println!(
        "{}",
        issue_35_line(
            (rate(&gw_rps), &gw_p99),
            (rate(&shm_rps), &shm_p99),
            (rate(&off_rps), &off_p99)
        )
    );
}

/// The comparison issue #35 sets its goals on, in one line: durable (disk and tmpfs) against
/// the same gateway with the audit off, throughput and p99.
fn issue_35_line(disk: (f64, &str), tmpfs: (f64, &str), off: (f64, &str)) -> String {
    let ms = |p: &str| p99_ms(p).unwrap_or(f64::NAN);
    format!(
        "durable / audit off: disk {:.2}, tmpfs {:.2} (goals >= 0.6, >= 0.8); p99 disk {:.1} / {:.1} ms = {:.1}x, tmpfs {:.1} / {:.1} ms = {:.1}x (goal <= 2x)",
        disk.0 / off.0,
        tmpfs.0 / off.0,
        ms(disk.1),
        ms(off.1),
        ms(disk.1) / ms(off.1),
        ms(tmpfs.1),
        ms(off.1),
        ms(tmpfs.1) / ms(off.1),
    )
}

/// A wrk latency (`850.00us`, `10.45ms`, `1.20s`) in milliseconds.
fn p99_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latencies_read_in_milliseconds_and_the_line_carries_both_ratios() {
        assert_eq!(p99_ms("850.00us"), Some(0.85));
        assert_eq!(p99_ms("10.45ms"), Some(10.45));
        assert_eq!(p99_ms("1.20s"), Some(1200.0));
        assert_eq!(p99_ms(""), None);
        let line = issue_35_line(
            (20_000.0, "16.10ms"),
            (30_000.0, "9.00ms"),
            (50_000.0, "8.05ms"),
        );
        assert!(line.contains("disk 0.40, tmpfs 0.60"), "{line}");
        assert!(line.contains("p99 disk 16.1 / 8.1 ms = 2.0x"), "{line}");
    }
}
