//! `cargo xtask bench-cluster`: the control plane on one PostgreSQL shared by 1, 2 and 3
//! gateways, against the single gateway on its embedded SQLite file, in one run on this machine:
//! admin writes per second, `GET /proxy/check` throughput (wrk on every gateway at once), and how
//! long a revoke made through one gateway takes to be refused by another (p50/p99).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench_gateway::{Killed, ensure_wrk, listening};
use crate::{cargo, root, run_checked};

use meshguard_testkit::pg;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchClusterArgs {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Open connections per gateway.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Agents created per write measurement (by 4 clients spread over the gateways).
    #[arg(long, default_value_t = 400)]
    writes: u32,
    /// Revokes timed for the propagation percentiles.
    #[arg(long, default_value_t = 200)]
    revokes: u32,
    /// Rounds of (SQLite, PostgreSQL with 1, 2, 3 gateways), interleaved so a drift of the
    /// shared machine hits all alike; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

const ADMIN: &str = "bench-admin-token-8a6c4e2f0b9d7153";
const SECRETS_KEY: &str = "bWVzaGd1YXJkLWNsdXN0ZXItdGVzdC1rZXktMzJieXQ=";

struct Gateway {
    base: String,
    _child: Killed,
}

fn start(server: &Path, work: &Path, url: Option<&str>) -> anyhow::Result<Gateway> {
    std::fs::create_dir_all(work)?;
    let mut cmd = Command::new(server);
    cmd.env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", ADMIN)
        .env(
            "JWT_SECRET",
            "bench-jwt-secret-1f2e3d4c5b6a79880f1e2d3c4b5a6978",
        )
        .env("DB_PATH", work.join("meshguard.db"))
        .env("POLICIES_DIR", work.join("policies"))
        .env("SECRETS_KEY", SECRETS_KEY)
        // Each gateway is a log origin of its own, as the chart names them after their pods.
        .env(
            "AUDIT_ORIGIN",
            format!(
                "bench/{}",
                work.file_name().unwrap_or_default().to_string_lossy()
            ),
        )
        .env("RATE_LIMIT_RPM", "0")
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::piped());
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd.spawn()?;
    let base = listening(&mut child)?;
    let gw = Gateway {
        base,
        _child: Killed(child),
    };
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{}/ready", gw.base))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("the gateway at {} never became ready", gw.base);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(gw)
}

fn admin(
    client: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = client.request(method, url).header("X-Admin-Token", ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send()?;
    let status = resp.status();
    let text = resp.text()?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn check(client: &reqwest::blocking::Client, base: &str, token: &str) -> anyhow::Result<u16> {
    Ok(client
        .get(format!("{base}/proxy/check"))
        .bearer_auth(token)
        .header("X-MeshGuard-Action", "read:contacts")
        .send()?
        .status()
        .as_u16())
}

/// Agents created per second by 4 clients, each writing through the gateways in turn.
fn writes(gws: &[Gateway], n: u32) -> anyhow::Result<f64> {
    let bases: Vec<String> = gws.iter().map(|g| g.base.clone()).collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let bases = bases.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let client = reqwest::blocking::Client::new();
                for i in 0..n / 4 {
                    let base = &bases[(i as usize + w) % bases.len()];
                    admin(
                        &client,
                        reqwest::Method::POST,
                        format!("{base}/admin/agents"),
                        Some(json!({"name": format!("w{w}-{i}")})),
                    )?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a writer thread")?;
    }
    Ok(f64::from(n / 4 * 4) / started.elapsed().as_secs_f64())
}

/// Requests per second summed over one wrk per gateway, all at once.
fn throughput(gws: &[Gateway], token: &str, args: &BenchClusterArgs) -> anyhow::Result<f64> {
    let runs: Vec<_> = gws
        .iter()
        .map(|g| {
            Command::new("wrk")
                .args([
                    "-t1",
                    &format!("-c{}", args.connections),
                    &format!("-d{}s", args.seconds),
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    "-H",
                    "X-MeshGuard-Action: read:contacts",
                    &format!("{}/proxy/check", g.base),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot run wrk")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = 0.0;
    for run in runs {
        let out = run.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || text.contains("Non-2xx") {
            bail!("wrk failed or saw error answers:\n{text}");
        }
        total += text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    Ok(total)
}

/// Milliseconds from a revoke answered by `a` to `b` refusing the agent's token, per revoke.
fn propagation(a: &Gateway, b: &Gateway, n: u32) -> anyhow::Result<Vec<f64>> {
    let client = reqwest::blocking::Client::new();
    let mut out = Vec::new();
    for i in 0..n {
        let agent = admin(
            &client,
            reqwest::Method::POST,
            format!("{}/admin/agents", a.base),
            Some(json!({"name": format!("revoked-{i}")})),
        )?;
        let (id, token) = (
            agent["id"].as_str().unwrap_or_default().to_owned(),
            agent["token"].as_str().unwrap_or_default().to_owned(),
        );
        // B caches the agent through a decision, as a busy gateway would have.
        if check(&client, &b.base, &token)? != 200 {
            bail!("gateway B does not allow the new agent");
        }
        admin(
            &client,
            reqwest::Method::DELETE,
            format!("{}/admin/agents/{id}", a.base),
            None,
        )?;
        let revoked = Instant::now();
        let deadline = revoked + Duration::from_secs(10);
        while check(&client, &b.base, &token)? != 401 {
            if Instant::now() > deadline {
                bail!("gateway B still allowed a revoked agent after 10 s");
            }
        }
        out.push(revoked.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A gateway set up for the data plane: the allow-reads policy and one agent, whose token it
/// returns after every gateway allows it.
fn prepare(gws: &[Gateway]) -> anyhow::Result<String> {
    let client = reqwest::blocking::Client::new();
    let first = &gws[0].base;
    let policy = "name: bench\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    admin(
        &client,
        reqwest::Method::POST,
        format!("{first}/admin/policies"),
        Some(json!({"name": "bench", "content": policy})),
    )?;
    let agent = admin(
        &client,
        reqwest::Method::POST,
        format!("{first}/admin/agents"),
        Some(json!({"name": "bench"})),
    )?;
    let token = agent["token"].as_str().unwrap_or_default().to_owned();
    for g in gws {
        let deadline = Instant::now() + Duration::from_secs(10);
        while check(&client, &g.base, &token)? != 200 {
            if Instant::now() > deadline {
                bail!("gateway {} never enforced the policy", g.base);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(token)
}

pub(crate) fn run(args: BenchClusterArgs) -> anyhow::Result<()> {
    ensure_wrk()?;
    run_checked(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "meshguard-gateway",
        "--bin",
        "meshguard-gateway",
    ]))?;
    let server = root().join("target/release/meshguard-gateway");
    let work: PathBuf = root().join("target/bench-cluster");
    let _ = std::fs::remove_dir_all(&work);
    let server_pg = pg::PgServer::start();
    let rows = configurations(&args, &server, &work, &server_pg)?;
    let lat = revoke_latencies(&args, &server, &work, &server_pg)?;
    print_results(&args, &rows, &lat);
    Ok(())
}

/// Admin writes/s and checks/s of SQLite with one gateway and PostgreSQL with 1, 2 and 3, in
/// interleaved rounds; the median of each, per configuration.
fn configurations(
    args: &BenchClusterArgs,
    server: &Path,
    work: &Path,
    server_pg: &pg::PgServer,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    // Per configuration: (writes/s, checks/s) of every round.
    let mut runs: Vec<(String, Vec<(f64, f64)>)> = vec![
        (
            "SQLite file, 1 gateway (the embedded default)".to_owned(),
            Vec::new(),
        ),
        ("PostgreSQL 15, 1 gateway".to_owned(), Vec::new()),
        ("PostgreSQL 15, 2 gateways".to_owned(), Vec::new()),
        ("PostgreSQL 15, 3 gateways".to_owned(), Vec::new()),
    ];
    for round in 1..=args.rounds.max(1) {
        for (n, (_, results)) in runs.iter_mut().enumerate() {
            let dir = work.join(format!("r{round}-c{n}"));
            let gws = if n == 0 {
                vec![start(server, &dir.join("g0"), None)?]
            } else {
                let url = server_pg.database(&format!("bench_r{round}_c{n}"));
                (0..n)
                    .map(|i| start(server, &dir.join(format!("g{i}")), Some(&url)))
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let token = prepare(&gws)?;
            let w = writes(&gws, args.writes)?;
            let t = throughput(&gws, &token, args)?;
            eprintln!("round {round}, configuration {n}: {w:.0} writes/s, {t:.0} checks/s");
            results.push((w, t));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Ok(runs
        .into_iter()
        .map(|(name, r)| {
            let w = median(r.iter().map(|x| x.0).collect());
            let t = median(r.iter().map(|x| x.1).collect());
            (name, w, t)
        })
        .collect())
}

/// How long each revoke through gateway A takes to act on gateway B, on one database.
fn revoke_latencies(
    args: &BenchClusterArgs,
    server: &Path,
    work: &Path,
    server_pg: &pg::PgServer,
) -> anyhow::Result<Vec<f64>> {
    let url = server_pg.database("propagation");
    let a = start(server, &work.join("prop-a"), Some(&url))?;
    let b = start(server, &work.join("prop-b"), Some(&url))?;
    let pair = [a, b];
    prepare(&pair)?;
    let [a, b] = pair;
    propagation(&a, &b, args.revokes)
}

fn print_results(args: &BenchClusterArgs, rows: &[(String, f64, f64)], lat: &[f64]) {
    println!(
        "\n| control plane (medians of {} interleaved rounds; wrk -t1 -c{} -d{}s on every gateway at once; {} agents created by 4 clients) | admin writes/s | GET /proxy/check requests/s, all gateways |",
        args.rounds.max(1),
        args.connections,
        args.seconds,
        args.writes
    );
    println!("|---|---|---|");
    for (name, w, t) in rows {
        println!("| {name} | {w:.0} | {t:.0} |");
    }
    println!(
        "\nrevoke through gateway A until gateway B refuses the token ({} revokes, B's cache warm): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}
