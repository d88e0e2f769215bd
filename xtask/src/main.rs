//! Developer commands for the MeshGuard deploy toolkit, run as `cargo xtask <command>`.
//!
//! - `demo`: builds the gateway and walks through the main job on embedded defaults.
//! - `test`: installs the missing test tools into `.tools/` (outside git), then runs every test.
//! - `tools`: installs the test tools only.
//! - `images`: the product's OCI images from the workspace's binaries.

mod bench;
mod bench_cluster;
mod bench_evidence;
mod bench_gateway;
mod bench_install;
mod bench_media;
mod bench_restore;
mod demo;
mod docs;
mod fuzz_afl;
mod images;
mod previous_release;
mod tools;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "MeshGuard deploy toolkit developer commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build, start the gateway on 127.0.0.1 with embedded SQLite and walk through the main job.
    Demo(demo::DemoArgs),
    /// Install missing test tools, then run every test of the workspace.
    Test {
        /// Extra arguments passed to `cargo test` (after `--` for the test binaries).
        #[arg(trailing_var_arg = true)]
        rest: Vec<String>,
    },
    /// Install the test tools into the tools directory and print where they are.
    Tools,
    /// Run the shell blocks of README.md and docs/*.md as written (what `test` ends with).
    Docs,
    /// Build the product's OCI images (meshguard/gateway, meshguard/tools) from this
    /// workspace's binaries, with no container daemon, into an OCI layout.
    Images(images::ImagesArgs),
    /// Benchmark terraform apply/plan of N meshguard_agent against N null_resource (hashicorp/null
    /// 2.1.2), release builds, in one run.
    BenchProvider(bench::BenchArgs),
    /// Benchmark GET /proxy/check with wrk (durable audit) against a hello-world server on the
    /// same HTTP stack, in one run.
    BenchGateway(bench_gateway::BenchGatewayArgs),
    /// Benchmark the control plane on one PostgreSQL with 1, 2 and 3 gateways against the
    /// SQLite single gateway (admin writes/s, /proxy/check throughput) and time how long a revoke
    /// takes to act on another gateway, in one run.
    BenchCluster(bench_cluster::BenchClusterArgs),
    /// Time a fresh site install from media (`meshguard-bundle install`) under `unshare -n`,
    /// per step.
    BenchInstall(bench_install::BenchInstallArgs),
    /// Fuzz every parser of untrusted input with AFL++ and coverage feedback (cargo-afl), for a
    /// set time per target; prints executions, coverage and findings (not run in CI).
    FuzzAfl(fuzz_afl::FuzzAflArgs),
    /// Benchmark evidence export and verify of a bundle of a million decisions (time, peak
    /// memory) against sha256sum -c over the same bundle, release builds.
    BenchEvidence(bench_evidence::BenchEvidenceArgs),
    /// Measure backup and restore: the recovery point and the time from "start restore" to the
    /// first decision answered, on a site of a million decisions and 10,000 agents and
    /// policies, release builds.
    BenchRestore(bench_restore::BenchRestoreArgs),
    /// Benchmark meshguard-bundle verify, pack and import on about 2 GiB of image blobs against
    /// sha256sum/openssl, tar|zstd and skopeo, in one run.
    BenchMedia(bench_media::BenchMediaArgs),
    /// Build terraform-provider-meshguard and lay it out as a packed Terraform filesystem mirror
    /// (zip, SHA256SUMS, h1: and zh: hashes), for `terraform init -plugin-dir`.
    ProviderMirror {
        /// Mirror root to write into.
        #[arg(long, default_value = "target/provider-mirror")]
        out: PathBuf,
        /// Build with the release profile (what ships); the default is the faster debug build.
        #[arg(long)]
        release: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Demo(args) => demo::run(args),
        Cmd::Test { rest } => test(rest),
        Cmd::Images(args) => images::run(args),
        Cmd::Docs => tools::install_all().and_then(|t| docs::run(&t.path_with_bin(), &t.dir)),
        Cmd::Tools => tools::install_all().map(|t| println!("tools ready in {}", t.bin.display())),
        Cmd::BenchProvider(args) => bench::run(args),
        Cmd::BenchGateway(args) => bench_gateway::run(args),
        Cmd::BenchCluster(args) => bench_cluster::run(args),
        Cmd::BenchMedia(args) => bench_media::run(args),
        Cmd::BenchInstall(args) => bench_install::run(args),
        Cmd::BenchEvidence(args) => bench_evidence::run(args),
        Cmd::BenchRestore(args) => bench_restore::run(args),
        Cmd::FuzzAfl(args) => fuzz_afl::run(args),
        Cmd::ProviderMirror { out, release } => {
            build_binaries(release).and_then(|bins| provider_mirror(&bins, &root().join(out)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate).
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    without_cargo_run_env(&mut cmd);
    cmd
}

/// Drops the package variables `cargo run` gave this process from `cmd`'s environment. Build
/// scripts (ring's, via cc) rerun when such a variable changes, so passing them on to cargo, or
/// to a shell that runs cargo, would rebuild ring and all that depends on it each time a build
/// alternates between xtask and a user's shell.
pub(crate) fn without_cargo_run_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
}

pub(crate) fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    // The program and its arguments (the environment it was given is not what failed).
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn test(rest: Vec<String>) -> anyhow::Result<()> {
    let tools = tools::install_all()?;
    let path = tools.path_with_bin();
    let with_env = |cmd: &mut Command| {
        cmd.env("PATH", &path)
            .env("MESHGUARD_TOOLS_DIR", &tools.dir)
            .env("CHECKPOINT_DISABLE", "1");
    };
    let previous = previous_release::build(&root())?;
    let mut cmd = cargo();
    // Every test binary runs even when one fails, so one run shows every failure.
    cmd.args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(&rest);
    with_env(&mut cmd);
    if let Some(gateway) = &previous {
        // tests/site installs it as the previous release, upgrades from it and rolls back.
        cmd.env("MESHGUARD_PREVIOUS_GATEWAY", gateway)
            .env("MESHGUARD_PREVIOUS_COMMIT", previous_release::COMMIT);
    }
    run_checked(&mut cmd)?;
    if rest.is_empty() {
        docs::run(&path, &tools.dir)?;
        demo_offline(&path)?;
    }
    Ok(())
}

/// The README's first command, `cargo xtask demo`, run where there is no network at all (a new
/// network namespace with loopback only): the demo must not need anything beyond this machine.
fn demo_offline(path: &std::ffi::OsStr) -> anyhow::Result<()> {
    println!("\nxtask test: the demo, under `unshare -n` (loopback only)");
    // As the README says it, `cargo xtask demo` (this very binary may have been replaced by the
    // tests' build, so it is not run by path).
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["xtask", "demo", "--dir", ".demo-offline"])
        .env("PATH", path)
        // Every crate is on disk after the tests' build; fail at once rather than wait for DNS.
        .env("CARGO_NET_OFFLINE", "true")
        .current_dir(root());
    without_cargo_run_env(&mut cmd);
    run_checked(&mut cmd)
}

/// Builds every binary of the product (the workspace's packages but this one) in one cargo
/// invocation and returns the directory they are in. Every command here builds the same set, so
/// features are unified the same way each time and a repeated run rebuilds nothing; xtask
/// itself does not link the product's crates, it drives these binaries.
pub(crate) fn build_binaries(release: bool) -> anyhow::Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    println!(
        "building the product's {profile} binaries (meshguard-gateway, -bundle, -license, terraform-provider-meshguard)"
    );
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--locked",
        "--workspace",
        "--exclude",
        "xtask",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    run_checked(&mut cmd)?;
    Ok(root().join("target").join(profile))
}

/// Packs the provider built in `bin_dir` into `out` in Terraform's packed mirror layout
/// (`meshguard-bundle provider-mirror`).
pub(crate) fn provider_mirror(
    bin_dir: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    run_checked(
        Command::new(bin_dir.join("meshguard-bundle"))
            .arg("provider-mirror")
            .arg("--binary")
            .arg(bin_dir.join("terraform-provider-meshguard"))
            .arg("--out")
            .arg(out),
    )
}
