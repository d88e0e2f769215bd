//! Terraform's packed filesystem mirror: `HOST/NAMESPACE/TYPE/terraform-provider-TYPE_VERSION_OS_ARCH.zip`.
//!
//! `terraform init -plugin-dir=DIR` installs from this layout with no network, and
//! `terraform providers lock -fs-mirror=DIR` computes the same hashes this module does:
//! - `zh:` is the hex SHA-256 of the zip file;
//! - `h1:` is base64(SHA-256 of the lines `<hex sha256(file)>  <path>\n` over the files inside
//!   the package, sorted by path), the same for the zip and its unpacked directory.
//!
//! The zip is deterministic: one entry, fixed time, fixed mode, so the same binary always gives
//! the same `zh:`. Every file is written atomically (`fsx::write_atomic`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::BundleError;
use crate::fsx::write_atomic;

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
    /// `registry.terraform.io/meshguard/meshguard`, ours, at `version` for `platform`.
    pub fn meshguard(version: &str, platform: &str) -> Self {
        ProviderId {
            hostname: "registry.terraform.io".into(),
            namespace: "meshguard".into(),
            kind: "meshguard".into(),
            version: version.into(),
            platform: platform.into(),
        }
    }

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
    /// Hex SHA-256 of the provider binary itself.
    pub binary_sha256: String,
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
) -> Result<PackedProvider, BundleError> {
    let contents =
        fs::read(binary).map_err(|e| BundleError::io("read the provider binary", binary, e))?;
    let name = id.binary_name();

    let mut zip_bytes = Vec::new();
    {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(0o755);
        let zip_err = |e: zip::result::ZipError| {
            BundleError::Archive(format!("cannot build the provider zip: {e}"))
        };
        writer.start_file(name.as_str(), options).map_err(zip_err)?;
        writer
            .write_all(&contents)
            .map_err(|e| BundleError::Archive(format!("cannot build the provider zip: {e}")))?;
        writer.finish().map_err(zip_err)?;
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
        binary_sha256: sha256_hex(&contents),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ProviderId {
        ProviderId::meshguard("0.1.0", "linux_amd64")
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
