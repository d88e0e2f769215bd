//! `meshguard-bundle create`: assemble, describe and sign the media.
//!
//! Everything is written into `<out>.partial-<pid>` and renamed to `<out>` only once signed, so
//! an interrupted or refused run never leaves media that looks complete.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::keys::{CosignKey, MediaKey};
use marked_yaml::Spanned;

use crate::manifest::{ImageSource, ImageSpec, Loaded};
use crate::media::{
    self, BuildRecord, ImageEntry, Item, LicenseEntry, MediaDoc, ProviderEntry, Since,
};
use crate::provenance::{self, Input};
use crate::{BundleError, fsx, oci, sbom, sums, tfmirror};

/// What `create` needs besides the manifest.
#[derive(Debug)]
pub struct Options<'a> {
    pub out: PathBuf,
    pub key: &'a MediaKey,
    pub cosign: Option<&'a CosignKey>,
    /// An older media directory: leave out the image blobs it already holds.
    pub since: Option<PathBuf>,
    /// `SOURCE_DATE_EPOCH`: the one time written anywhere, for reproducible media.
    pub source_date_epoch: Option<i64>,
    /// Registries reached over plain HTTP (e.g. `127.0.0.1:5000`).
    pub insecure_registries: Vec<String>,
    /// The site CAs and the auth file for the registries images are pulled from.
    pub access: crate::access::Access,
    /// Media not for customers: a development build of the gateway is allowed (and recorded).
    pub development: bool,
}

/// What was made.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub images: usize,
    pub omitted_blobs: usize,
}

/// `epoch` as RFC 3339 in UTC, to the second (the one time format of media and images).
pub(crate) fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn progress(text: &str) {
    eprintln!("meshguard-bundle: {text}");
}

pub fn create(m: &Loaded, opts: &Options<'_>) -> Result<Created, BundleError> {
    if opts.out.exists() {
        return Err(BundleError::Input(format!(
            "{} exists; remove it or choose another --out (media is never overwritten in place)",
            opts.out.display()
        )));
    }
    let mut staging_name = opts.out.file_name().unwrap_or_default().to_owned();
    staging_name.push(format!(".partial-{}", std::process::id()));
    let stage = opts.out.with_file_name(staging_name);
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage).map_err(|e| BundleError::io("create", &stage, e))?;
    match build(m, opts, &stage) {
        Ok(mut created) => {
            fs::rename(&stage, &opts.out)
                .map_err(|e| BundleError::io("rename into", &opts.out, e))?;
            fsx::sync_dir(opts.out.parent().unwrap_or(Path::new(".")))
                .map_err(|e| BundleError::io("sync", &opts.out, e))?;
            created.dir = opts.out.clone();
            Ok(created)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&stage);
            Err(e)
        }
    }
}

/// Sum of the sizes of regular files under `p`.
fn tree_size(p: &Path) -> u64 {
    if p.is_file() {
        return p.metadata().map_or(0, |m| m.len());
    }
    fsx::walk(p)
        .map(|files| {
            files
                .iter()
                .map(|f| p.join(f).metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// A directory copied onto the media as one input: SHA-256 over its `sha256  path` lines in
/// path order (the SHA256SUMS form), named by its place on the media.
fn tree_input(stage: &Path, at: &str, name: &str) -> Result<Input, BundleError> {
    let dir = stage.join(at);
    let mut listing = String::new();
    if dir.is_dir() {
        for rel in fsx::walk(&dir)? {
            let (hex, _) = fsx::sha256_file(&dir.join(&rel))?;
            listing.push_str(&format!("{hex}  {rel}\n"));
        }
    } else {
        let (hex, _) = fsx::sha256_file(&dir)?;
        listing.push_str(&format!("{hex}  {at}\n"));
    }
    Ok(Input::sha256(
        format!("file:{at}"),
        fsx::sha256_hex(listing.as_bytes()),
        name.into(),
    ))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BundleError> {
    for rel in fsx::walk(from)? {
        fsx::copy_hashed(&from.join(&rel), &to.join(&rel))?;
    }
    Ok(())
}

/// The media being built in the stage: what every step needs, and what the steps gather for the
/// provenance (`inputs`) and the hashes of the files written so far (`known`).
struct Build<'a> {
    m: &'a Loaded,
    opts: &'a Options<'a>,
    stage: &'a Path,
    /// When the build started (`SOURCE_DATE_EPOCH` if given), and as RFC 3339.
    started: i64,
    stamp: String,
    inputs: Vec<Input>,
    known: sums::Hashes,
}

/// What `MEDIA.json` describes besides the files.
struct Described {
    images: Vec<ImageEntry>,
    providers: Vec<ProviderEntry>,
    license: Option<LicenseEntry>,
    build: Option<BuildRecord>,
    since: Option<Since>,
}

fn build(m: &Loaded, opts: &Options<'_>, stage: &Path) -> Result<Created, BundleError> {
    let started = opts
        .source_date_epoch
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    let mut b = Build {
        m,
        opts,
        stage,
        started,
        stamp: rfc3339(started),
        inputs: source_input(m).into_iter().collect(),
        known: sums::Hashes::new(),
    };
    b.ensure_room()?;
    let images = b.copy_images()?;
    b.copy_chart()?;
    let providers = b.terraform()?;
    b.policies()?;
    b.egress()?;
    let license = b.license()?;
    b.scans()?;
    let summaries = b.inspect_images()?;
    let build = b.gateway_build(&summaries, license.as_ref())?;
    let since = b.differential(&summaries)?;
    b.sboms(&summaries)?;
    b.provenance(since.as_ref())?;
    // How to verify with stock tools.
    fsx::write_atomic(
        &stage.join(media::VERIFY_TXT),
        verify_guide(m.manifest.version.as_str(), opts.cosign.is_some()).as_bytes(),
    )?;
    let omitted_blobs = since.as_ref().map_or(0, |s| s.omitted_blobs.len());
    let hashes = b.describe_and_sign(Described {
        images,
        providers,
        license,
        build,
        since,
    })?;
    let bytes = hashes.values().map(|(_, s)| s).sum();
    Ok(Created {
        dir: stage.to_owned(),
        files: hashes.len() + 2 + usize::from(opts.cosign.is_some()),
        bytes,
        images: summaries.len(),
        omitted_blobs,
    })
}

/// The source the media's binaries were built from, as a provenance input.
fn source_input(m: &Loaded) -> Option<Input> {
    let src = m.manifest.source.as_ref()?;
    Some(Input {
        uri: format!("git+{}@{}", src.repository.as_str(), src.revision.as_str()),
        digest: ("gitCommit", src.revision.as_str().to_lowercase()),
        name: "source".into(),
    })
}

impl Build<'_> {
    /// Room for everything local, before writing anything.
    fn ensure_room(&self) -> Result<(), BundleError> {
        let (m, man) = (self.m, &self.m.manifest);
        let mut need = 0u64;
        for img in &man.images {
            match m.image_source(img)? {
                ImageSource::Layout { dir, .. } => need += tree_size(&dir),
                ImageSource::Archive { file, .. } => need += 2 * tree_size(&file),
                ImageSource::Registry { .. } => {}
            }
        }
        for p in [&man.chart, &man.policies].into_iter().flatten() {
            need += tree_size(&m.path(p, "path")?);
        }
        fsx::ensure_space(self.stage, need, "the media")
    }

    /// Images, into one shared layout.
    fn copy_images(&mut self) -> Result<Vec<ImageEntry>, BundleError> {
        let man = &self.m.manifest;
        let mut images = Vec::new();
        if man.images.is_empty() {
            return Ok(images);
        }
        progress(&format!(
            "copying {} image(s) into images/",
            man.images.len()
        ));
        let mut layout = oci::Layout::create(&self.stage.join("images"))?;
        for img in &man.images {
            let source = self.m.image_source(img)?;
            let top = self.copy_image(&layout, img, &source, images.len())?;
            let uri = match &source {
                ImageSource::Layout { tag, .. } => format!("oci-layout:{tag}"),
                ImageSource::Archive { file, tag } => format!(
                    "oci-archive:{}:{tag}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                ),
                ImageSource::Registry { reference } => format!("docker://{reference}"),
            };
            self.inputs.push(Input::sha256(
                uri,
                top.hex()?.to_owned(),
                img.reference.as_str().to_owned(),
            ));
            images.push(ImageEntry {
                reference: img.reference.as_str().to_owned(),
                digest: top.digest.clone(),
                media_type: top.media_type.clone(),
                source: img.from.as_str().to_owned(),
            });
            layout.tag(img.reference.as_str(), top);
        }
        layout.write_index()?;
        Ok(images)
    }

    /// One image from its source into the layout (the `n`th): its top descriptor.
    fn copy_image(
        &self,
        layout: &oci::Layout,
        img: &ImageSpec,
        source: &ImageSource,
        n: usize,
    ) -> Result<oci::Descriptor, BundleError> {
        match source {
            ImageSource::Layout { dir, tag } => {
                if !dir.join("index.json").exists() {
                    return Err(self.m.error(
                        &img.from,
                        format!(
                            "{} is not an OCI image layout (no index.json)",
                            dir.display()
                        ),
                    ));
                }
                layout.copy_from_layout(dir, tag)
            }
            ImageSource::Archive { file, tag } => {
                let tmp = self.stage.join(format!(".archive-{n}"));
                let f = fs::File::open(file).map_err(|e| BundleError::io("read", file, e))?;
                crate::archive::extract(
                    f,
                    &tmp,
                    crate::archive::Limits::default(),
                    None,
                    &file.display().to_string(),
                )?;
                let top = layout.copy_from_layout(&tmp, tag);
                let _ = fs::remove_dir_all(&tmp);
                top
            }
            ImageSource::Registry { reference } => crate::registry::pull(
                reference,
                layout,
                &self.opts.insecure_registries,
                &self.opts.access,
            ),
        }
    }

    /// The Helm chart, a directory or a packaged `.tgz`.
    fn copy_chart(&mut self) -> Result<(), BundleError> {
        let Some(chart) = &self.m.manifest.chart else {
            return Ok(());
        };
        let src = self.m.path(chart, "chart")?;
        let name = src.file_name().unwrap_or_default();
        if src.is_dir() {
            if !src.join("Chart.yaml").is_file() {
                return Err(self.m.error(
                    chart,
                    format!(
                        "{} has no Chart.yaml; give a Helm chart directory or a packaged .tgz",
                        src.display()
                    ),
                ));
            }
            copy_tree(&src, &self.stage.join("charts").join(name))?;
        } else {
            fsx::copy_hashed(&src, &self.stage.join("charts").join(name))?;
        }
        let at = format!("charts/{}", name.to_string_lossy());
        self.inputs.push(tree_input(self.stage, &at, "helm chart")?);
        Ok(())
    }

    /// The Terraform provider mirror and modules.
    fn terraform(&mut self) -> Result<Vec<ProviderEntry>, BundleError> {
        let mut providers = Vec::new();
        let Some(tf) = &self.m.manifest.terraform else {
            return Ok(providers);
        };
        if let Some(p) = &tf.provider {
            let parts: Vec<&str> = p.source().split('/').collect();
            for (platform, bin) in &p.binaries {
                let id = tfmirror::ProviderId {
                    hostname: parts[0].to_owned(),
                    namespace: parts[1].to_owned(),
                    kind: parts[2].to_owned(),
                    version: p.version.as_str().to_owned(),
                    platform: platform.clone(),
                };
                providers.push(self.provider(p.source(), bin, id)?);
            }
        }
        if let Some(modules) = &tf.modules {
            let src = self.m.path(modules, "modules directory")?;
            copy_tree(&src, &self.stage.join("terraform/modules"))?;
            self.inputs.push(tree_input(
                self.stage,
                "terraform/modules",
                "terraform modules",
            )?);
        }
        Ok(providers)
    }

    /// One provider binary, packed into the mirror.
    fn provider(
        &mut self,
        source: &str,
        bin: &Spanned<String>,
        id: tfmirror::ProviderId,
    ) -> Result<ProviderEntry, BundleError> {
        let binary = self.m.path(bin, "provider binary")?;
        let root = self.stage.join("terraform/providers");
        let packed =
            tfmirror::pack(&binary, &id, &root).map_err(|e| self.m.error(bin, e.to_string()))?;
        self.inputs.push(Input::sha256(
            format!(
                "file:{}",
                binary.file_name().unwrap_or_default().to_string_lossy()
            ),
            packed.binary_sha256.clone(),
            format!(
                "terraform-provider-{}_{}_{}",
                id.kind, id.version, id.platform
            ),
        ));
        Ok(ProviderEntry {
            source: source.to_owned(),
            version: id.version.clone(),
            platform: id.platform.clone(),
            path: fsx::rel(self.stage, &packed.zip)?,
            h1: packed.h1,
            zh: packed.zh,
        })
    }

    /// Writes a file the gateway loads only if it carries the media key's own signature beside
    /// it, and that signature.
    fn sign_onto(&mut self, path: &str, bytes: &[u8], name: &str) -> Result<(), BundleError> {
        fsx::write_atomic(&self.stage.join(path), bytes)?;
        let file = path.rsplit('/').next().unwrap_or(path);
        let sig = self.opts.key.sign(
            bytes,
            &format!(
                "timestamp:{}\tfile:{file}\tversion:{}",
                self.started,
                self.m.manifest.version.as_str()
            ),
        )?;
        fsx::write_atomic(&self.stage.join(format!("{path}.minisig")), sig.as_bytes())?;
        self.inputs.push(Input::sha256(
            format!("file:{path}"),
            fsx::sha256_hex(bytes),
            name.into(),
        ));
        Ok(())
    }

    /// Policies, as a signed bundle the gateway loads with POLICY_BUNDLE.
    fn policies(&mut self) -> Result<(), BundleError> {
        let Some(policies) = &self.m.manifest.policies else {
            return Ok(());
        };
        let src = self.m.path(policies, "policies directory")?;
        let bundle = policy_bundle(&src, self.m.manifest.version.as_str(), &self.stamp)
            .map_err(|e| self.m.error(policies, e.to_string()))?;
        self.sign_onto(media::POLICY_BUNDLE, &bundle, "policies")
    }

    /// The egress allowlist, signed as the gateway's egress proxy requires.
    fn egress(&mut self) -> Result<(), BundleError> {
        let Some(e) = &self.m.manifest.egress else {
            return Ok(());
        };
        let src = self.m.path(e, "egress allowlist")?;
        let bytes = fs::read(&src).map_err(|err| BundleError::io("read", &src, err))?;
        let format = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["format"].as_str().map(str::to_owned));
        if format.as_deref() != Some("meshguard-egress-allowlist/v1") {
            return Err(self.m.error(
                e,
                format!(
                    "{} is not an egress allowlist (JSON with format meshguard-egress-allowlist/v1)",
                    src.display()
                ),
            ));
        }
        self.sign_onto(media::EGRESS_ALLOWLIST, &bytes, "egress allowlist")
    }

    /// The license, and its age-encrypted form (as given, or sealed to the recipients).
    fn license(&self) -> Result<Option<LicenseEntry>, BundleError> {
        let Some(l) = &self.m.manifest.license else {
            return Ok(None);
        };
        let src = self.m.path(&l.file, "license")?;
        let name = src
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let bytes = fs::read(&src).map_err(|e| BundleError::io("read", &src, e))?;
        meshguard_license::dsse::Envelope::from_json(&bytes, l.file.as_str())
            .map_err(|e| self.m.error(&l.file, e.to_string()))?;
        let path = format!("license/{name}");
        fsx::write_atomic(&self.stage.join(&path), &bytes)?;
        let recipients: Vec<String> = l.recipients.iter().map(|r| r.as_str().to_owned()).collect();
        let encrypted = if let Some(ready) = &l.encrypted {
            let src = self.m.path(ready, "encrypted license")?;
            let sealed = fs::read(&src).map_err(|e| BundleError::io("read", &src, e))?;
            if !meshguard_license::seal::is_age(&sealed) {
                return Err(self
                    .m
                    .error(ready, format!("{} is not an age file", src.display())));
            }
            let p = format!("license/{name}.age");
            fsx::write_atomic(&self.stage.join(&p), &sealed)?;
            Some(p)
        } else if recipients.is_empty() {
            None
        } else {
            let parsed = meshguard_license::seal::parse_recipients(&recipients)?;
            let sealed = meshguard_license::seal::encrypt_to(&bytes, &parsed)?;
            let p = format!("license/{name}.age");
            fsx::write_atomic(&self.stage.join(&p), &sealed)?;
            Some(p)
        };
        Ok(Some(LicenseEntry {
            path,
            encrypted,
            recipients,
        }))
    }

    /// Scan reports, as given.
    fn scans(&self) -> Result<(), BundleError> {
        let mut scan_names = BTreeSet::new();
        for scan in &self.m.manifest.scans {
            let src = self.m.path(scan, "scan report")?;
            let name = src
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !scan_names.insert(name.clone()) {
                return Err(self
                    .m
                    .error(scan, format!("a scan report named {name} is listed twice")));
            }
            fsx::copy_hashed(&src, &self.stage.join("scans").join(&name))?;
        }
        Ok(())
    }

    /// What the images on the media hold (none without `images/index.json`).
    fn inspect_images(&mut self) -> Result<Vec<oci::ImageSummary>, BundleError> {
        let blob_sizes = hash_stage(self.stage, &mut self.known)?
            .into_iter()
            .filter(|(p, _)| p.starts_with("images/blobs/sha256/"))
            .map(|(_, (h, size))| (h, size))
            .collect();
        if self.stage.join("images/index.json").exists() {
            oci::inspect(&self.stage.join("images"), &blob_sizes, &[])
        } else {
            Ok(Vec::new())
        }
    }

    /// The gateway build the images carry, read from the binary: a development build only with
    /// `--development`; a license on the media signed by a release build's vendor key.
    fn gateway_build(
        &self,
        summaries: &[oci::ImageSummary],
        license: Option<&LicenseEntry>,
    ) -> Result<Option<BuildRecord>, BundleError> {
        let Some(found) = crate::gateway_build::find(&self.stage.join("images"), summaries)? else {
            return Ok(None);
        };
        crate::gateway_build::require_release(&found, self.opts.development)?;
        if let Some(l) = license {
            let bytes = fs::read(self.stage.join(&l.path))
                .map_err(|e| BundleError::io("read", &self.stage.join(&l.path), e))?;
            crate::gateway_build::check_license(&found, &bytes, &l.path)?;
        }
        progress(&format!(
            "gateway: {}",
            crate::gateway_build::describe(&found.keying)
        ));
        Ok(Some(found.record()))
    }

    /// Differential: drop image layers the older media (`--since`, checked against the media
    /// key) already holds.
    fn differential(&self, summaries: &[oci::ImageSummary]) -> Result<Option<Since>, BundleError> {
        let Some(old) = &self.opts.since else {
            return Ok(None);
        };
        let old_sums_path = old.join(media::SUMS);
        let old_sums = fs::read_to_string(&old_sums_path)
            .map_err(|e| BundleError::io("read", &old_sums_path, e))?;
        self.opts.key.public().verify(
            old_sums.as_bytes(),
            &fs::read_to_string(old.join(media::SUMS_SIG))
                .map_err(|e| BundleError::io("read", &old.join(media::SUMS_SIG), e))?,
            &old_sums_path.display().to_string(),
        )?;
        let old_doc: MediaDoc = serde_json::from_slice(
            &fs::read(old.join(media::MEDIA_JSON))
                .map_err(|e| BundleError::io("read", &old.join(media::MEDIA_JSON), e))?,
        )
        .map_err(|e| {
            BundleError::Input(format!("{}: {e}", old.join(media::MEDIA_JSON).display()))
        })?;
        let old_listed = sums::parse(&old_sums, &old_sums_path.display().to_string())?;
        let mut omitted = Vec::new();
        // Layers only: manifests and configs are small and describe the images.
        let layers: BTreeSet<&str> = summaries
            .iter()
            .flat_map(|s| s.manifests.iter().flat_map(|(_, m, _)| m.layers.iter()))
            .filter_map(|l| l.hex().ok())
            .collect();
        let blobs = self.stage.join("images/blobs/sha256");
        for hex in layers {
            if old_listed.contains_key(&format!("images/blobs/sha256/{hex}")) {
                fs::remove_file(blobs.join(hex))
                    .map_err(|e| BundleError::io("remove", &blobs.join(hex), e))?;
                omitted.push(format!("sha256:{hex}"));
            }
        }
        Ok(Some(Since {
            version: old_doc.version,
            sha256sums: fsx::sha256_hex(old_sums.as_bytes()),
            omitted_blobs: omitted,
        }))
    }

    /// SBOMs (CycloneDX 1.6): one per image, one per named binary, then one of the media.
    fn sboms(&mut self, summaries: &[oci::ImageSummary]) -> Result<(), BundleError> {
        let (m, man, stage, stamp) = (self.m, &self.m.manifest, self.stage, &self.stamp);
        progress("writing SBOMs (CycloneDX 1.6)");
        let workspace = match &man.sbom {
            Some(spec) => {
                let dir = match &spec.workspace {
                    Some(w) => m.path(w, "cargo workspace")?,
                    None => m.base.clone(),
                };
                Some(sbom::Workspace::load(&dir)?)
            }
            None => None,
        };
        for s in summaries {
            let doc = sbom::image(s, &stage.join("images"), workspace.as_ref(), stamp)?;
            let name = s.reference.replace(['/', ':'], "_");
            write_json(&stage.join(format!("sbom/images/{name}.cdx.json")), &doc)?;
        }
        if let (Some(spec), Some(ws)) = (&man.sbom, &workspace) {
            for bin in &spec.binaries {
                let doc = ws
                    .binary(bin.as_str(), stamp)
                    .map_err(|e| m.error(bin, e.to_string()))?;
                write_json(
                    &stage.join(format!("sbom/binaries/{}.cdx.json", bin.as_str())),
                    &doc,
                )?;
            }
        }
        let hashes = hash_stage(stage, &mut self.known)?;
        let media_sbom = sbom::media(
            man.product.as_str(),
            man.version.as_str(),
            &hashes,
            summaries,
            stamp,
        );
        write_json(&stage.join("sbom/media.cdx.json"), &media_sbom)
    }

    /// Provenance over everything so far, signed with the media key (DSSE).
    fn provenance(&mut self, since: Option<&Since>) -> Result<(), BundleError> {
        let hashes = hash_stage(self.stage, &mut self.known)?;
        let manifest_path = Path::new(&self.m.file);
        let (manifest_sha, _) = fsx::sha256_file(manifest_path)?;
        let finished = self
            .opts
            .source_date_epoch
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let statement = provenance::statement(
            &hashes,
            &self.inputs,
            &provenance::Run {
                manifest_path: manifest_path
                    .file_name()
                    .map(|f| f.to_string_lossy())
                    .as_deref()
                    .unwrap_or("manifest"),
                manifest_sha256: &manifest_sha,
                since: since.map(|s| s.sha256sums.as_str()),
                source_date_epoch: self.opts.source_date_epoch,
                started: &self.stamp,
                finished: &rfc3339(finished),
            },
        );
        let payload = meshguard_license::canonical::to_vec(&statement)?;
        let envelope = meshguard_license::dsse::Envelope::sign_with(
            provenance::PAYLOAD_TYPE,
            &payload,
            self.opts.key.signing_key(),
            self.opts.key.public().key_id(),
        );
        fsx::write_atomic(&self.stage.join(media::PROVENANCE), &envelope.to_json())
    }

    /// `MEDIA.json` over every file, then `SHA256SUMS` over every file, then the signatures.
    /// The hashes `SHA256SUMS` lists.
    fn describe_and_sign(&mut self, d: Described) -> Result<sums::Hashes, BundleError> {
        let (man, stage, opts) = (&self.m.manifest, self.stage, self.opts);
        let hashes = hash_stage(stage, &mut self.known)?;
        let doc = MediaDoc {
            format: media::FORMAT.into(),
            product: man.product.as_str().to_owned(),
            version: man.version.as_str().to_owned(),
            profile: man.profile.as_ref().map(|p| p.as_str().to_owned()),
            created_at: self.stamp.clone(),
            since: d.since,
            images: d.images,
            providers: d.providers,
            license: d.license,
            build: d.build,
            items: hashes
                .iter()
                .map(|(path, (hex, size))| Item {
                    kind: media::kind_of(path).into(),
                    path: path.clone(),
                    size: *size,
                    sha256: hex.clone(),
                })
                .collect(),
        };
        write_json(
            &stage.join(media::MEDIA_JSON),
            &serde_json::to_value(&doc).expect("serializes"),
        )?;
        let hashes = hash_stage(stage, &mut self.known)?;
        let sums_text = sums::format(&hashes);
        fsx::write_atomic(&stage.join(media::SUMS), sums_text.as_bytes())?;
        let sig = opts.key.sign(
            sums_text.as_bytes(),
            &format!(
                "timestamp:{}\tfile:SHA256SUMS\tproduct:{}\tversion:{}",
                self.started,
                man.product.as_str(),
                man.version.as_str()
            ),
        )?;
        fsx::write_atomic(&stage.join(media::SUMS_SIG), sig.as_bytes())?;
        if let Some(cosign) = opts.cosign {
            let bundle = crate::sigstore::bundle(cosign, sums_text.as_bytes());
            write_json(&stage.join(media::SUMS_SIGSTORE), &bundle)?;
        }
        Ok(hashes)
    }
}

/// Hashes of every file in the stage. Files are written once and never changed in place, so
/// only files `known` does not hold yet are read; files removed since are dropped. `known` is
/// updated to the result.
fn hash_stage(stage: &Path, known: &mut sums::Hashes) -> Result<sums::Hashes, BundleError> {
    let files: Vec<String> = fsx::walk(stage)?
        .into_iter()
        .filter(|p| !media::UNLISTED.contains(&p.as_str()))
        .collect();
    let fresh: Vec<String> = files
        .iter()
        .filter(|f| !known.contains_key(*f))
        .cloned()
        .collect();
    let mut out = sums::hash_all(stage, &fresh)?;
    for f in &files {
        if let Some(h) = known.get(f) {
            out.insert(f.clone(), h.clone());
        }
    }
    *known = out.clone();
    Ok(out)
}

pub(crate) fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), BundleError> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    bytes.push(b'\n');
    fsx::write_atomic(path, &bytes)
}

/// The gateway's policy bundle (`meshguard-policy-bundle/v1`) from a directory of YAML files.
/// Each is checked with the gateway's own parser first: media with a policy the gateway would
/// refuse are not made (every problem of every file is named, with its field and line).
pub fn policy_bundle(dir: &Path, version: &str, created: &str) -> Result<Vec<u8>, BundleError> {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for rel in fsx::walk(dir)? {
        if !(rel.ends_with(".yaml") || rel.ends_with(".yml")) {
            continue;
        }
        let p = dir.join(&rel);
        let content = fs::read_to_string(&p).map_err(|e| BundleError::io("read", &p, e))?;
        for issue in meshguard_policy::parse_policy(&content).errors {
            let at = match (issue.path.as_str(), issue.line) {
                ("", Some(line)) => format!(":{line}"),
                (path, Some(line)) => format!(":{line} ({path})"),
                ("", None) => String::new(),
                (path, None) => format!(" ({path})"),
            };
            problems.push(format!("{}{at}: {}", p.display(), issue.message));
        }
        let name = Path::new(&rel)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        policies.push(json!({
            "name": name,
            "digest": format!("sha256:{}", fsx::sha256_hex(content.as_bytes())),
            "content": content,
        }));
    }
    if !problems.is_empty() {
        return Err(BundleError::Input(format!(
            "the gateway would refuse these policies, so no media are made; fix them (`POST /admin/policies/validate` gives the same answers):\n  {}",
            problems.join("\n  ")
        )));
    }
    if policies.is_empty() {
        return Err(BundleError::Input(format!(
            "{} holds no .yaml policy",
            dir.display()
        )));
    }
    let bundle = json!({
        "format": "meshguard-policy-bundle/v1",
        "version": 1,
        "createdAt": created,
        "origin": format!("meshguard-bundle/{version}"),
        "policies": policies,
    });
    let mut bytes = serde_json::to_vec_pretty(&bundle).expect("serializes");
    bytes.push(b'\n');
    Ok(bytes)
}

fn verify_guide(version: &str, cosign: bool) -> String {
    let mut s = format!(
        "How to verify this MeshGuard {version} media with stock tools alone
=====================================================================

You need the publisher's public key, obtained out of band (not from this media):
meshguard.pub (minisign){}.

1. The signature over the checksum list:

     minisign -Vm SHA256SUMS -p meshguard.pub

2. Every file against the checksum list:

     sha256sum -c --strict SHA256SUMS

3. No file that the checksum list does not name (should print nothing):

     find . -type f ! -name SHA256SUMS ! -name 'SHA256SUMS.*' -printf '%P\\n' | sort \\
       | comm -23 - <(cut -c67- SHA256SUMS | sort)

4. The images: images/ is an OCI image layout; every blob is named by its SHA-256, which
   step 2 already checked. To inspect one:

     skopeo inspect oci:images:<ref>

5. The policy bundle (the gateway checks it too, with POLICY_BUNDLE_PUBKEY=meshguard.pub):

     minisign -Vm policies/policy-bundle.json -p meshguard.pub

`meshguard-bundle verify . --pubkey meshguard.pub` does all of this, plus the signed
MEDIA.json, every OCI digest and the provenance signature, with no network, and writes a
transcript to keep as evidence.
",
        if cosign {
            " and meshguard-cosign.pub (PEM, ECDSA P-256)"
        } else {
            ""
        }
    );
    if cosign {
        s.push_str(
            "
With the P-256 key, the same signature as cosign and openssl check it:

     jq -r .messageSignature.signature SHA256SUMS.sigstore.json | base64 -d > SHA256SUMS.sig
     openssl dgst -sha256 -verify meshguard-cosign.pub -signature SHA256SUMS.sig SHA256SUMS
     cosign verify-blob --key meshguard-cosign.pub --bundle SHA256SUMS.sigstore.json SHA256SUMS
",
        );
    }
    s
}
