//! `meshguard-bundle evidence export|verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::shared::{PassphraseArg, admin_token};
use meshguard_bundler::keys::{MediaKey, MediaPublicKey};

#[derive(Subcommand, Debug)]
pub(crate) enum EvidenceCommand {
    /// Export a signed evidence bundle of PROFILE for a period (hipaa, fedramp-moderate, finra,
    /// soc2, iso27001, pci-dss, sovereign-eu, airgapped-defense). The admin token comes from
    /// MESHGUARD_ADMIN_TOKEN or --admin-token-file; the key's passphrase from
    /// MESHGUARD_BUNDLE_PASSPHRASE or --passphrase-file.
    Export(ExportArgs),
    /// Verify a bundle with no network and print the verification transcript; exit 1 unless
    /// every check passes.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    #[arg(long)]
    pub(crate) gateway: String,
    #[arg(long)]
    pub(crate) profile: String,
    /// Start of the period (included): 2026-11-01 or an RFC 3339 time.
    #[arg(long, required_unless_present = "month", conflicts_with = "month")]
    pub(crate) from: Option<String>,
    /// End of the period (excluded).
    #[arg(long, required_unless_present = "month", conflicts_with = "month")]
    pub(crate) to: Option<String>,
    /// The calendar month instead (e.g. 2026-11): the monthly continuous-monitoring bundle.
    #[arg(long)]
    pub(crate) month: Option<String>,
    /// The bundle directory to create (must not exist).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The exporter's signing key (`meshguard-bundle keys generate`, minisign format).
    #[arg(long)]
    pub(crate) key: PathBuf,
    #[command(flatten)]
    pub(crate) passphrase: PassphraseArg,
    #[arg(long)]
    pub(crate) admin_token_file: Option<PathBuf>,
    #[arg(long)]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// The site's signed installation transcript (`.json`; its `.minisig` beside it).
    #[arg(long)]
    pub(crate) transcript: Option<PathBuf>,
    /// Export even when no quorum of witnesses cosigned a checkpoint covering the period.
    #[arg(long)]
    pub(crate) allow_unwitnessed: bool,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    pub(crate) dir: PathBuf,
    /// The exporter's public key.
    #[arg(long)]
    pub(crate) pubkey: PathBuf,
    /// The log's verifier key you trust (default: the one in the signed manifest).
    #[arg(long)]
    pub(crate) log_key: Option<String>,
    /// A witness's verifier key (repeat for each); its cosignature must be on the checkpoint.
    #[arg(long = "witness")]
    pub(crate) witnesses: Vec<String>,
    /// How many of the witnesses must have cosigned (default: all given).
    #[arg(long)]
    pub(crate) quorum: Option<usize>,
    /// The site key that signed the installation transcript.
    #[arg(long)]
    pub(crate) transcript_pubkey: Option<PathBuf>,
    /// Accept that the witnesses' cosignatures are not checked (no --witness key): without
    /// this, a bundle verified with no witness key is UNVERIFIED.
    #[arg(long)]
    pub(crate) accept_unwitnessed: bool,
    /// Accept that the installation transcript's signature is not checked (no
    /// --transcript-pubkey): without this, such a bundle is UNVERIFIED.
    #[arg(long)]
    pub(crate) accept_unsigned_transcript: bool,
    /// Print the transcript as JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the transcript (text, and JSON beside it as .json) to this file.
    #[arg(long)]
    pub(crate) transcript_out: Option<PathBuf>,
}

pub(crate) fn run(cmd: EvidenceCommand) -> Result<ExitCode> {
    match cmd {
        EvidenceCommand::Export(a) => export(a),
        EvidenceCommand::Verify(a) => verify(a),
    }
}

fn export(a: ExportArgs) -> Result<ExitCode> {
    let ExportArgs {
        gateway,
        profile,
        from,
        to,
        month,
        out,
        key,
        passphrase,
        admin_token_file,
        ca_bundle,
        transcript,
        allow_unwitnessed,
    } = a;
    let (from, to) = match month {
        Some(m) => meshguard_bundler::evidence::month_bounds(&m)?,
        None => (from.unwrap_or_default(), to.unwrap_or_default()),
    };
    let admin_token = admin_token(admin_token_file.as_deref())?;
    let passphrase = passphrase.get()?;
    let key = MediaKey::load(&key, &passphrase)?;
    let source = meshguard_bundler::audit_archive::Source {
        url: gateway,
        admin_token,
        ca_bundle,
    };
    let m = meshguard_bundler::evidence::export(&meshguard_bundler::evidence::ExportOptions {
        source: &source,
        profile: &profile,
        from: &from,
        to: &to,
        out: &out,
        key: &key,
        transcript: transcript.as_deref(),
        allow_unwitnessed,
    })?;
    println!(
        "evidence bundle {} for {} from {} to {}: entries {}..={} of {} ({} in the period), proven in checkpoint {}{}",
        out.display(),
        m.profile,
        m.from,
        m.to,
        m.first_seq,
        m.last_seq,
        m.origin,
        m.in_period,
        m.checkpoint_size,
        if m.witnesses.is_empty() {
            " (not witnessed)".to_owned()
        } else {
            format!(" cosigned by {}", m.witnesses.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let VerifyArgs {
        dir,
        pubkey,
        log_key,
        witnesses,
        quorum,
        transcript_pubkey,
        accept_unwitnessed,
        accept_unsigned_transcript,
        json,
        transcript_out,
    } = a;
    use meshguard_bundler::evidence::Unchecked;
    let accepted: Vec<Unchecked> = [
        (accept_unwitnessed, Unchecked::Witness),
        (accept_unsigned_transcript, Unchecked::Transcript),
    ]
    .into_iter()
    .filter_map(|(on, u)| on.then_some(u))
    .collect();
    let pubkey = MediaPublicKey::from_file(&pubkey)?;
    let transcript_pubkey = transcript_pubkey
        .as_deref()
        .map(MediaPublicKey::from_file)
        .transpose()?;
    let v = meshguard_bundler::evidence::verify(
        &dir,
        &meshguard_bundler::evidence::VerifyOptions {
            pubkey: &pubkey,
            log_vkey: log_key.as_deref(),
            quorum: quorum.unwrap_or(witnesses.len()),
            witnesses: &witnesses,
            transcript_pubkey: transcript_pubkey.as_ref(),
            list_denials: true,
            accept_unchecked: &accepted,
        },
    )?;
    if let Some(path) = &transcript_out {
        meshguard_bundler::fsx::write_atomic(path, v.text().as_bytes())?;
        let mut j = path.clone().into_os_string();
        j.push(".json");
        let mut bytes = serde_json::to_vec_pretty(&v)?;
        bytes.push(b'\n');
        meshguard_bundler::fsx::write_atomic(std::path::Path::new(&j), &bytes)?;
    }
    if json {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, &v)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    } else {
        print!("{}", v.text());
    }
    if !v.ok {
        std::process::exit(1);
    }
    Ok(ExitCode::SUCCESS)
}
