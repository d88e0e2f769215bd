//! Developer commands for the MeshGuard deploy toolkit, run as `cargo xtask <command>`.
//!
//! - `demo`: builds the gateway and walks through the main job on embedded defaults.
//! - `test`: installs the missing test tools into `.tools/` (outside git), then runs every test.
//! - `tools`: installs the test tools only.
//! - `images`: the product's OCI images from the workspace's binaries.

mod bench;
mod bench_gateway;
mod bench_install;
mod bench_media;
mod demo;
mod demo_site;
mod images;
mod tools;

use meshguard_bundler::tfmirror::{PackedProvider, ProviderId, pack};

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
    /// Build the product's OCI images (meshguard/gateway, meshguard/tools) from this
    /// workspace's binaries, with no container daemon, into an OCI layout.
    Images(images::ImagesArgs),
    /// Benchmark terraform apply/plan of N meshguard_agent against N null_resource (hashicorp/null
    /// 2.1.2), release builds, in one run.
    BenchProvider(bench::BenchArgs),
    /// Benchmark GET /proxy/check with wrk (durable audit) against a hello-world server on the
    /// same HTTP stack, in one run.
    BenchGateway(bench_gateway::BenchGatewayArgs),
    /// Time a fresh site install from media (`meshguard-bundle install`) under `unshare -n`,
    /// per step.
    BenchInstall(bench_install::BenchInstallArgs),
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
        Cmd::Tools => tools::install_all().map(|t| println!("tools ready in {}", t.bin.display())),
        Cmd::BenchProvider(args) => bench::run(args),
        Cmd::BenchGateway(args) => bench_gateway::run(args),
        Cmd::BenchMedia(args) => bench_media::run(args),
        Cmd::BenchInstall(args) => bench_install::run(args),
        Cmd::ProviderMirror { out, release } => {
            provider_mirror(&root().join(out), release).map(|p| {
                println!("{}\n  {}\n  {}", p.zip.display(), p.h1, p.zh);
            })
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
    cmd
}

pub(crate) fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
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
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--locked"]).args(&rest);
    with_env(&mut cmd);
    run_checked(&mut cmd)?;
    if rest.is_empty() {
        // The gateway's optional OpenTelemetry export, built and tested with its feature on.
        let mut cmd = cargo();
        cmd.args([
            "test",
            "--locked",
            "-p",
            "meshguard-gateway",
            "--features",
            "otel",
            "--test",
            "it",
            "--",
            "otel::",
        ]);
        with_env(&mut cmd);
        run_checked(&mut cmd)?;
    }
    Ok(())
}

/// Builds `terraform-provider-meshguard` and returns the binary's path.
pub(crate) fn build_provider(release: bool) -> anyhow::Result<std::path::PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "meshguard-provider",
        "--bin",
        "terraform-provider-meshguard",
    ]);
    if release {
        cmd.arg("--release");
    }
    run_checked(&mut cmd)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("terraform-provider-meshguard"))
}

/// Builds the provider and packs it into `out` in Terraform's packed mirror layout.
pub(crate) fn provider_mirror(
    out: &std::path::Path,
    release: bool,
) -> anyhow::Result<PackedProvider> {
    let binary = build_provider(release)?;
    let id = ProviderId {
        hostname: "registry.terraform.io".into(),
        namespace: "meshguard".into(),
        kind: "meshguard".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "linux_amd64".into(),
    };
    Ok(pack(&binary, &id, out)?)
}
