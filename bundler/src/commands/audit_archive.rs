//! `meshguard-bundle audit-archive pull|add-evidence|retrieve|verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::shared::admin_token;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditArchiveCommand {
    /// Archive what the gateway's log holds beyond the archive, once proven against a fresh
    /// checkpoint signed by the log's key. The admin token comes from MESHGUARD_ADMIN_TOKEN or
    /// --admin-token-file.
    Pull(PullArgs),
    /// Keep an evidence bundle in the archive (never replacing one): it must verify with the
    /// exporter's key and the archive's log key, and prove entries the archive holds.
    AddEvidence(AddEvidenceArgs),
    /// Verify the archive, print its root (and with --evidence, copy that bundle out, verified,
    /// with its manifest digest and its checkpoint's root), as JSON.
    Retrieve(RetrieveArgs),
    /// Verify an archive with no network: digests, chains, and the tree at every checkpoint.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct PullArgs {
    /// The archive directory (created on the first run).
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// The gateway, e.g. http://meshguard:3100.
    #[arg(long)]
    pub(crate) gateway: String,
    #[arg(long)]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// A PEM bundle of the site's CAs, when the gateway serves HTTPS with a private CA.
    #[arg(long)]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// The log's verifier key (`GET /admin/audit/checkpoint` shows it): pinned on the first
    /// run; without it the gateway's key is taken and printed, to be checked out of band.
    #[arg(long)]
    pub(crate) vkey: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct AddEvidenceArgs {
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// The evidence bundle (`meshguard-bundle evidence export`).
    pub(crate) bundle: PathBuf,
    /// The exporter's public key, pinned in the archive with the bundle.
    #[arg(long)]
    pub(crate) pubkey: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RetrieveArgs {
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// The name of an archived evidence bundle.
    #[arg(long, requires = "out")]
    pub(crate) evidence: Option<String>,
    /// Where to copy the bundle (must not exist).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    pub(crate) dir: PathBuf,
    /// The log's verifier key you trust (default: the one the archive pinned).
    #[arg(long)]
    pub(crate) vkey: Option<String>,
}

pub(crate) fn run(cmd: AuditArchiveCommand) -> Result<ExitCode> {
    match cmd {
        AuditArchiveCommand::Pull(a) => pull(a),
        AuditArchiveCommand::AddEvidence(a) => add_evidence(a),
        AuditArchiveCommand::Retrieve(a) => retrieve(a),
        AuditArchiveCommand::Verify(a) => verify(a),
    }
}

fn pull(a: PullArgs) -> Result<ExitCode> {
    let PullArgs {
        dir,
        gateway,
        admin_token_file,
        ca_bundle,
        vkey,
    } = a;
    let admin_token = admin_token(admin_token_file.as_deref())?;
    let first = !dir.join("ARCHIVE.json").exists();
    let pulled = meshguard_bundler::audit_archive::pull(
        &dir,
        &meshguard_bundler::audit_archive::Source {
            url: gateway,
            admin_token,
            ca_bundle,
        },
        vkey.as_deref(),
    )?;
    match &pulled.segment {
        Some(s) => println!(
            "archived entries {}..={} of {} in {} (proven against the signed checkpoint of {})",
            pulled.from, pulled.to, pulled.origin, s, pulled.to
        ),
        None => println!(
            "nothing new: {} entries of {} archived",
            pulled.to, pulled.origin
        ),
    }
    if first && vkey.is_none() {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("ARCHIVE.json")).unwrap_or_default())
                .unwrap_or_default();
        println!(
            "pinned the log key the gateway serves: {} (compare it with the one you trust)",
            state["vkey"].as_str().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn add_evidence(a: AddEvidenceArgs) -> Result<ExitCode> {
    let AddEvidenceArgs {
        dir,
        bundle,
        pubkey,
    } = a;
    let r = meshguard_bundler::audit_archive::add_evidence(&dir, &bundle, &pubkey)?;
    println!(
        "archived evidence bundle {} ({} from {} to {}, MANIFEST.json sha256 {}), proven in the archived entries up to {}",
        r.name, r.profile, r.from, r.to, r.manifest_sha256, r.checkpoint_size
    );
    Ok(ExitCode::SUCCESS)
}

fn retrieve(a: RetrieveArgs) -> Result<ExitCode> {
    let RetrieveArgs { dir, evidence, out } = a;
    let r =
        meshguard_bundler::audit_archive::retrieve(&dir, evidence.as_deref().zip(out.as_deref()))?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let VerifyArgs { dir, vkey } = a;
    let v = meshguard_bundler::audit_archive::verify(&dir, vkey.as_deref())?;
    println!(
        "audit archive of {} verified: {} entries in {} segments, {} signed checkpoints, {} evidence bundles; root {}",
        v.origin,
        v.entries,
        v.segments,
        v.checkpoints,
        v.evidence.len(),
        v.root
    );
    Ok(ExitCode::SUCCESS)
}
