//! `meshguard-bundle import`: verify first, refuse on any failure, then put each part where
//! the site uses it: images into a registry (or a local OCI layout), the provider into a
//! Terraform filesystem mirror, and chart, modules, policies and license into a directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::keys::MediaPublicKey;
use crate::registry::{self, PushStats, Pusher, Target};
use crate::verify::{self, Verified};
use crate::{BundleError, fsx, media, oci};

#[derive(Debug)]
pub struct Options {
    pub registry: Option<String>,
    /// How to reach the registry: plain HTTP or the site CAs, and the credentials.
    pub access: crate::access::Access,
    pub terraform_mirror: Option<PathBuf>,
    pub dest: PathBuf,
    pub verify: verify::Options,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub product: String,
    pub version: String,
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushStats>,
    pub local_blobs_copied: usize,
    pub local_blobs_present: usize,
    pub terraform_mirror: Option<String>,
    pub files: Vec<String>,
}

pub fn import(
    media: &Path,
    key: &MediaPublicKey,
    opts: &Options,
) -> Result<(verify::Transcript, Receipt), BundleError> {
    let (transcript, verified) = verify::verify(media, key, &opts.verify);
    let verified = verified.map_err(|e| {
        BundleError::Integrity(format!("import refused: the media does not verify: {e}"))
    })?;
    let receipt = import_verified(media, &verified, &transcript, opts)?;
    Ok((transcript, receipt))
}

/// Imports media that `verify::verify` has just accepted (`meshguard-bundle install` verifies
/// as its own step and records that transcript). Every copy is still checked against the
/// digests verify accepted.
pub fn import_verified(
    media: &Path,
    verified: &Verified,
    transcript: &verify::Transcript,
    opts: &Options,
) -> Result<Receipt, BundleError> {
    let Verified { doc, images, .. } = verified;
    let mut receipt = Receipt {
        product: doc.product.clone(),
        version: doc.version.clone(),
        images: images
            .iter()
            .map(|i| format!("{}@{}", i.reference, i.digest))
            .collect(),
        registry: opts.registry.clone(),
        push: None,
        local_blobs_copied: 0,
        local_blobs_present: 0,
        terraform_mirror: None,
        files: Vec::new(),
    };
    ensure_room(verified, opts)?;
    let layout_dir = media.join("images");
    if !images.is_empty() {
        match &opts.registry {
            Some(reg) => receipt.push = Some(push_images(&layout_dir, images, reg, opts)?),
            None => copy_images(&layout_dir, images, opts, &mut receipt)?,
        }
    }
    if !doc.providers.is_empty() {
        import_providers(media, doc, opts, &mut receipt)?;
    }
    // Chart, modules, policies, license, SBOMs, provenance, scans: as files under DEST.
    for prefix in [
        "charts/",
        "terraform/modules/",
        "policies/",
        "egress/",
        "license/",
        "sbom/",
        "provenance/",
        "scans/",
    ] {
        for item in doc.items.iter().filter(|i| i.path.starts_with(prefix)) {
            let to = opts.dest.join(&item.path);
            copy_file(&media.join(&item.path), &to, item)?;
            receipt.files.push(to.display().to_string());
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "receipt": &receipt,
        "verification": transcript,
    }))
    .expect("serializes");
    bytes.push(b'\n');
    fsx::write_atomic(
        &opts
            .dest
            .join(format!("IMPORTED-{}-{}.json", doc.product, doc.version)),
        &bytes,
    )?;
    Ok(receipt)
}

/// Room at the destination for everything that is copied there (images only when they go to
/// a local layout; the registry's own disk is the registry's to check).
fn ensure_room(verified: &Verified, opts: &Options) -> Result<(), BundleError> {
    let mut need: u64 = verified
        .doc
        .items
        .iter()
        .filter(|i| !i.path.starts_with("images/"))
        .map(|i| i.size)
        .sum();
    if opts.registry.is_none() {
        need += verified
            .images
            .iter()
            .flat_map(|i| i.blobs.iter())
            .map(|b| b.size)
            .sum::<u64>();
    }
    fsx::ensure_space(&opts.dest, need, "the import")
}

/// The images, pushed from the media's layout to the registry `reg`.
fn push_images(
    layout_dir: &Path,
    images: &[oci::ImageSummary],
    reg: &str,
    opts: &Options,
) -> Result<PushStats, BundleError> {
    std::fs::create_dir_all(&opts.dest).map_err(|e| BundleError::io("create", &opts.dest, e))?;
    let mut pusher = Pusher::new(Target {
        registry: reg.to_owned(),
        access: opts.access.clone(),
        state_file: opts.dest.join(".meshguard-import-uploads.json"),
    })?;
    let total: u64 = images
        .iter()
        .flat_map(|i| i.blobs.iter())
        .map(|b| b.size)
        .sum();
    pusher.progress = Some(crate::progress::bytes(total, "pushing"));
    for img in images {
        let (repo, tag) = registry::split_ref(&img.reference);
        eprintln!(
            "meshguard-bundle: pushing {} to {reg}/{repo}:{tag}",
            img.reference
        );
        pusher.push_image(layout_dir, repo, tag, img.top())?;
    }
    if let Some(p) = pusher.progress.take() {
        p.finish_and_clear();
    }
    Ok(pusher.stats)
}

/// The embedded default: the images into a local OCI layout under DEST/images, beside those
/// it holds already (which a differential media relies on).
fn copy_images(
    layout_dir: &Path,
    images: &[oci::ImageSummary],
    opts: &Options,
    receipt: &mut Receipt,
) -> Result<(), BundleError> {
    let mut layout = oci::Layout::create(&opts.dest.join("images"))?;
    if let Ok(existing) = oci::read_index(&opts.dest.join("images")) {
        for d in existing {
            if let Some(r) = d.annotations.get(oci::REF_NAME).cloned() {
                layout.tag(&r, d);
            }
        }
    }
    for img in images {
        for b in &img.blobs {
            let src = layout_dir.join("blobs/sha256").join(b.hex()?);
            if layout.blob_path(b.hex()?).exists() {
                receipt.local_blobs_present += 1;
            } else if src.exists() {
                layout.add_blob_file(&src, b, "the media")?;
                receipt.local_blobs_copied += 1;
            } else {
                return Err(BundleError::Layout(format!(
                    "{} is not on this differential media nor in {}; import the older media first",
                    b.digest,
                    opts.dest.join("images").display()
                )));
            }
        }
        let mut top = img.top().clone();
        top.annotations.clear();
        layout.tag(&img.reference, top);
    }
    layout.write_index()
}

/// Terraform providers: the packed mirror layout is what `terraform init -plugin-dir` reads.
fn import_providers(
    media: &Path,
    doc: &media::MediaDoc,
    opts: &Options,
    receipt: &mut Receipt,
) -> Result<(), BundleError> {
    let mirror = opts
        .terraform_mirror
        .clone()
        .unwrap_or_else(|| opts.dest.join("terraform/providers"));
    for p in &doc.providers {
        let rel = p
            .path
            .strip_prefix("terraform/providers/")
            .unwrap_or(&p.path);
        let from = media.join(&p.path);
        let to = mirror.join(rel);
        copy_file(&from, &to, verified_item(&doc.items, &p.path)?)?;
        // The registry's SHA256SUMS beside the zip comes along.
        if let Some(dir) = Path::new(&p.path).parent() {
            copy_registry_sums(media, dir, &to, &doc.items)?;
        }
        receipt.files.push(to.display().to_string());
    }
    receipt.terraform_mirror = Some(mirror.display().to_string());
    Ok(())
}

/// The `*_SHA256SUMS` files of the media's directory `dir`, beside the provider zip `to`.
fn copy_registry_sums(
    media: &Path,
    dir: &Path,
    to: &Path,
    items: &[media::Item],
) -> Result<(), BundleError> {
    for f in std::fs::read_dir(media.join(dir))
        .map_err(|e| BundleError::io("list", &media.join(dir), e))?
    {
        let f = f.map_err(|e| BundleError::io("list", &media.join(dir), e))?;
        let name = f.file_name().to_string_lossy().into_owned();
        if name.ends_with("_SHA256SUMS") {
            let rel = format!("{}/{name}", dir.display());
            copy_file(
                &f.path(),
                &to.with_file_name(&name),
                verified_item(items, &rel)?,
            )?;
        }
    }
    Ok(())
}

/// Copy with write-fsync-rename, so a re-run after an interruption sees whole files only.
/// Copies a verified file of the media to `to`, hashing while copying: the copy must be what
/// `verify` checked (`expected` from MEDIA.json), or nothing is left at `to`. A file changed on
/// the media between the verification and the copy is refused, not imported.
fn copy_file(from: &Path, to: &Path, expected: &media::Item) -> Result<(), BundleError> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let (sha256, size) = fsx::copy_hashed(from, &tmp)?;
    if sha256 != expected.sha256 || size != expected.size {
        let _ = std::fs::remove_file(&tmp);
        return Err(BundleError::Integrity(format!(
            "{} changed after it was verified (copied {size} bytes with sha256 {sha256}, MEDIA.json \
             says {} bytes with sha256 {}); nothing was imported from it: check the media and import again",
            expected.path, expected.size, expected.sha256
        )));
    }
    std::fs::rename(&tmp, to).map_err(|e| BundleError::io("rename", to, e))?;
    Ok(())
}

/// The MEDIA.json entry of `path`: every file import copies must be one that was verified.
fn verified_item<'a>(items: &'a [media::Item], path: &str) -> Result<&'a media::Item, BundleError> {
    items.iter().find(|i| i.path == path).ok_or_else(|| {
        BundleError::Integrity(format!(
            "{path} is on the media but not listed in MEDIA.json, so it was never verified; refusing to import it"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_that_is_not_what_was_verified_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("chart.yaml");
        std::fs::write(&from, b"name: meshguard\n").unwrap();
        let (sha256, size) = fsx::sha256_file(&from).unwrap();
        let item = media::Item {
            kind: "helm-chart".into(),
            path: "charts/x/Chart.yaml".into(),
            size,
            sha256,
        };
        let to = dir.path().join("copy.yaml");
        copy_file(&from, &to, &item).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"name: meshguard\n");

        // The file on the media changes after verification: nothing is imported from it.
        std::fs::write(&from, b"name: evil\n").unwrap();
        let to = dir.path().join("second.yaml");
        let err = copy_file(&from, &to, &item).unwrap_err().to_string();
        assert!(err.contains("changed after it was verified"), "{err}");
        assert!(!to.exists());
        assert!(!dir.path().join("second.yaml.partial").exists());

        let err = verified_item(std::slice::from_ref(&item), "charts/x/values.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not listed in MEDIA.json"), "{err}");
    }
}
