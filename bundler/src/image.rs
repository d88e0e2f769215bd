//! OCI images of the product, built from files on disk with no container daemon.
//!
//! One image is one gzip layer holding a minimal root filesystem (the files given, their parent
//! directories, nothing else), its configuration and its manifest, written into an OCI layout.
//! Every field that could vary between builds comes from the spec: modification times are
//! `created`, owners are numeric, entries are sorted, the gzip header carries no time or name.
//! So two builds of the same files with the same `SOURCE_DATE_EPOCH` give the same digests.
//!
//! Written by hand rather than with `umoci` or `buildah`: both need an unpacked root filesystem
//! owned by the right users (root, or user namespaces), and neither promises byte-identical
//! output; the layer format is a plain tar stream, which the `tar` crate writes for us.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};

use meshguard_license::VendorPublicKey;
use meshguard_license::slot::{self, Keying};

use crate::BundleError;
use crate::fsx;
use crate::oci::{Descriptor, Layout, MANIFEST_MEDIA_TYPE};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// What one file of the root filesystem holds.
#[derive(Debug, Clone)]
pub enum Content {
    /// Copied from the build host.
    File(PathBuf),
    Bytes(Vec<u8>),
    Dir,
}

/// One entry of the root filesystem.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Absolute path inside the image, e.g. `/usr/local/bin/meshguard-gateway`.
    pub path: String,
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl Entry {
    pub fn file(path: &str, from: impl Into<PathBuf>, mode: u32) -> Self {
        Self {
            path: path.to_owned(),
            content: Content::File(from.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    pub fn bytes(path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            path: path.to_owned(),
            content: Content::Bytes(bytes.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    pub fn dir(path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        Self {
            path: path.to_owned(),
            content: Content::Dir,
            mode,
            uid,
            gid,
        }
    }
}

/// An image to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The reference it is tagged with in the layout, e.g. `meshguard/gateway:0.1.0`.
    pub reference: String,
    pub entries: Vec<Entry>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// `uid:gid`; never root for the product's images.
    pub user: String,
    pub working_dir: String,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch: every time in the image (`SOURCE_DATE_EPOCH`).
    pub created: i64,
}

/// What [`build`] made.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Descriptor,
    pub config_digest: String,
    pub layer_digest: String,
}

/// `/a/b/c` → `a/b/c`, refusing what would not stay inside the root.
fn relative(path: &str) -> Result<String, BundleError> {
    let rel = path.trim_start_matches('/').trim_end_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(BundleError::Input(format!(
            "image path {path:?} is not a plain absolute path"
        )));
    }
    Ok(rel.to_owned())
}

/// The uncompressed layer (a tar stream).
fn layer_tar(spec: &ImageSpec) -> Result<Vec<u8>, BundleError> {
    let mtime = u64::try_from(spec.created).unwrap_or(0);
    // Every entry by its relative path; parents that are not given become 0755 root dirs.
    let mut entries: BTreeMap<String, &Entry> = BTreeMap::new();
    for e in &spec.entries {
        let rel = relative(&e.path)?;
        if entries.insert(rel.clone(), e).is_some() {
            return Err(BundleError::Input(format!(
                "image {}: {} is given twice",
                spec.reference, e.path
            )));
        }
    }
    let mut parents = BTreeSet::new();
    for rel in entries.keys() {
        let mut p = rel.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !entries.contains_key(parent) {
                parents.insert(parent.to_owned());
            }
            p = parent;
        }
    }
    let implied = Entry::dir("/", 0o755, 0, 0);
    let mut all: BTreeMap<String, &Entry> = entries;
    for p in &parents {
        all.insert(p.clone(), &implied);
    }

    // Headers are filled in here, so nothing of the build host's files (times, owners) gets in.
    let mut tar = tar::Builder::new(Vec::new());
    // BTreeMap order puts `a` before `a/b` and siblings in byte order: parents come first.
    for (rel, e) in &all {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(mtime);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mode(e.mode);
        let (name, data): (String, std::borrow::Cow<'_, [u8]>) = match &e.content {
            Content::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                (format!("{rel}/"), Default::default())
            }
            Content::File(from) => {
                h.set_entry_type(tar::EntryType::Regular);
                let bytes =
                    std::fs::read(from).map_err(|err| BundleError::io("read", from, err))?;
                (rel.clone(), bytes.into())
            }
            Content::Bytes(b) => {
                h.set_entry_type(tar::EntryType::Regular);
                (rel.clone(), b.as_slice().into())
            }
        };
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, &name, data.as_ref())
            .map_err(|err| {
                BundleError::io("write layer entry", std::path::Path::new(&name), err)
            })?;
    }
    let tar = tar.into_inner().map_err(|err| {
        BundleError::io("finish layer", std::path::Path::new(&spec.reference), err)
    })?;
    Ok(tar)
}

/// The layer, gzipped with no time or file name in the header: the same tar always compresses
/// to the same bytes.
fn gzip(tar: &[u8], reference: &str) -> Result<Vec<u8>, BundleError> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(tar)
        .and_then(|_| gz.try_finish())
        .map_err(|e| BundleError::io("compress layer", std::path::Path::new(reference), e))?;
    gz.finish()
        .map_err(|e| BundleError::io("compress layer", std::path::Path::new(reference), e))
}

/// The image configuration of `spec`, its one layer `diff_id`.
fn image_config(spec: &ImageSpec, created: &str, diff_id: &str) -> Value {
    let ports: serde_json::Map<String, Value> = spec
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    let mut config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": spec.user,
            "Env": spec.env,
            "Entrypoint": spec.entrypoint,
            "WorkingDir": spec.working_dir,
            "Labels": spec.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{
            "created": created,
            "created_by": format!("{} {} image build", crate::sbom::TOOL, crate::sbom::TOOL_VERSION),
        }],
    });
    if !spec.cmd.is_empty() {
        config["config"]["Cmd"] = json!(spec.cmd);
    }
    if !ports.is_empty() {
        config["config"]["ExposedPorts"] = Value::Object(ports);
    }
    config
}

/// Builds the image `spec` into `layout` and tags it with `spec.reference`.
pub fn build(layout: &mut Layout, spec: &ImageSpec) -> Result<Built, BundleError> {
    if spec.user.is_empty()
        || spec.user.starts_with("0:")
        || spec.user == "0"
        || spec.user == "root"
    {
        return Err(BundleError::Input(format!(
            "image {}: the product's images run as a non-root user, not {:?}",
            spec.reference, spec.user
        )));
    }
    let created = crate::create::rfc3339(spec.created);
    let tar = layer_tar(spec)?;
    let diff_id = format!("sha256:{}", fsx::sha256_hex(&tar));
    let layer = gzip(&tar, &spec.reference)?;
    let layer_digest = layout.add_blob_bytes(&layer)?;
    let config = image_config(spec, &created, &diff_id);
    let config_bytes = serde_json::to_vec(&config).expect("config serializes");
    let config_digest = layout.add_blob_bytes(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": layer.len(),
        }],
        "annotations": {
            "org.opencontainers.image.created": created,
        },
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
    let manifest_digest = layout.add_blob_bytes(&manifest_bytes)?;
    let top = Descriptor {
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        digest: manifest_digest,
        size: manifest_bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: Some(json!({"architecture": "amd64", "os": "linux"})),
    };
    layout.tag(&spec.reference, top.clone());
    Ok(Built {
        manifest: top,
        config_digest,
        layer_digest,
    })
}

/// `/etc/passwd` and `/etc/group` for a root filesystem whose only login is `user` (`uid`),
/// plus root, which owns the files.
pub fn passwd_entries(user: &str, uid: u32) -> Vec<Entry> {
    vec![
        Entry::bytes(
            "/etc/passwd",
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\n{user}:x:{uid}:{uid}:{user}:/data:/sbin/nologin\n"
            ),
            0o644,
        ),
        Entry::bytes("/etc/group", format!("root:x:0:\n{user}:x:{uid}:\n"), 0o644),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(created: i64, body: &str) -> ImageSpec {
        let mut entries = passwd_entries("meshguard", 10001);
        entries.push(Entry::bytes("/usr/local/bin/hello", body.as_bytes(), 0o755));
        entries.push(Entry::dir("/tmp", 0o1777, 0, 0));
        entries.push(Entry::dir("/data", 0o750, 10001, 10001));
        ImageSpec {
            reference: "meshguard/test:1".into(),
            entries,
            entrypoint: vec!["/usr/local/bin/hello".into()],
            cmd: vec![],
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            user: "10001:10001".into(),
            working_dir: "/data".into(),
            exposed_ports: vec!["3100/tcp".into()],
            labels: BTreeMap::from([("org.opencontainers.image.version".into(), "1".into())]),
            created,
        }
    }

    fn digest_of(created: i64, body: &str) -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = Layout::create(dir.path()).unwrap();
        let built = build(&mut layout, &spec(created, body)).unwrap();
        let layer =
            std::fs::read(layout.blob_path(built.layer_digest.trim_start_matches("sha256:")))
                .unwrap();
        let mut names: Vec<String> =
            tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()))
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
        names.sort();
        (built.manifest.digest, names)
    }

    #[test]
    fn the_same_inputs_give_the_same_digest_and_any_change_another() {
        let (a, names) = digest_of(1_700_000_000, "x");
        assert_eq!(digest_of(1_700_000_000, "x").0, a);
        assert_ne!(digest_of(1_700_000_001, "x").0, a);
        assert_ne!(digest_of(1_700_000_000, "y").0, a);
        for want in [
            "etc/",
            "etc/passwd",
            "usr/",
            "usr/local/",
            "usr/local/bin/hello",
            "tmp/",
            "data/",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
    }

    #[test]
    fn the_gateway_copy_is_stamped_and_the_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meshguard-gateway");
        let mut body = vec![0x90u8; 4096];
        body.extend_from_slice(&slot::EMPTY);
        body.extend_from_slice(&[0xccu8; 4096]);
        std::fs::write(&file, &body).unwrap();
        let key = meshguard_license::VendorKey::generate().public();

        let (bytes, built) = gateway_binary(&file, Some(&key)).unwrap();
        assert_eq!(built.keying, Keying::Release(key.clone()));
        assert_eq!(
            slot::inspect(&bytes, "copy").unwrap(),
            Keying::Release(key.clone())
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            body,
            "the file is never changed"
        );
        assert_eq!(build_labels(&built.keying)[VENDOR_KEY_LABEL], key.key_id());

        let (_, plain) = gateway_binary(&file, None).unwrap();
        assert_eq!(plain.keying, Keying::Development);
        assert_eq!(build_labels(&plain.keying)[BUILD_LABEL], "development");

        // A binary with no slot (built before keyed builds) is unkeyed, and cannot be keyed.
        std::fs::write(&file, [0x90u8; 4096]).unwrap();
        assert_eq!(
            gateway_binary(&file, None).unwrap().1.keying,
            Keying::Development
        );
        let err = gateway_binary(&file, Some(&key)).unwrap_err().to_string();
        assert!(err.contains("no vendor-key slot"), "{err}");
    }

    #[test]
    fn root_and_escaping_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = Layout::create(dir.path()).unwrap();
        let mut s = spec(0, "x");
        s.user = "0:0".into();
        assert!(build(&mut layout, &s).is_err());
        let mut s = spec(0, "x");
        s.entries
            .push(Entry::bytes("/usr/../etc/shadow", "x", 0o600));
        assert!(build(&mut layout, &s).is_err());
    }
}

/// The shared libraries `binary` loads, as `ldd` resolves them on the build host: each one's
/// path as the loader asks for it, and the file it is.
pub fn shared_libraries(binary: &std::path::Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| BundleError::io("run ldd on", binary, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(BundleError::Input(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let p = rest.trim().split(" (").next().unwrap_or("").trim();
                if p == "not found" {
                    return Err(BundleError::Input(format!(
                        "{} needs {}, which the build host does not have",
                        binary.display(),
                        name.trim()
                    )));
                }
                p
            }
            None => line.split(" (").next().unwrap_or("").trim(),
        };
        if !path.starts_with('/') {
            continue; // linux-vdso: provided by the kernel
        }
        let real = std::fs::canonicalize(path)
            .map_err(|e| BundleError::io("resolve", std::path::Path::new(path), e))?;
        libs.push((path.to_owned(), real));
    }
    Ok(libs)
}

/// Where the product's images come from and what they are called.
#[derive(Debug, Clone)]
pub struct ProductBuild {
    /// Directory holding `meshguard-gateway`, `meshguard-bundle` and `meshguard-license`.
    pub bin_dir: PathBuf,
    /// Registry namespace, e.g. `meshguard` → `meshguard/gateway:VERSION`.
    pub namespace: String,
    pub version: String,
    /// The source commit the binaries were built from.
    pub revision: String,
    pub source: String,
    /// The SPDX license expression of the product.
    pub license: String,
    pub created: i64,
    /// The CA bundle the images trust (the build host's, e.g. `/etc/ssl/certs/ca-certificates.crt`).
    pub ca_bundle: PathBuf,
    /// The vendor's public key: the gateway image gets a copy of `meshguard-gateway` with it
    /// stamped into its slot (a release build). None: the binary as built (development).
    pub vendor_key: Option<VendorPublicKey>,
}

/// What the gateway binary that goes into the image is.
#[derive(Debug, Clone)]
pub struct GatewayBuild {
    /// What its slot says, read back from the bytes that go into the image.
    pub keying: Keying,
    /// How long stamping took (zero when nothing was stamped).
    pub stamping: std::time::Duration,
}

/// The gateway binary from `from`, stamped with `key` when given: the copy is stamped in memory,
/// the file on disk is never changed. Its keying is read back from the bytes that go into the
/// image, so the image's labels say what the binary is.
pub fn gateway_binary(
    from: &std::path::Path,
    key: Option<&VendorPublicKey>,
) -> Result<(Vec<u8>, GatewayBuild), BundleError> {
    let mut bytes = std::fs::read(from).map_err(|e| BundleError::io("read", from, e))?;
    let what = from.display().to_string();
    let started = std::time::Instant::now();
    if let Some(key) = key {
        slot::stamp(&mut bytes, key, &what)?;
    }
    let stamping = if key.is_some() {
        started.elapsed()
    } else {
        std::time::Duration::ZERO
    };
    let keying = keying_of(&bytes, &what)?;
    Ok((bytes, GatewayBuild { keying, stamping }))
}

/// What a gateway binary is: its slot read, or unkeyed (development) when it has none (a build
/// from before keyed builds, like the previous release the site test upgrades from).
pub fn keying_of(bytes: &[u8], what: &str) -> Result<Keying, BundleError> {
    if !slot::present(bytes) {
        return Ok(Keying::Development);
    }
    Ok(slot::inspect(bytes, what)?)
}

/// The labels naming a gateway image's build. Informative only: `meshguard-bundle create`
/// reads the binary's slot itself and never trusts a label.
pub fn build_labels(keying: &Keying) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(BUILD_LABEL.to_owned(), keying.kind().to_owned())]);
    if let Some(k) = keying.key() {
        labels.insert(VENDOR_KEY_LABEL.to_owned(), k.key_id());
    }
    labels
}

/// The gateway image's label saying `release` or `development`.
pub const BUILD_LABEL: &str = "io.meshguard.build";
/// The gateway image's label naming the stamped vendor key's id.
pub const VENDOR_KEY_LABEL: &str = "io.meshguard.vendor-key-id";
/// Where the gateway binary sits in the product's gateway image.
pub const GATEWAY_PATH: &str = "/usr/local/bin/meshguard-gateway";

/// The non-root user the product's images run as.
pub const PRODUCT_UID: u32 = 10001;

/// The product's two images: `gateway` (control plane, guardian sidecar and egress proxy: one
/// binary, stamped with the vendor key when one is given) and `tools` (the bundle and license
/// CLIs the runbook's jobs run). The gateway binary as it went into the image comes back too.
pub fn product_specs(b: &ProductBuild) -> Result<(Vec<ImageSpec>, GatewayBuild), BundleError> {
    if !b.ca_bundle.is_file() {
        return Err(BundleError::Input(format!(
            "the CA bundle {} is missing; install Debian's ca-certificates (apt-get install ca-certificates)",
            b.ca_bundle.display()
        )));
    }
    // The gateway serves as control plane, guardian sidecar and egress proxy; the example
    // agent is the chart's stand-in for an agent's own program.
    let mut gateway = product_image(
        b,
        "gateway",
        &["meshguard-gateway", "meshguard-example-agent"],
        vec![GATEWAY_PATH.to_owned()],
        vec!["3100/tcp".to_owned()],
    )?;
    let (bytes, built) =
        gateway_binary(&b.bin_dir.join("meshguard-gateway"), b.vendor_key.as_ref())?;
    let entry = gateway
        .entries
        .iter_mut()
        .find(|e| e.path == GATEWAY_PATH)
        .expect("the gateway image holds the gateway");
    entry.content = Content::Bytes(bytes);
    gateway.labels.extend(build_labels(&built.keying));
    let tools = product_image(
        b,
        "tools",
        &["meshguard-bundle", "meshguard-license"],
        vec![],
        vec![],
    )?;
    Ok((vec![gateway, tools], built))
}

/// One product image: `bins` with the libraries they link, on the non-root user's files, the
/// CA bundle, `/tmp` and `/data`.
fn product_image(
    b: &ProductBuild,
    name: &str,
    bins: &[&str],
    entrypoint: Vec<String>,
    ports: Vec<String>,
) -> Result<ImageSpec, BundleError> {
    let mut entries = passwd_entries("meshguard", PRODUCT_UID);
    entries.push(Entry::file(
        "/etc/ssl/certs/ca-certificates.crt",
        &b.ca_bundle,
        0o644,
    ));
    entries.push(Entry::dir("/tmp", 0o1777, 0, 0));
    entries.push(Entry::dir(
        "/data",
        0o750,
        PRODUCT_UID.into(),
        PRODUCT_UID.into(),
    ));
    let mut libs = BTreeMap::new();
    for bin in bins {
        let from = b.bin_dir.join(bin);
        if !from.is_file() {
            return Err(BundleError::Input(format!(
                "{} is missing; build it first (cargo build --release -p meshguard-gateway -p meshguard-bundler -p meshguard-license)",
                from.display()
            )));
        }
        entries.push(Entry::file(&format!("/usr/local/bin/{bin}"), &from, 0o755));
        for (path, real) in shared_libraries(&from)? {
            libs.insert(path, real);
        }
    }
    for (path, real) in libs {
        entries.push(Entry::file(&path, real, 0o755));
    }
    Ok(ImageSpec {
        reference: format!("{}/{name}:{}", b.namespace, b.version),
        entries,
        entrypoint,
        cmd: Vec::new(),
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned(),
            "TMPDIR=/tmp".to_owned(),
        ],
        user: format!("{PRODUCT_UID}:{PRODUCT_UID}"),
        working_dir: "/data".to_owned(),
        exposed_ports: ports,
        labels: product_labels(b, name),
        created: b.created,
    })
}

/// The OCI annotations of a product image, as config labels.
fn product_labels(b: &ProductBuild, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.title".to_owned(),
            format!("{}/{name}", b.namespace),
        ),
        (
            "org.opencontainers.image.source".to_owned(),
            b.source.clone(),
        ),
        (
            "org.opencontainers.image.revision".to_owned(),
            b.revision.clone(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            b.version.clone(),
        ),
        (
            "org.opencontainers.image.created".to_owned(),
            crate::create::rfc3339(b.created),
        ),
        (
            "org.opencontainers.image.licenses".to_owned(),
            b.license.clone(),
        ),
    ])
}

/// What [`build_product`] made: each image's reference and manifest digest, and the gateway
/// binary's keying and stamping time.
#[derive(Debug, Clone)]
pub struct ProductBuilt {
    pub images: Vec<(String, String)>,
    pub keying: Keying,
    pub stamping: std::time::Duration,
}

/// Builds the product's images (`product_specs`) into a new OCI layout at `out`. The layout is
/// built beside `out` and renamed into place once every image is in it, so a failed build
/// leaves nothing that looks complete.
pub fn build_product(b: &ProductBuild, out: &std::path::Path) -> Result<ProductBuilt, BundleError> {
    let (specs, gateway) = product_specs(b)?;
    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| BundleError::io("remove the unfinished layout", &partial, e))?;
    }
    let mut layout = Layout::create(&partial)?;
    let mut images = Vec::new();
    for spec in &specs {
        let image = build(&mut layout, spec)?;
        images.push((spec.reference.clone(), image.manifest.digest));
    }
    layout.write_index()?;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .map_err(|e| BundleError::io("remove the previous layout", out, e))?;
    }
    meshguard_common::fsx::rename_durably(&partial, out)
        .map_err(|e| BundleError::io("move the new layout into place", out, e))?;
    Ok(ProductBuilt {
        images,
        keying: gateway.keying,
        stamping: gateway.stamping,
    })
}
