//! Terraform's packed filesystem mirror: `HOST/NAMESPACE/TYPE/terraform-provider-TYPE_VERSION_OS_ARCH.zip`.
//!
//! `terraform init -plugin-dir=DIR` installs from this layout with no network, and
//! `terraform providers lock -fs-mirror=DIR` computes the same hashes this module does:
//! - `zh:` is the hex SHA-256 of the zip file;
//! - `h1:` is base64(SHA-256 of the lines `<hex sha256(file)>  <path>\n` over the files inside
//!   the package, sorted by path), the same for the zip and its unpacked directory.
//!
//! The zip is deterministic: one entry, fixed time, fixed mode, so the same binary always gives
//! the same `zh:`. Every file is written beside its destination, fsynced and renamed into place.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Which provider, which version, which platform.
#[derive(Debug, Clone)]
pub struct ProviderId {
    /// `registry.terraform.io`
    pub hostname: String,
    /// `meshguard`
    pub namespace: String,
    /// `meshguard` (the binary is `terraform-provider-<type>`)
    pub kind: String,
    /// `0.1.0`
    pub version: String,
    /// `linux_amd64`
    pub platform: String,
}

impl ProviderId {
    /// The zip's path relative to the mirror root.
    pub fn zip_path(&self) -> PathBuf {
        PathBuf::from(&self.hostname)
            .join(&self.namespace)
            .join(&self.kind)
            .join(format!(
                "terraform-provider-{}_{}_{}.zip",
                self.kind, self.version, self.platform
            ))
    }

    /// The binary's name inside the package, as Terraform expects it.
    pub fn binary_name(&self) -> String {
        format!("terraform-provider-{}_v{}", self.kind, self.version)
    }
}

/// A packed provider and its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedProvider {
    pub zip: PathBuf,
    /// `h1:…`
    pub h1: String,
    /// `zh:…`
    pub zh: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot read the provider binary {path}: {source}")]
    Binary {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the provider zip: {0}")]
    Zip(#[from] zip::result::ZipError),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `h1:` over `(path, contents)` pairs.
pub fn h1_hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut entries: Vec<(&str, &[u8])> = files.into_iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut summary = Sha256::new();
    for (path, contents) in entries {
        summary.update(format!("{}  {}\n", sha256_hex(contents), path).as_bytes());
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    )
}

/// Packs `binary` into `mirror_root` in the packed layout and returns the zip's path and hashes.
pub fn pack(
    binary: &Path,
    id: &ProviderId,
    mirror_root: &Path,
) -> Result<PackedProvider, MirrorError> {
    let mut contents = Vec::new();
    File::open(binary)
        .and_then(|mut f| f.read_to_end(&mut contents))
        .map_err(|source| MirrorError::Binary {
            path: binary.display().to_string(),
            source,
        })?;
    let name = id.binary_name();

    let mut zip_bytes = Vec::new();
    {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(0o755);
        writer.start_file(name.as_str(), options)?;
        writer
            .write_all(&contents)
            .map_err(|source| MirrorError::Write {
                path: name.clone(),
                source,
            })?;
        writer.finish()?;
    }

    let zip = mirror_root.join(id.zip_path());
    write_atomic(&zip, &zip_bytes)?;
    let zh = format!("zh:{}", sha256_hex(&zip_bytes));
    let sums_name = format!("terraform-provider-{}_{}_SHA256SUMS", id.kind, id.version);
    let zip_name = zip
        .file_name()
        .expect("zip path has a file name")
        .to_string_lossy()
        .into_owned();
    let sums = format!("{}  {zip_name}\n", sha256_hex(&zip_bytes));
    write_atomic(&zip.with_file_name(sums_name), sums.as_bytes())?;
    Ok(PackedProvider {
        zip,
        h1: h1_hash([(name.as_str(), contents.as_slice())]),
        zh,
    })
}

/// Write, fsync, rename: a reader never sees a half-written file at `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let err = |source| MirrorError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ProviderId {
        ProviderId {
            hostname: "registry.terraform.io".into(),
            namespace: "meshguard".into(),
            kind: "meshguard".into(),
            version: "0.1.0".into(),
            platform: "linux_amd64".into(),
        }
    }

    #[test]
    fn packing_is_deterministic_and_laid_out_for_terraform() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::write(&bin, b"#!/bin/sh\necho provider\n").unwrap();
        let a = pack(&bin, &id(), &dir.path().join("m1")).unwrap();
        let b = pack(&bin, &id(), &dir.path().join("m2")).unwrap();
        assert_eq!((&a.h1, &a.zh), (&b.h1, &b.zh));
        assert!(a.zip.ends_with("registry.terraform.io/meshguard/meshguard/terraform-provider-meshguard_0.1.0_linux_amd64.zip"));
        let sums = fs::read_to_string(
            a.zip
                .with_file_name("terraform-provider-meshguard_0.1.0_SHA256SUMS"),
        )
        .unwrap();
        assert_eq!(
            sums,
            format!(
                "{}  terraform-provider-meshguard_0.1.0_linux_amd64.zip\n",
                &a.zh[3..]
            )
        );
    }

    #[test]
    fn h1_is_order_independent_and_content_sensitive() {
        let x = h1_hash([("a", b"1".as_slice()), ("b", b"2".as_slice())]);
        assert_eq!(x, h1_hash([("b", b"2".as_slice()), ("a", b"1".as_slice())]));
        assert_ne!(x, h1_hash([("a", b"1".as_slice()), ("b", b"3".as_slice())]));
        assert!(x.starts_with("h1:"));
    }
}
