//! `meshguard-bundle keys generate`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

use super::shared::PassphraseArg;
use meshguard_bundler::keys::{CosignKey, MediaKey};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum KeyKind {
    /// ed25519 in the minisign format.
    Ed25519,
    /// ECDSA P-256 as cosign uses (PKCS#8 encrypted PEM, PKIX PEM public key).
    P256,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Make a key pair; the private key is written encrypted.
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    /// The key type: ed25519 signs media (minisign format), p256 signs the sigstore bundle.
    #[arg(long, value_enum, default_value = "ed25519")]
    pub(crate) kind: KeyKind,
    /// Where the secret key goes (written encrypted, mode 0600; never overwritten).
    #[arg(long)]
    pub(crate) secret: PathBuf,
    /// Where the public key goes (what sites trust, obtained out of band).
    #[arg(long)]
    pub(crate) public: PathBuf,
    #[command(flatten)]
    pub(crate) passphrase: PassphraseArg,
}

pub(crate) fn run(cmd: KeysCommand) -> Result<ExitCode> {
    match cmd {
        KeysCommand::Generate(a) => generate(a),
    }
}

fn generate(a: GenerateArgs) -> Result<ExitCode> {
    let GenerateArgs {
        kind,
        secret,
        public,
        passphrase,
    } = a;
    for p in [&secret, &public] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    let pass = passphrase.get()?;
    let (sk, pk) = match kind {
        KeyKind::Ed25519 => MediaKey::generate(&pass)?,
        KeyKind::P256 => CosignKey::generate(&pass)?,
    };
    meshguard_bundler::fsx::write_new_private(&secret, sk.as_bytes())?;
    meshguard_bundler::fsx::write_atomic(&public, pk.as_bytes())?;
    println!(
        "wrote {} (encrypted) and {}",
        secret.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}
