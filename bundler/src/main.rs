//! `meshguard-bundle`: create, verify, pack, unpack, import and inspect offline media; back up
//! and restore a site. Each
//! subcommand is a module of `commands/` with its arguments; `main` parses and dispatches.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "meshguard-bundle",
    version,
    about = "Signed offline media for MeshGuard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Signing keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Assemble and sign media from a manifest.
    Create(commands::create::CreateArgs),
    /// Verify media with no network; exit 1 naming the first problem.
    Verify(commands::verify::VerifyArgs),
    /// Verify, then import into a registry (or a local directory) and a Terraform mirror.
    Import(commands::import::ImportArgs),
    /// Pack media into a deterministic tar.zst, optionally split into volumes.
    Pack(commands::pack::PackArgs),
    /// Check every volume against the signed index, then extract.
    Unpack(commands::pack::UnpackArgs),
    /// Install a site from media, no network: verify, import, start, bootstrap, smoke-test,
    /// and write a signed transcript (the air-gapped runbook as one command).
    Install(commands::install::InstallArgs),
    /// Show what media holds (from MEDIA.json; does not verify).
    Inspect { dir: PathBuf },
    /// Build the product's OCI images (NAMESPACE/gateway, NAMESPACE/tools) from its binaries,
    /// with no container daemon, into an OCI layout that `create` takes as `oci:layout:`.
    Images(commands::images::ImagesArgs),
    /// Pack a terraform-provider-meshguard binary into Terraform's packed mirror layout (zip,
    /// SHA256SUMS, h1: and zh: hashes), for `terraform init -plugin-dir`.
    ProviderMirror(commands::images::ProviderMirrorArgs),
    /// The local audit archive: segments of the gateway's log, each proven against a signed
    /// checkpoint, in a directory that verifies on its own (the chart's archive job).
    #[command(subcommand)]
    AuditArchive(commands::audit_archive::AuditArchiveCommand),
    /// Evidence bundles for auditors: export one regime's evidence for a period from the
    /// gateway, signed; verify it offline.
    #[command(subcommand)]
    Evidence(commands::evidence::EvidenceCommand),
    /// Backups of a running site: take one, keep its audit log current, verify one.
    #[command(subcommand)]
    Backup(commands::backup::BackupCommand),
    /// Restore a backup onto an empty data directory, with no network: verified first (its
    /// signature, every file, the audit log's chains and checkpoints), written last.
    Restore(commands::backup::RestoreArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys(c) => commands::keys::run(c),
        Command::Create(a) => commands::create::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Import(a) => commands::import::run(a),
        Command::Pack(a) => commands::pack::run(a),
        Command::Unpack(a) => commands::pack::unpack(a),
        Command::Install(a) => commands::install::run(a),
        Command::Inspect { dir } => commands::inspect::run(&dir),
        Command::Images(a) => commands::images::run(a),
        Command::ProviderMirror(a) => commands::images::provider_mirror(a),
        Command::AuditArchive(c) => commands::audit_archive::run(c),
        Command::Evidence(c) => commands::evidence::run(c),
        Command::Backup(c) => commands::backup::run(c),
        Command::Restore(a) => commands::backup::restore(a),
    }
}
