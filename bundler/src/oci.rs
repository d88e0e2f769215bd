//! One OCI image layout (image-spec v1.1) holding every image on the media, blobs shared.
//!
//! Every blob copied in is hashed while it is copied and refused when it does not match its
//! digest, whatever the source (a layout directory, an `oci-archive`, a registry).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::BundleError;
use crate::fsx;

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

impl Descriptor {
    pub fn hex(&self) -> Result<&str, BundleError> {
        digest_hex(&self.digest)
    }

    pub fn is_index(&self) -> bool {
        self.media_type == INDEX_MEDIA_TYPE || self.media_type == DOCKER_LIST
    }

    pub fn is_manifest(&self) -> bool {
        self.media_type == MANIFEST_MEDIA_TYPE || self.media_type == DOCKER_MANIFEST
    }
}

pub fn digest_hex(digest: &str) -> Result<&str, BundleError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        BundleError::Layout(format!(
            "digest {digest:?} is not sha256:<hex>; only SHA-256 is supported"
        ))
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(BundleError::Layout(format!(
            "digest {digest:?} is malformed"
        )));
    }
    Ok(hex)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The layout being written (or read) at `dir`.
#[derive(Debug)]
pub struct Layout {
    pub dir: PathBuf,
    entries: BTreeMap<String, Descriptor>,
}

impl Layout {
    pub fn create(dir: &Path) -> Result<Self, BundleError> {
        fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(|e| BundleError::io("create", dir, e))?;
        fsx::write_atomic(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            entries: BTreeMap::new(),
        })
    }

    /// An existing layout at `dir`, to read blobs from.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            entries: BTreeMap::new(),
        }
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Copies a blob in from `src` unless present, verifying `digest` while copying.
    pub fn add_blob_file(
        &self,
        src: &Path,
        d: &Descriptor,
        source: &str,
    ) -> Result<bool, BundleError> {
        let hex = d.hex()?;
        let dst = self.blob_path(hex);
        if dst.exists() {
            return Ok(false);
        }
        let tmp = dst.with_extension("partial");
        let (got, size) = fsx::copy_hashed(src, &tmp)?;
        if got != hex || size != d.size {
            let _ = fs::remove_file(&tmp);
            return Err(BundleError::Integrity(format!(
                "blob {} from {source} holds content with digest sha256:{got} ({size} bytes, \
                 expected {}); the source is corrupt or was tampered with",
                d.digest, d.size
            )));
        }
        fs::rename(&tmp, &dst).map_err(|e| BundleError::io("write", &dst, e))?;
        Ok(true)
    }

    /// Stores bytes as a blob (manifests, configs, indexes).
    pub fn add_blob_bytes(&self, bytes: &[u8]) -> Result<String, BundleError> {
        let hex = fsx::sha256_hex(bytes);
        let dst = self.blob_path(&hex);
        if !dst.exists() {
            fsx::write_atomic(&dst, bytes)?;
        }
        Ok(format!("sha256:{hex}"))
    }

    pub fn read_blob(&self, d: &Descriptor) -> Result<Vec<u8>, BundleError> {
        let p = self.blob_path(d.hex()?);
        let bytes = fs::read(&p).map_err(|e| BundleError::io("read", &p, e))?;
        if fsx::sha256_hex(&bytes) != d.hex()? {
            return Err(BundleError::Integrity(format!(
                "blob {} in {} does not match its digest; the layout is corrupt or was \
                 tampered with",
                d.digest,
                self.dir.display()
            )));
        }
        Ok(bytes)
    }

    /// Records `top` (a manifest or index) under `ref_name`.
    pub fn tag(&mut self, ref_name: &str, mut top: Descriptor) {
        top.annotations
            .insert(REF_NAME.to_owned(), ref_name.to_owned());
        self.entries.insert(ref_name.to_owned(), top);
    }

    /// Writes `index.json` (entries sorted by ref name, so it is reproducible).
    pub fn write_index(&self) -> Result<(), BundleError> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": self.entries.values().collect::<Vec<_>>(),
        });
        let mut bytes = serde_json::to_vec_pretty(&index).expect("index serializes");
        bytes.push(b'\n');
        fsx::write_atomic(&self.dir.join("index.json"), &bytes)
    }

    /// Copies the image tagged `tag` from the layout at `src` into this layout.
    pub fn copy_from_layout(&self, src: &Path, tag: &str) -> Result<Descriptor, BundleError> {
        let what = src.display().to_string();
        let index = read_index(src)?;
        let top = index
            .into_iter()
            .find(|d| {
                d.annotations
                    .get(REF_NAME)
                    .is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}")))
            })
            .ok_or_else(|| {
                BundleError::Input(format!(
                    "{what} has no image tagged {tag:?} in its index.json"
                ))
            })?;
        self.copy_tree(&Layout::at(src), &top, &what)?;
        let mut top = top;
        top.annotations.clear();
        Ok(top)
    }

    /// Copies `d` and everything it references from the layout `src`, each blob verified.
    fn copy_tree(&self, src: &Layout, d: &Descriptor, what: &str) -> Result<(), BundleError> {
        let bytes = src.read_blob(d)?;
        if d.is_index() {
            let idx: IndexDoc = serde_json::from_slice(&bytes).map_err(|e| {
                BundleError::Layout(format!("{what}: index {} does not parse: {e}", d.digest))
            })?;
            for child in &idx.manifests {
                self.copy_tree(src, child, what)?;
            }
        } else if d.is_manifest() {
            let m: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| {
                BundleError::Layout(format!("{what}: manifest {} does not parse: {e}", d.digest))
            })?;
            self.add_blob_bytes(&src.read_blob(&m.config)?)?;
            for layer in &m.layers {
                self.add_blob_file(&src.blob_path(layer.hex()?), layer, what)?;
            }
        } else {
            return Err(BundleError::Layout(format!(
                "{what}: {} has media type {}, not an image manifest or index",
                d.digest, d.media_type
            )));
        }
        self.add_blob_bytes(&bytes)?;
        Ok(())
    }
}

pub fn read_index(dir: &Path) -> Result<Vec<Descriptor>, BundleError> {
    let p = dir.join("index.json");
    let bytes = fs::read(&p).map_err(|e| BundleError::io("read", &p, e))?;
    let idx: IndexDoc = serde_json::from_slice(&bytes).map_err(|e| {
        BundleError::Layout(format!("{} is not an OCI image index: {e}", p.display()))
    })?;
    Ok(idx.manifests)
}

/// One image as the media holds it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    /// Every blob the image needs (manifests, configs, layers).
    pub blobs: Vec<Descriptor>,
    /// (manifest descriptor, parsed manifest, config JSON) per platform.
    #[serde(skip)]
    pub manifests: Vec<(Descriptor, ManifestDoc, Value)>,
}

impl ImageSummary {
    /// The image's own manifest or index descriptor (the first blob walked).
    pub fn top(&self) -> &Descriptor {
        &self.blobs[0]
    }
}

/// Reads every tagged image of the layout at `dir`: checks that each referenced blob exists,
/// has the size its descriptor says and hashes to its name (`hashes` holds digests already
/// computed, hex → size, so large blobs are not read twice).
pub fn inspect(
    dir: &Path,
    hashes: &BTreeMap<String, u64>,
    omitted: &[String],
) -> Result<Vec<ImageSummary>, BundleError> {
    let layout = Layout::at(dir);
    let layout_file = dir.join("oci-layout");
    let text =
        fs::read_to_string(&layout_file).map_err(|e| BundleError::io("read", &layout_file, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| BundleError::Layout(format!("{}: {e}", layout_file.display())))?;
    if v["imageLayoutVersion"] != "1.0.0" {
        return Err(BundleError::Layout(format!(
            "{} does not declare imageLayoutVersion 1.0.0",
            layout_file.display()
        )));
    }
    let mut out = Vec::new();
    for top in read_index(dir)? {
        let reference = top.annotations.get(REF_NAME).cloned().ok_or_else(|| {
            BundleError::Layout(format!("index entry {} has no {REF_NAME}", top.digest))
        })?;
        let mut summary = ImageSummary {
            reference,
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
            blobs: Vec::new(),
            manifests: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        walk(&layout, &top, hashes, omitted, &mut summary, &mut seen)?;
        out.push(summary);
    }
    Ok(out)
}

fn check_blob(
    layout: &Layout,
    d: &Descriptor,
    hashes: &BTreeMap<String, u64>,
    omitted: &[String],
) -> Result<(), BundleError> {
    let hex = d.hex()?;
    let rel = format!("images/blobs/sha256/{hex}");
    match hashes.get(hex) {
        None if omitted.contains(&d.digest) => Ok(()),
        Some(size) if *size == d.size => Ok(()),
        Some(size) => Err(BundleError::Integrity(format!(
            "{rel} is {size} bytes but its descriptor says {}",
            d.size
        ))),
        None => {
            let p = layout.blob_path(hex);
            if !p.exists() {
                return Err(BundleError::Layout(format!(
                    "{rel} is referenced but missing from the media"
                )));
            }
            let (got, size) = fsx::sha256_file(&p)?;
            if got != hex || size != d.size {
                return Err(BundleError::Integrity(format!(
                    "{rel} does not match its digest"
                )));
            }
            Ok(())
        }
    }
}

fn walk(
    layout: &Layout,
    d: &Descriptor,
    hashes: &BTreeMap<String, u64>,
    omitted: &[String],
    summary: &mut ImageSummary,
    seen: &mut BTreeSet<String>,
) -> Result<(), BundleError> {
    if !seen.insert(d.digest.clone()) {
        return Ok(());
    }
    check_blob(layout, d, hashes, omitted)?;
    summary.blobs.push(d.clone());
    if d.is_index() {
        let idx: IndexDoc = serde_json::from_slice(&layout.read_blob(d)?)
            .map_err(|e| BundleError::Layout(format!("index {}: {e}", d.digest)))?;
        for child in &idx.manifests {
            walk(layout, child, hashes, omitted, summary, seen)?;
        }
    } else if d.is_manifest() {
        let m: ManifestDoc = serde_json::from_slice(&layout.read_blob(d)?)
            .map_err(|e| BundleError::Layout(format!("manifest {}: {e}", d.digest)))?;
        check_blob(layout, &m.config, hashes, &[])?;
        let config: Value = serde_json::from_slice(&layout.read_blob(&m.config)?)
            .map_err(|e| BundleError::Layout(format!("config {}: {e}", m.config.digest)))?;
        if seen.insert(m.config.digest.clone()) {
            summary.blobs.push(m.config.clone());
        }
        for l in &m.layers {
            check_blob(layout, l, hashes, omitted)?;
            if seen.insert(l.digest.clone()) {
                summary.blobs.push(l.clone());
            }
        }
        summary.manifests.push((d.clone(), m, config));
    } else {
        return Err(BundleError::Layout(format!(
            "{} has media type {}, not an image manifest or index",
            d.digest, d.media_type
        )));
    }
    Ok(())
}
