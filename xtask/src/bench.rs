//! `cargo xtask bench-provider`: `terraform apply` and `plan` of N `meshguard_agent` resources
//! against the gateway, versus N `null_resource` from the real hashicorp/null 2.1.2, in one run.
//!
//! Release builds of the gateway and provider; the gateway on 127.0.0.1 with its SQLite file in a
//! temporary directory; both providers installed from one filesystem mirror. Wall times are the
//! best of the rounds; the provider's CPU time is sampled from `/proc` while Terraform runs.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::root;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Resources per configuration.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Rounds; each round applies, plans and destroys both configurations.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

struct Timings {
    apply: Duration,
    plan: Duration,
    cpu_ticks: Option<u64>,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tools = crate::tools::install_all()?;
    let bins = crate::build_binaries(true)?;
    let work = tempdir()?;
    let mirror = work.join("mirror");
    crate::provider_mirror(&bins, &mirror)?;
    crate::tools::null_provider(&tools, &mirror)?;
    let gateway = Gateway::start(&bins.join("meshguard-gateway"), &work)?;
    let mut results: Vec<(&str, Vec<Timings>)> = Vec::new();
    for (name, text) in configurations(&gateway.base, args.count) {
        let config = Config::init(
            &tools.bin.join("terraform"),
            &work.join(name),
            &text,
            &mirror,
        )?;
        results.push((name, config.rounds(name, args.rounds)?));
    }
    drop(gateway);
    print_results(&args, &results);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

const ADMIN_TOKEN: &str = "bench-admin-token-5f0c2e9a7b1d3f46";

/// The release gateway on 127.0.0.1 with its SQLite file under the work directory; killed when
/// dropped.
struct Gateway {
    child: Child,
    base: String,
}

impl Gateway {
    fn start(binary: &Path, work: &Path) -> anyhow::Result<Gateway> {
        let mut child = Command::new(binary)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "JWT_SECRET",
                "bench-jwt-secret-8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
            )
            .env("DB_PATH", work.join("gw/meshguard.db"))
            .env("POLICIES_DIR", work.join("gw/policies"))
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut gateway = Gateway {
            child,
            base: String::new(),
        };
        gateway.base = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening on ") => {
                    break l["listening on ".len()..].to_owned();
                }
                Some(_) => {}
                None => bail!("the gateway exited before listening"),
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Ok(gateway)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three configurations, each of `count` resources: meshguard_agent against the gateway at
/// `base`, null_resource, and null_resource padded to a meshguard_agent's state size.
fn configurations(base: &str, count: usize) -> [(&'static str, String); 3] {
    let header = "terraform {\n  required_providers {\n    meshguard = { source = \"registry.terraform.io/meshguard/meshguard\" }\n    null = { source = \"registry.terraform.io/hashicorp/null\", version = \"2.1.2\" }\n  }\n}\n";
    [
        (
            "meshguard_agent",
            format!(
                "{header}provider \"meshguard\" {{\n  gateway_url = \"{base}\"\n}}\nresource \"meshguard_agent\" \"a\" {{\n  count      = {}\n  name       = \"bench-${{count.index}}\"\n  trust_tier = \"verified\"\n  tags       = [\"bench\"]\n}}\n",
                count
            ),
        ),
        (
            "null_resource",
            format!(
                "{header}resource \"null_resource\" \"n\" {{\n  count = {}\n  triggers = {{\n    name = \"bench-${{count.index}}\"\n  }}\n}}\n",
                count
            ),
        ),
        // The same null_resource carrying as many state bytes as a meshguard_agent (whose api_key
        // JWT alone is ~350 bytes): Terraform core's per-resource cost grows with state size.
        (
            "null_resource_padded",
            format!(
                "{header}resource \"null_resource\" \"n\" {{\n  count = {}\n  triggers = {{\n    name = \"bench-${{count.index}}\"\n    tier = \"verified\"\n    tags = \"bench\"\n    pad  = \"{}\"\n  }}\n}}\n",
                count,
                "x".repeat(400)
            ),
        ),
    ]
}

/// One configuration in its own directory, initialised from the mirror.
struct Config {
    terraform: PathBuf,
    dir: PathBuf,
}

impl Config {
    fn init(terraform: &Path, dir: &Path, text: &str, mirror: &Path) -> anyhow::Result<Config> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(dir.join("main.tf"), text)
            .and_then(|()| fs::write(dir.join("cli.tfrc"), ""))
            .with_context(|| format!("cannot write the configuration in {}", dir.display()))?;
        let config = Config {
            terraform: terraform.to_owned(),
            dir: dir.to_owned(),
        };
        config.tf(
            &[
                "init",
                "-no-color",
                &format!("-plugin-dir={}", mirror.display()),
            ],
            None,
        )?;
        Ok(config)
    }

    /// Each round applies (sampling the provider's CPU), plans and destroys.
    fn rounds(&self, name: &str, rounds: usize) -> anyhow::Result<Vec<Timings>> {
        let mut timings = Vec::new();
        for round in 0..rounds {
            let sampler = CpuSampler::default();
            let apply = self.tf(&["apply", "-auto-approve", "-no-color"], Some(&sampler))?;
            let cpu_ticks = sampler.ticks();
            let plan = self.tf(&["plan", "-no-color"], None)?;
            self.tf(&["destroy", "-auto-approve", "-no-color"], None)?;
            eprintln!(
                "{name} round {}: apply {:.2?}, plan {:.2?}",
                round + 1,
                apply,
                plan
            );
            timings.push(Timings {
                apply,
                plan,
                cpu_ticks,
            });
        }
        Ok(timings)
    }

    /// `terraform ARGS`, which must succeed; how long it took.
    fn tf(&self, args: &[&str], cpu: Option<&CpuSampler>) -> anyhow::Result<Duration> {
        let mut cmd = Command::new(&self.terraform);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", self.dir.join("cli.tfrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("MESHGUARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null());
        let start = Instant::now();
        let mut child = cmd.spawn().context("cannot run terraform")?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if let Some(sampler) = cpu {
                sampler.sample();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = start.elapsed();
        if !status.success() {
            bail!(
                "terraform {} failed in {}",
                args.join(" "),
                self.dir.display()
            );
        }
        Ok(took)
    }
}

fn best(r: &[Timings], f: fn(&Timings) -> Duration) -> Duration {
    r.iter().map(f).min().unwrap_or_default()
}

/// The table of best times, the ratios of meshguard_agent to each other configuration, and the
/// provider's CPU per resource.
fn print_results(args: &BenchArgs, results: &[(&str, Vec<Timings>)]) {
    println!(
        "\n| {} resources | apply (best of {}) | plan (best of {}) |",
        args.count, args.rounds, args.rounds
    );
    println!("|---|---|---|");
    for (name, rounds) in results {
        println!(
            "| {name} | {:.2?} | {:.2?} |",
            best(rounds, |t| t.apply),
            best(rounds, |t| t.plan)
        );
    }
    let mg = &results[0].1;
    for (name, other) in &results[1..] {
        println!(
            "apply ratio meshguard_agent/{name}: {:.2}x; plan ratio: {:.2}x",
            best(mg, |t| t.apply).as_secs_f64() / best(other, |t| t.apply).as_secs_f64(),
            best(mg, |t| t.plan).as_secs_f64() / best(other, |t| t.plan).as_secs_f64()
        );
    }
    if let Some(ticks) = mg.iter().filter_map(|t| t.cpu_ticks).min() {
        let secs = ticks as f64 / 100.0;
        println!(
            "provider CPU during apply: {secs:.2} s for {} agents = {:.2} ms per resource (clock ticks of 10 ms)",
            args.count,
            secs * 1000.0 / args.count as f64
        );
    }
}

/// The highest utime+stime (clock ticks) seen for a running `terraform-provider-meshguard`.
#[derive(Default)]
struct CpuSampler {
    max: std::cell::Cell<Option<u64>>,
}

impl CpuSampler {
    fn sample(&self) {
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let path = p.path();
            let Ok(cmdline) = fs::read(path.join("cmdline")) else {
                continue;
            };
            if !String::from_utf8_lossy(&cmdline).contains("terraform-provider-meshguard") {
                continue;
            }
            let Ok(stat) = fs::read_to_string(path.join("stat")) else {
                continue;
            };
            // After the parenthesised command name, utime and stime are the 12th and 13th fields.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let parse = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            if let (Some(u), Some(s)) = (parse(11), parse(12))
                && self.max.get().is_none_or(|m| u + s > m)
            {
                self.max.set(Some(u + s));
            }
        }
    }

    fn ticks(&self) -> Option<u64> {
        self.max.get()
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = root().join("target/bench-provider");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
