//! Which build of the gateway media carries: a release build (the vendor's key stamped into the
//! binary's slot, `docs/licensing.md`) or a development build.
//!
//! Read from the binary itself, never from an image label: the gateway image's layers are
//! opened, `usr/local/bin/meshguard-gateway` is found (the top-most layer holding it wins, as a
//! container runtime sees it) and its slot is read with [`meshguard_license::slot::inspect`] (a binary
//! with no slot, built before keyed builds, is unkeyed: a development build).
//! `create` records what it found in `MEDIA.json` (signed with the rest), refuses a development
//! build unless the media is declared not for customers, and checks that a license it packs is
//! signed by the build's vendor key.

use std::io::Read;
use std::path::Path;

use meshguard_license::slot::Keying;

use crate::BundleError;
use crate::media::BuildRecord;
use crate::oci::{self, ImageSummary};

/// Where the gateway binary sits in an image's root filesystem (without the leading `/`).
const GATEWAY_IN_IMAGE: &str = "usr/local/bin/meshguard-gateway";

/// The gateway build found in the images of a layout.
#[derive(Debug, Clone)]
pub struct Found {
    /// The images holding a gateway binary, by reference.
    pub images: Vec<String>,
    pub keying: Keying,
}

impl Found {
    pub fn record(&self) -> BuildRecord {
        BuildRecord {
            kind: self.keying.kind().to_owned(),
            vendor_key_id: self.keying.key().map(|k| k.key_id()),
            images: self.images.clone(),
        }
    }
}

/// The gateway build the images of the layout at `dir` carry; None when no image holds a
/// gateway binary. Several gateway images must be the same kind of build with the same key.
pub fn find(dir: &Path, summaries: &[ImageSummary]) -> Result<Option<Found>, BundleError> {
    let layout = oci::Layout::at(dir);
    let mut found: Option<Found> = None;
    for s in summaries {
        for (_, manifest, _) in &s.manifests {
            let Some(binary) = gateway_in(&layout, &manifest.layers, &s.reference)? else {
                continue;
            };
            let keying =
                crate::image::keying_of(&binary, &format!("the gateway in {}", s.reference))?;
            found = Some(merge(found, &s.reference, keying)?);
        }
    }
    Ok(found)
}

/// `found` with one more gateway image, which must be the same build.
fn merge(found: Option<Found>, reference: &str, keying: Keying) -> Result<Found, BundleError> {
    let Some(mut f) = found else {
        return Ok(Found {
            images: vec![reference.to_owned()],
            keying,
        });
    };
    if f.keying != keying {
        return Err(BundleError::Input(format!(
            "the media's gateway images are different builds: {} is {} and {reference} is {}; \
             build every image from one `meshguard-bundle images` run",
            f.images.join(", "),
            describe(&f.keying),
            describe(&keying)
        )));
    }
    if !f.images.iter().any(|i| i == reference) {
        f.images.push(reference.to_owned());
    }
    Ok(f)
}

/// "a release build for vendor key …" or "a development build".
pub fn describe(k: &Keying) -> String {
    match k.key() {
        Some(key) => format!("a release build for vendor key {}", key.key_id()),
        None => "a development build (no vendor key, licensing off)".to_owned(),
    }
}

/// The gateway binary of an image with these layers (the top-most layer holding it), if any.
fn gateway_in(
    layout: &oci::Layout,
    layers: &[oci::Descriptor],
    reference: &str,
) -> Result<Option<Vec<u8>>, BundleError> {
    for layer in layers.iter().rev() {
        if let Some(bytes) = file_in_layer(layout, layer, GATEWAY_IN_IMAGE, reference)? {
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// The content of `wanted` in one layer blob, read through its compression.
fn file_in_layer(
    layout: &oci::Layout,
    layer: &oci::Descriptor,
    wanted: &str,
    reference: &str,
) -> Result<Option<Vec<u8>>, BundleError> {
    let path = layout.blob_path(layer.hex()?);
    let file = std::fs::File::open(&path).map_err(|e| BundleError::io("read", &path, e))?;
    let stream: Box<dyn Read> = match layer.media_type.as_str() {
        t if t.ends_with("gzip") => Box::new(flate2::read::GzDecoder::new(file)),
        t if t.ends_with("zstd") => {
            Box::new(zstd::Decoder::new(file).map_err(|e| BundleError::io("decompress", &path, e))?)
        }
        t if t.ends_with(".tar") => Box::new(file),
        // Not a filesystem layer (an artifact's blob): it holds no file of a root filesystem.
        _ => return Ok(None),
    };
    let unreadable = |e: std::io::Error| {
        BundleError::Layout(format!("image {reference}: layer {}: {e}", layer.digest))
    };
    let mut tar = tar::Archive::new(stream);
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let name = entry.path().map_err(unreadable)?.display().to_string();
        if name.trim_start_matches("./").trim_start_matches('/') == wanted
            && entry.header().entry_type().is_file()
        {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(unreadable)?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// Refuses a development build for media that is for customers (no `--development`).
pub fn require_release(found: &Found, development: bool) -> Result<(), BundleError> {
    if found.keying == Keying::Development && !development {
        return Err(BundleError::Input(format!(
            "image {} holds a development build of meshguard-gateway (no vendor key stamped in \
             it), which runs with licensing off; media for customers carry a release build: \
             build the images with the vendor's key (MESHGUARD_VENDOR_PUBKEY=vendor.pub cargo \
             xtask images, or meshguard-bundle images --vendor-pubkey vendor.pub), or pass \
             --development for media that is not for customers",
            found.images.join(", ")
        )));
    }
    Ok(())
}

/// A license on the media must be signed by the release build's vendor key, or the installed
/// gateway would refuse it.
pub fn check_license(found: &Found, license: &[u8], what: &str) -> Result<(), BundleError> {
    let Some(key) = found.keying.key() else {
        return Ok(());
    };
    meshguard_license::SignedLicense::verify(license, key, what).map_err(|e| {
        BundleError::Input(format!(
            "the license {what} does not fit the media's gateway, {} ({}): {e}; pack a license \
             of that vendor, or build the images with the key that signed the license",
            describe(&found.keying),
            found.images.join(", ")
        ))
    })?;
    Ok(())
}
