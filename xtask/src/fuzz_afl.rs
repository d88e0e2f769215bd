//! `cargo xtask fuzz-afl`: the fuzz targets of `tests/fuzz/targets.rs` under AFL++, with
//! coverage feedback (cargo-afl instruments the product's code with SanitizerCoverage on the
//! stable toolchain). Like the benchmarks, it is run by hand and recorded in docs/security.md,
//! not in CI.
//!
//! Steps: install cargo-afl (crates.io) into the tools directory if it is missing; build
//! `tests/fuzz/afl` instrumented, in its own target directory so the product's build is left
//! alone; then, per target, write its seeds, run `afl-fuzz` for the set time, and read its
//! `fuzzer_stats`. Crashes and hangs are copied under `target/fuzz-findings/afl/<target>/`; the
//! command fails if there is any, after running every target.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::run_checked;

#[derive(Debug, clap::Args)]
pub(crate) struct FuzzAflArgs {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Only these targets (repeat the flag); every target when none is given.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Work directory for seeds and afl-fuzz's output (emptied per target).
    #[arg(long, default_value = "target/fuzz-afl")]
    dir: PathBuf,
}

/// What `afl-fuzz` reported for one target (its `fuzzer_stats`).
#[derive(Debug)]
struct Stats {
    execs: u64,
    execs_per_sec: f64,
    corpus: u64,
    edges: u64,
    coverage: String,
    crashes: u64,
    hangs: u64,
}

pub(crate) fn run(args: FuzzAflArgs) -> anyhow::Result<()> {
    let tools = crate::tools::tools_dir();
    let cargo_afl = install_cargo_afl(&tools)?;
    let binary = build_instrumented(&cargo_afl)?;
    let targets = chosen_targets(&binary, &args.targets)?;
    let mut findings = Vec::new();
    println!(
        "| target | seconds | executions | exec/s | corpus | edges | map coverage | crashes | hangs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for target in &targets {
        let stats = fuzz_one(&cargo_afl, &binary, target, &args)?;
        println!(
            "| {target} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            args.seconds,
            stats.execs,
            stats.execs_per_sec,
            stats.corpus,
            stats.edges,
            stats.coverage,
            stats.crashes,
            stats.hangs
        );
        if stats.crashes + stats.hangs > 0 {
            findings.push(keep_findings(&args.dir, target)?);
        }
    }
    if !findings.is_empty() {
        bail!(
            "afl-fuzz found crashes or hangs; the inputs are in {}",
            findings
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The targets asked for, checked against those the binary has (`--list`: the targets of
/// `tests/fuzz/targets.rs`, so the list is kept in one place).
fn chosen_targets(binary: &Path, asked: &[String]) -> anyhow::Result<Vec<String>> {
    let out = Command::new(binary)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    if asked.is_empty() {
        return Ok(all);
    }
    for a in asked {
        if !all.contains(a) {
            bail!("{a:?} is not a fuzz target; use one of {}", all.join(", "));
        }
    }
    Ok(asked.to_vec())
}

/// cargo-afl from crates.io (it carries AFL++'s sources and builds them at install).
fn install_cargo_afl(tools: &Path) -> anyhow::Result<PathBuf> {
    let cargo_afl = tools.join("bin/cargo-afl");
    if !cargo_afl.exists() {
        println!("installing cargo-afl into {}", tools.display());
        run_checked(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "cargo-afl",
                    "--version",
                    "0.18.2",
                    "--root",
                ])
                .arg(tools),
        )?;
    }
    Ok(cargo_afl)
}

/// Builds `tests/fuzz/afl` instrumented, with the workspace's lock file so the product is the
/// same code as everywhere else; returns the binary.
fn build_instrumented(cargo_afl: &Path) -> anyhow::Result<PathBuf> {
    let root = crate::root();
    let crate_dir = root.join("tests/fuzz/afl");
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock"))
        .context("copying the workspace's Cargo.lock for the fuzz crate")?;
    let target_dir = root.join("target/afl");
    run_checked(
        Command::new(cargo_afl)
            .args(["afl", "build", "--release", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir),
    )?;
    Ok(target_dir.join("release/meshguard-fuzz-afl"))
}

fn fuzz_one(
    cargo_afl: &Path,
    binary: &Path,
    target: &str,
    args: &FuzzAflArgs,
) -> anyhow::Result<Stats> {
    let work = crate::root().join(&args.dir).join(target);
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("emptying {}", work.display()))?;
    }
    let seeds = work.join("in");
    run_checked(
        Command::new(binary)
            .arg("--seeds")
            .arg(&seeds)
            .env("MESHGUARD_FUZZ_TARGET", target),
    )?;
    let out = work.join("out");
    run_checked(
        Command::new(cargo_afl)
            .args(["afl", "fuzz", "-i"])
            .arg(&seeds)
            .arg("-o")
            .arg(&out)
            .arg("-V")
            .arg(args.seconds.to_string())
            .arg("--")
            .arg(binary)
            .env("MESHGUARD_FUZZ_TARGET", target)
            .env("AFL_NO_UI", "1")
            .env("AFL_SKIP_CPUFREQ", "1")
            .env("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1")
            .env("AFL_NO_AFFINITY", "1")
            .stdout(std::process::Stdio::null()),
    )?;
    read_stats(&out.join("default/fuzzer_stats"))
}

fn read_stats(path: &Path) -> anyhow::Result<Stats> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("afl-fuzz left no {}", path.display()))?;
    let field = |name: &str| -> anyhow::Result<String> {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
            .with_context(|| format!("{} has no {name}", path.display()))
    };
    let number = |name: &str| -> anyhow::Result<u64> {
        let v = field(name)?;
        v.parse()
            .with_context(|| format!("{name} in {} is {v:?}, not a number", path.display()))
    };
    Ok(Stats {
        execs: number("execs_done")?,
        execs_per_sec: field("execs_per_sec")?.parse().context("execs_per_sec")?,
        corpus: number("corpus_count")?,
        edges: number("edges_found")?,
        coverage: field("bitmap_cvg")?,
        crashes: number("saved_crashes")?,
        hangs: number("saved_hangs")?,
    })
}

/// Copies a target's crashes and hangs where findings are kept.
fn keep_findings(dir: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let keep = crate::root().join("target/fuzz-findings/afl").join(target);
    std::fs::create_dir_all(&keep)?;
    for kind in ["crashes", "hangs"] {
        let found = dir.join(target).join("out/default").join(kind);
        let Ok(entries) = std::fs::read_dir(&found) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("id:") {
                let to = keep.join(format!(
                    "{kind}-{}",
                    name.to_string_lossy().replace(':', "_")
                ));
                std::fs::copy(e.path(), to)?;
            }
        }
    }
    Ok(keep)
}
