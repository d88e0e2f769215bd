//! `meshguard-bundle verify`: the chain of trust, strict, with no network.
//!
//! Public key → signature over `SHA256SUMS` → no unlisted file → every file's hash →
//! `MEDIA.json` → every OCI digest → provenance, policy bundle, provider and license
//! signatures. The first failure stops it and is named with what to do; every step is recorded
//! in a transcript fit to file as evidence.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::keys::MediaPublicKey;
use crate::media::{self, MediaDoc};
use crate::{BundleError, fsx, oci, provenance, sums};

#[derive(Debug, Default)]
pub struct Options {
    /// PEM P-256 key: check `SHA256SUMS.sigstore.json` too (and require it).
    pub cosign_pubkey: Option<String>,
    /// The license vendor's key: check the license on the media.
    pub license_pubkey: Option<meshguard_license::VendorPublicKey>,
    /// Refuse media of another version (a whole older media replayed).
    pub expect_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    pub tool: String,
    pub media: String,
    pub key_id: String,
    pub verified_at: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub files: usize,
    pub bytes: u64,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureNote>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureNote {
    pub code: String,
    pub message: String,
}

/// A verified media directory.
#[derive(Debug)]
pub struct Verified {
    pub doc: MediaDoc,
    pub images: Vec<oci::ImageSummary>,
    pub hashes: sums::Hashes,
}

impl Transcript {
    pub fn text(&self) -> String {
        let mut s = format!(
            "meshguard-bundle verification transcript\nmedia:    {}\nkey:      {} (minisign)\ntime:     {}\ntool:     {}\n",
            self.media, self.key_id, self.verified_at, self.tool
        );
        if let (Some(p), Some(v)) = (&self.product, &self.version) {
            s.push_str(&format!(
                "content:  {p} {v}, {} files, {} bytes\n",
                self.files, self.bytes
            ));
        }
        s.push('\n');
        for st in &self.steps {
            s.push_str(&format!(
                "[{}] {}: {}\n",
                if st.ok { " OK " } else { "FAIL" },
                st.check,
                st.detail
            ));
        }
        s.push_str(&format!(
            "\nresult:   {}\n",
            if self.ok { "VERIFIED" } else { "REJECTED" }
        ));
        if let Some(e) = &self.error {
            s.push_str(&format!("error:    {}\n", e.message));
        }
        s
    }
}

struct Run {
    steps: Vec<Step>,
}

impl Run {
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.steps.push(Step {
            check: check.into(),
            ok: true,
            detail: detail.into(),
        });
    }
}

pub fn verify(
    dir: &Path,
    key: &MediaPublicKey,
    opts: &Options,
) -> (Transcript, Result<Verified, BundleError>) {
    let mut run = Run { steps: Vec::new() };
    let result = chain(dir, key, opts, &mut run);
    let (product, version, files, bytes) = match &result {
        Ok(v) => (
            Some(v.doc.product.clone()),
            Some(v.doc.version.clone()),
            v.hashes.len(),
            v.hashes.values().map(|(_, s)| s).sum(),
        ),
        Err(_) => (None, None, 0, 0),
    };
    let error = result.as_ref().err().map(|e| FailureNote {
        code: e.code().into(),
        message: e.to_string(),
    });
    if let Some(e) = &error {
        let check = match e.code.as_str() {
            "signature" => "signature",
            "unlisted" => "file list",
            "integrity" => "file hashes",
            "oci_layout" => "OCI layout",
            other => other,
        };
        run.steps.push(Step {
            check: check.into(),
            ok: false,
            detail: e.message.clone(),
        });
    }
    let t = Transcript {
        tool: format!("{} {}", crate::sbom::TOOL, crate::sbom::TOOL_VERSION),
        media: dir.display().to_string(),
        key_id: key.key_id(),
        verified_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ok: result.is_ok(),
        product,
        version,
        files,
        bytes,
        steps: run.steps,
        error,
    };
    (t, result)
}

fn read(dir: &Path, name: &str, missing: &str) -> Result<Vec<u8>, BundleError> {
    let p = dir.join(name);
    fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            BundleError::Signature(format!("{name} is missing: {missing}"))
        }
        _ => BundleError::io("read", &p, e),
    })
}

/// The chain of trust, step by step; the first failure stops it. Each step that passes is
/// recorded in `run`.
fn chain(
    dir: &Path,
    key: &MediaPublicKey,
    opts: &Options,
    run: &mut Run,
) -> Result<Verified, BundleError> {
    if !dir.is_dir() {
        return Err(BundleError::Input(format!(
            "{} is not a media directory",
            dir.display()
        )));
    }
    let sums = sums_signature(dir, key, run)?;
    sigstore_signature(dir, opts, &sums.bytes, run)?;
    file_list(dir, &sums.listed, run)?;
    let hashes = file_hashes(dir, &sums.listed, run)?;
    let doc = media_json(dir, &sums.trusted, opts, &hashes, run)?;
    let images = oci_digests(dir, &doc, &hashes, run)?;
    provenance_signature(dir, key, &hashes, run)?;
    key_signed_files(dir, key, &hashes, run)?;
    terraform_providers(dir, &doc, &hashes, run)?;
    gateway_build(&doc, opts, run)?;
    license(dir, &doc, opts, run)?;
    Ok(Verified {
        doc,
        images,
        hashes,
    })
}

/// `SHA256SUMS`, its signature checked.
struct SignedSums {
    bytes: Vec<u8>,
    /// The signature's trusted comment.
    trusted: String,
    /// What it lists: path → hex SHA-256.
    listed: BTreeMap<String, String>,
}

/// 1. The signature over SHA256SUMS.
fn sums_signature(
    dir: &Path,
    key: &MediaPublicKey,
    run: &mut Run,
) -> Result<SignedSums, BundleError> {
    let sums_bytes = read(
        dir,
        media::SUMS,
        "this is not signed media, or it was damaged; do not use it",
    )?;
    let sig = read(dir, media::SUMS_SIG, "the media is unsigned; do not use it")?;
    let sig = String::from_utf8_lossy(&sig);
    let trusted = key.verify(&sums_bytes, &sig, media::SUMS)?;
    run.ok(
        "signature",
        format!("SHA256SUMS signed by {} ({trusted})", key.key_id()),
    );
    let sums_text = std::str::from_utf8(&sums_bytes)
        .map_err(|_| BundleError::Integrity("SHA256SUMS is not text".into()))?;
    let listed = sums::parse(sums_text, media::SUMS)?;
    Ok(SignedSums {
        bytes: sums_bytes,
        trusted,
        listed,
    })
}

/// 2. The optional cosign-style signature: required when a P-256 key is given.
fn sigstore_signature(
    dir: &Path,
    opts: &Options,
    sums_bytes: &[u8],
    run: &mut Run,
) -> Result<(), BundleError> {
    let sigstore_path = dir.join(media::SUMS_SIGSTORE);
    match (&opts.cosign_pubkey, sigstore_path.exists()) {
        (Some(pem), true) => {
            let bundle: serde_json::Value =
                serde_json::from_slice(&read(dir, media::SUMS_SIGSTORE, "")?).map_err(|e| {
                    BundleError::Signature(format!("{}: {e}", media::SUMS_SIGSTORE))
                })?;
            crate::sigstore::verify(&bundle, sums_bytes, pem, media::SUMS_SIGSTORE)?;
            run.ok(
                "sigstore bundle",
                "SHA256SUMS.sigstore.json verifies with the P-256 key",
            );
        }
        (Some(_), false) => {
            return Err(BundleError::Signature(format!(
                "{} is missing but a P-256 key was given; this media has no cosign-style signature",
                media::SUMS_SIGSTORE
            )));
        }
        (None, true) => run.ok(
            "sigstore bundle",
            "present; not checked (no --cosign-pubkey)",
        ),
        (None, false) => {}
    }
    Ok(())
}

/// 3. Nothing on the media that SHA256SUMS does not list, and nothing listed missing.
fn file_list(
    dir: &Path,
    listed: &BTreeMap<String, String>,
    run: &mut Run,
) -> Result<(), BundleError> {
    let present = fsx::walk(dir)?;
    let unlisted: Vec<&String> = present
        .iter()
        .filter(|p| !media::UNLISTED.contains(&p.as_str()) && !listed.contains_key(*p))
        .collect();
    if let Some(first) = unlisted.first() {
        return Err(BundleError::Unlisted(format!(
            "{first} is on the media but not in SHA256SUMS ({} such file(s)); something was added \
             after signing: do not use this media, or remove what was added",
            unlisted.len()
        )));
    }
    let present_set: std::collections::BTreeSet<&String> = present.iter().collect();
    if let Some(missing) = listed.keys().find(|p| !present_set.contains(p)) {
        return Err(BundleError::Integrity(format!(
            "{missing} is listed in SHA256SUMS but missing from the media; copy the media again"
        )));
    }
    run.ok(
        "file list",
        format!("{} files listed, none unlisted, none missing", listed.len()),
    );
    Ok(())
}

/// 4. Every file's hash against SHA256SUMS: the hashes (and sizes) of the media.
fn file_hashes(
    dir: &Path,
    listed: &BTreeMap<String, String>,
    run: &mut Run,
) -> Result<sums::Hashes, BundleError> {
    let paths: Vec<String> = listed.keys().cloned().collect();
    let total: u64 = paths
        .iter()
        .map(|p| dir.join(p).metadata().map_or(0, |m| m.len()))
        .sum();
    let bar = crate::progress::bytes(total, "verifying");
    let hashes = sums::hash_all_with(dir, &paths, Some(&bar));
    bar.finish_and_clear();
    let hashes = hashes?;
    for (path, want) in listed {
        let (got, _) = &hashes[path];
        if got != want {
            return Err(BundleError::Integrity(format!(
                "{path} does not match SHA256SUMS (sha256 {got}, signed {want}): it changed \
                 after signing; do not use this media"
            )));
        }
    }
    let total: u64 = hashes.values().map(|(_, s)| s).sum::<u64>();
    run.ok(
        "file hashes",
        format!("{} files, {} bytes, all match", hashes.len(), total),
    );
    Ok(hashes)
}

/// 5. MEDIA.json: its format, the media the signature was made for, the expected version, and
///    every file described as SHA256SUMS lists it.
fn media_json(
    dir: &Path,
    trusted: &str,
    opts: &Options,
    hashes: &sums::Hashes,
    run: &mut Run,
) -> Result<MediaDoc, BundleError> {
    let doc: MediaDoc = serde_json::from_slice(&read(
        dir,
        media::MEDIA_JSON,
        "this is not MeshGuard media",
    )?)
    .map_err(|e| BundleError::Integrity(format!("MEDIA.json does not parse: {e}")))?;
    if doc.format != media::FORMAT {
        return Err(BundleError::Integrity(format!(
            "MEDIA.json format is {:?}; this meshguard-bundle reads {}",
            doc.format,
            media::FORMAT
        )));
    }
    let expect_tc = format!("product:{}\tversion:{}", doc.product, doc.version);
    if !trusted.ends_with(&expect_tc) {
        return Err(BundleError::Signature(format!(
            "the signature's trusted comment ({trusted}) is not for {} {}: a SHA256SUMS signed \
             for other media was put here",
            doc.product, doc.version
        )));
    }
    if let Some(v) = &opts.expect_version
        && *v != doc.version
    {
        return Err(BundleError::Integrity(format!(
            "this media is {} {}, not the expected version {v}; an older media may have been \
             supplied",
            doc.product, doc.version
        )));
    }
    items_match_sums(&doc, hashes)?;
    run.ok(
        "MEDIA.json",
        format!(
            "{} {} ({} items) agrees with SHA256SUMS",
            doc.product,
            doc.version,
            doc.items.len()
        ),
    );
    Ok(doc)
}

/// MEDIA.json's items are exactly the files SHA256SUMS lists (but MEDIA.json), with the same
/// hashes and sizes.
fn items_match_sums(doc: &MediaDoc, hashes: &sums::Hashes) -> Result<(), BundleError> {
    let mut described: BTreeMap<&str, &media::Item> = BTreeMap::new();
    for item in &doc.items {
        described.insert(item.path.as_str(), item);
    }
    for (path, (hex, size)) in hashes {
        if path == media::MEDIA_JSON {
            continue;
        }
        match described.get(path.as_str()) {
            Some(item) if item.sha256 == *hex && item.size == *size => {}
            Some(_) => {
                return Err(BundleError::Integrity(format!(
                    "MEDIA.json describes {path} differently from SHA256SUMS"
                )));
            }
            None => {
                return Err(BundleError::Integrity(format!(
                    "{path} is in SHA256SUMS but not in MEDIA.json"
                )));
            }
        }
    }
    if described.len() + 1 != hashes.len() {
        return Err(BundleError::Integrity(
            "MEDIA.json lists files SHA256SUMS does not".into(),
        ));
    }
    Ok(())
}

/// 6. Every OCI digest: blobs named by their hashes, and the layout's images exactly those
///    MEDIA.json lists. What the images hold.
fn oci_digests(
    dir: &Path,
    doc: &MediaDoc,
    hashes: &sums::Hashes,
    run: &mut Run,
) -> Result<Vec<oci::ImageSummary>, BundleError> {
    if !dir.join("images/index.json").exists() {
        if !doc.images.is_empty() {
            return Err(BundleError::Layout(
                "MEDIA.json lists images but images/index.json is missing".into(),
            ));
        }
        return Ok(Vec::new());
    }
    let blob_sizes: BTreeMap<String, u64> = hashes
        .iter()
        .filter(|(p, _)| p.starts_with("images/blobs/sha256/"))
        .map(|(_, (h, s))| (h.clone(), *s))
        .collect();
    for (p, (h, _)) in hashes {
        if let Some(name) = p.strip_prefix("images/blobs/sha256/")
            && name != h
        {
            return Err(BundleError::Layout(format!(
                "{p} is not named by its SHA-256 ({h})"
            )));
        }
    }
    let omitted = doc
        .since
        .as_ref()
        .map(|s| s.omitted_blobs.as_slice())
        .unwrap_or_default();
    let images = oci::inspect(&dir.join("images"), &blob_sizes, omitted)?;
    for entry in &doc.images {
        let found = images.iter().find(|i| i.reference == entry.reference);
        match found {
            Some(i) if i.digest == entry.digest => {}
            Some(i) => {
                return Err(BundleError::Layout(format!(
                    "image {} is {} in images/index.json but {} in MEDIA.json",
                    entry.reference, i.digest, entry.digest
                )));
            }
            None => {
                return Err(BundleError::Layout(format!(
                    "image {} is missing from images/index.json",
                    entry.reference
                )));
            }
        }
    }
    if images.len() != doc.images.len() {
        return Err(BundleError::Layout(
            "images/index.json holds images MEDIA.json does not list".into(),
        ));
    }
    let blobs: usize = images.iter().map(|i| i.blobs.len()).sum();
    run.ok(
        "OCI layout",
        format!(
            "{} image(s), {blobs} blob references, every digest matches",
            images.len()
        ),
    );
    Ok(images)
}

/// 7. The provenance, when the media holds one: its DSSE signature by the media key, and every
///    subject it names held with its hash.
fn provenance_signature(
    dir: &Path,
    key: &MediaPublicKey,
    hashes: &sums::Hashes,
    run: &mut Run,
) -> Result<(), BundleError> {
    if !hashes.contains_key(media::PROVENANCE) {
        return Ok(());
    }
    let env = meshguard_license::dsse::Envelope::from_json(
        &read(dir, media::PROVENANCE, "")?,
        media::PROVENANCE,
    )?;
    let payload = env
        .verify_with(
            provenance::PAYLOAD_TYPE,
            key.ed25519(),
            &key.key_id(),
            media::PROVENANCE,
        )
        .map_err(|e| BundleError::Signature(e.to_string()))?;
    let statement: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| BundleError::Integrity(format!("{}: {e}", media::PROVENANCE)))?;
    let subjects = statement["subject"].as_array().cloned().unwrap_or_default();
    for s in &subjects {
        let name = s["name"].as_str().unwrap_or_default();
        let want = s["digest"]["sha256"].as_str().unwrap_or_default();
        if hashes.get(name).is_none_or(|(h, _)| h != want) {
            return Err(BundleError::Integrity(format!(
                "the provenance names {name} with sha256 {want}, which the media does not hold"
            )));
        }
    }
    run.ok(
        "provenance",
        format!("DSSE signature verifies; {} subjects match", subjects.len()),
    );
    Ok(())
}

/// 8. The files the gateway loads only with the media key's own signature beside them.
fn key_signed_files(
    dir: &Path,
    key: &MediaPublicKey,
    hashes: &sums::Hashes,
    run: &mut Run,
) -> Result<(), BundleError> {
    for (path, step) in [
        (media::POLICY_BUNDLE, "policy bundle"),
        (media::EGRESS_ALLOWLIST, "egress allowlist"),
    ] {
        if hashes.contains_key(path) {
            let bytes = read(dir, path, "")?;
            let sig = read(
                dir,
                &format!("{path}.minisig"),
                &format!("the {step} is unsigned"),
            )?;
            key.verify(&bytes, &String::from_utf8_lossy(&sig), path)?;
            run.ok(step, format!("{path} signature verifies"));
        }
    }
    Ok(())
}

/// 9. Terraform providers: zh: and h1: against the zips.
fn terraform_providers(
    dir: &Path,
    doc: &MediaDoc,
    hashes: &sums::Hashes,
    run: &mut Run,
) -> Result<(), BundleError> {
    for p in &doc.providers {
        let (hex, _) = hashes
            .get(&p.path)
            .ok_or_else(|| BundleError::Integrity(format!("{} is not on the media", p.path)))?;
        if p.zh != format!("zh:{hex}") {
            return Err(BundleError::Integrity(format!(
                "{}: zh: in MEDIA.json is not the zip's hash",
                p.path
            )));
        }
        let h1 = h1_of_zip(&dir.join(&p.path))?;
        if h1 != p.h1 {
            return Err(BundleError::Integrity(format!(
                "{}: h1: in MEDIA.json ({}) is not the package's ({h1})",
                p.path, p.h1
            )));
        }
    }
    if !doc.providers.is_empty() {
        run.ok(
            "terraform providers",
            format!("{} package(s), h1: and zh: match", doc.providers.len()),
        );
    }
    Ok(())
}

/// 10. The gateway build MEDIA.json records (read from the binary at create): said, and a
///     release build's vendor key must be the one given to check the license with.
fn gateway_build(doc: &MediaDoc, opts: &Options, run: &mut Run) -> Result<(), BundleError> {
    let Some(b) = &doc.build else {
        let why = if doc.images.is_empty() {
            "no gateway image on the media, so no build record"
        } else {
            "no build record: the media holds no meshguard-gateway binary, or was made before keyed builds"
        };
        run.ok("build", why);
        return Ok(());
    };
    if let (Some(built_for), Some(given)) = (&b.vendor_key_id, &opts.license_pubkey)
        && *built_for != given.key_id()
    {
        return Err(BundleError::Key(format!(
            "the media's gateway is a release build for vendor key {built_for}, but the license \
             key given (--license-pubkey) is vendor key {}: that gateway licenses only with its \
             own key; check with the vendor key the media was built for",
            given.key_id()
        )));
    }
    run.ok("build", b.describe());
    Ok(())
}

/// 11. The license: signed by the vendor's key when given (else a well-formed envelope), and
///     its encrypted form an age file.
fn license(dir: &Path, doc: &MediaDoc, opts: &Options, run: &mut Run) -> Result<(), BundleError> {
    let Some(l) = &doc.license else {
        return Ok(());
    };
    let bytes = read(dir, &l.path, "")?;
    match &opts.license_pubkey {
        Some(k) => {
            let signed = meshguard_license::SignedLicense::verify(&bytes, k, &l.path)?;
            run.ok(
                "license",
                format!(
                    "{} for {} (sequence {}) verifies with vendor key {}",
                    signed.license.id,
                    signed.license.customer,
                    signed.license.sequence,
                    k.key_id()
                ),
            );
        }
        None => {
            meshguard_license::dsse::Envelope::from_json(&bytes, &l.path)?;
            run.ok(
                "license",
                format!(
                    "{} present; signature not checked (no --license-pubkey)",
                    l.path
                ),
            );
        }
    }
    if let Some(enc) = &l.encrypted {
        let bytes = read(dir, enc, "")?;
        if !meshguard_license::seal::is_age(&bytes) {
            return Err(BundleError::Integrity(format!("{enc} is not an age file")));
        }
        run.ok(
            "license",
            format!("{enc} is age-encrypted to {}", l.recipients.join(", ")),
        );
    }
    Ok(())
}

/// `h1:` of a provider zip, from the files inside it.
pub fn h1_of_zip(path: &Path) -> Result<String, BundleError> {
    use std::io::Read as _;
    let f = fs::File::open(path).map_err(|e| BundleError::io("read", path, e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| BundleError::Integrity(format!("{} is not a zip: {e}", path.display())))?;
    let mut files = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| BundleError::Integrity(format!("{}: {e}", path.display())))?;
        if entry.is_dir() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| BundleError::io("read", path, e))?;
        let name = entry
            .name()
            .map_err(|e| BundleError::Integrity(format!("{}: {e}", path.display())))?
            .into_owned();
        files.push((name, bytes));
    }
    Ok(crate::tfmirror::h1_hash(
        files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    ))
}

/// Writes `PREFIX.txt` and `PREFIX.json`.
pub fn write_transcript(t: &Transcript, prefix: &Path) -> Result<(PathBuf, PathBuf), BundleError> {
    let txt = prefix.with_extension("txt");
    let json = prefix.with_extension("json");
    fsx::write_atomic(&txt, t.text().as_bytes())?;
    let mut bytes = serde_json::to_vec_pretty(t).expect("serializes");
    bytes.push(b'\n');
    fsx::write_atomic(&json, &bytes)?;
    Ok((txt, json))
}
