//! `meshguard-bundle pack|unpack`: media as deterministic, signed tar.zst volumes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::shared::{PassphraseArg, source_date_epoch};
use meshguard_bundler::keys::{MediaKey, MediaPublicKey};
use meshguard_bundler::pack;

#[derive(Args, Debug)]
pub(crate) struct PackArgs {
    pub(crate) dir: PathBuf,
    /// The archive to write (FILE.tar.zst; volumes FILE.tar.zst.000… and the signed index beside it).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The key that signs the volume index.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Split into volumes of this size (e.g. 4G, 650M).
    #[arg(long, value_parser = pack::parse_size)]
    pub(crate) volume_size: Option<u64>,
    /// zstd level.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub(crate) level: i32,
    #[command(flatten)]
    pub(crate) passphrase: PassphraseArg,
}

#[derive(Args, Debug)]
pub(crate) struct UnpackArgs {
    /// The archive (FILE.tar.zst; its volumes and index sit beside it).
    pub(crate) archive: PathBuf,
    /// The publisher's minisign public key, obtained out of band.
    #[arg(long)]
    pub(crate) pubkey: PathBuf,
    /// A new directory to extract the media into.
    #[arg(long)]
    pub(crate) dest: PathBuf,
}

pub(crate) fn run(a: PackArgs) -> Result<ExitCode> {
    let key = MediaKey::load(&a.key, &a.passphrase.get()?)?;
    let packed = pack::pack(
        &a.dir,
        &a.out,
        a.volume_size,
        source_date_epoch()?,
        a.level,
        &key,
    )?;
    println!(
        "packed {} into {} volume(s), {} bytes compressed from {}; index {}",
        a.dir.display(),
        packed.volumes.len(),
        packed.info.compressed_size,
        packed.info.tar_size,
        packed.index.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn unpack(a: UnpackArgs) -> Result<ExitCode> {
    let key = MediaPublicKey::from_file(&a.pubkey)?;
    let (info, dir) = pack::unpack(&a.archive, &a.dest, &key)?;
    println!(
        "all {} volume(s) match the signed index; unpacked {}; now run: meshguard-bundle verify {} --pubkey {}",
        info.volumes.len(),
        dir.display(),
        dir.display(),
        a.pubkey.display()
    );
    Ok(ExitCode::SUCCESS)
}
