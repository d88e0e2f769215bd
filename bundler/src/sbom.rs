//! CycloneDX 1.6 JSON SBOMs: one per image, one per project binary, one for the media.
//!
//! Written with serde_json rather than `cyclonedx-bom`: that crate (0.8) emits specVersion 1.5
//! at most, and 1.6 is what the media promises. The documents are checked against the official
//! schemas by `bundler/tests/media/verifiers/validate-cyclonedx.py` in the tests.
//!
//! Serial numbers are derived from the content, and times from `SOURCE_DATE_EPOCH`, so the same
//! inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::oci::{Descriptor, ImageSummary};
use crate::{BundleError, fsx};

pub const TOOL: &str = "meshguard-bundle";
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A UUID (version 5 layout) from the SHA-256 of `seed`.
pub fn uuid_from(seed: &[u8]) -> String {
    let h = fsx::sha256_hex(seed);
    let mut b = hex::decode(&h[..32]).expect("hex");
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn document(timestamp: &str, subject: Value, components: Vec<Value>, deps: Vec<Value>) -> Value {
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{
                "type": "application",
                "name": TOOL,
                "version": TOOL_VERSION,
            }]},
            "component": subject,
        },
        "components": components,
    });
    if !deps.is_empty() {
        doc["dependencies"] = Value::Array(deps);
    }
    let seed = serde_json::to_vec(&doc).expect("serializes");
    doc["serialNumber"] = format!("urn:uuid:{}", uuid_from(&seed)).into();
    doc
}

fn prop(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

fn oci_purl(reference: &str, digest: &str) -> String {
    let name = reference
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or(reference, |(n, _)| n);
    let last = name.rsplit('/').next().unwrap_or(name);
    format!("pkg:oci/{last}@{}", digest.replace(':', "%3A"))
}

/// The SBOM of one image: what its configuration reveals (platform, creation time, history,
/// labels, entrypoint, exposed ports, and the names, not values, of its environment variables,
/// which may hold secrets), its layers, and every regular file in them with its SHA-256; a
/// file that is a binary of `workspace` carries that binary's crates.
pub fn image(
    img: &ImageSummary,
    layout: &Path,
    workspace: Option<&Workspace>,
    timestamp: &str,
) -> Result<Value, BundleError> {
    let mut props = vec![
        prop("oci:reference", &img.reference),
        prop("oci:mediaType", &img.media_type),
    ];
    let mut components = Vec::new();
    let mut seen = BTreeSet::new();
    for (manifest, parsed, config) in &img.manifests {
        let platform = format!(
            "{}/{}",
            config["os"].as_str().unwrap_or("unknown"),
            config["architecture"].as_str().unwrap_or("unknown")
        );
        props.push(prop("oci:platform", &platform));
        props.push(prop("oci:manifest", &manifest.digest));
        props.push(prop("oci:config", &parsed.config.digest));
        config_props(config, &mut props);
        let history: Vec<&Value> = config["history"]
            .as_array()
            .map(|h| h.iter().collect())
            .unwrap_or_default();
        for (i, layer) in parsed.layers.iter().enumerate() {
            if !seen.insert(layer.digest.clone()) {
                continue;
            }
            components.push(layer_component(layer, &platform, &history, i));
            let blob = layout.join("blobs/sha256").join(layer.hex()?);
            if !blob.exists() {
                // Differential media: the layer is on the older media, whose SBOM lists it.
                continue;
            }
            for file in layer_files(&blob, &layer.media_type, &img.reference)? {
                components.push(file_component(layer, &file, workspace, timestamp)?);
            }
        }
    }
    let subject = json!({
        "type": "container",
        "bom-ref": img.digest,
        "name": img.reference,
        "version": img.digest,
        "purl": oci_purl(&img.reference, &img.digest),
        "hashes": [{"alg": "SHA-256", "content": img.digest.trim_start_matches("sha256:")}],
        "properties": props,
    });
    Ok(document(timestamp, subject, components, Vec::new()))
}

/// What an image configuration reveals, as properties: creation time, the names (not values)
/// of its environment variables, entrypoint and command, user, working directory, exposed
/// ports and labels.
fn config_props(config: &Value, props: &mut Vec<Value>) {
    let c = &config["config"];
    if let Some(t) = config["created"].as_str() {
        props.push(prop("oci:created", t));
    }
    if let Some(env) = c["Env"].as_array() {
        for e in env.iter().filter_map(Value::as_str) {
            props.push(prop("oci:env-name", e.split('=').next().unwrap_or(e)));
        }
    }
    for key in ["Entrypoint", "Cmd"] {
        if let Some(v) = c[key].as_array() {
            props.push(prop(
                &format!("oci:{}", key.to_lowercase()),
                serde_json::to_string(v).unwrap_or_default(),
            ));
        }
    }
    if let Some(u) = c["User"].as_str().filter(|u| !u.is_empty()) {
        props.push(prop("oci:user", u));
    }
    if let Some(w) = c["WorkingDir"].as_str().filter(|w| !w.is_empty()) {
        props.push(prop("oci:working-dir", w));
    }
    if let Some(ports) = c["ExposedPorts"].as_object() {
        for p in ports.keys() {
            props.push(prop("oci:exposed-port", p));
        }
    }
    if let Some(labels) = c["Labels"].as_object() {
        for (k, v) in labels {
            props.push(prop(
                &format!("oci:label:{k}"),
                v.as_str().unwrap_or_default(),
            ));
        }
    }
}

/// The `i`th layer of an image as a component, with the history entry that made it.
fn layer_component(layer: &Descriptor, platform: &str, history: &[&Value], i: usize) -> Value {
    let mut lp = vec![
        prop("oci:mediaType", &layer.media_type),
        prop("oci:size", layer.size.to_string()),
        prop("oci:platform", platform),
    ];
    // Layer i matches the i-th history entry that is not an empty layer.
    if let Some(h) = history
        .iter()
        .filter(|h| h["empty_layer"].as_bool() != Some(true))
        .nth(i)
        && let Some(by) = h["created_by"].as_str()
    {
        lp.push(prop("oci:created-by", by));
    }
    json!({
        "type": "file",
        "bom-ref": layer.digest,
        "name": format!("layer {}", layer.digest),
        "hashes": [{"alg": "SHA-256", "content": layer.hex().unwrap_or_default()}],
        "properties": lp,
    })
}

/// A regular file of a layer as a component; a binary `workspace` builds carries its crates.
fn file_component(
    layer: &Descriptor,
    file: &LayerFile,
    workspace: Option<&Workspace>,
    timestamp: &str,
) -> Result<Value, BundleError> {
    let bom_ref = format!("{}:{}", layer.digest, file.path);
    let mut c = json!({
        "type": "file",
        "bom-ref": bom_ref,
        "name": file.path,
        "hashes": [{"alg": "SHA-256", "content": file.sha256}],
        "properties": [
            prop("oci:layer", &layer.digest),
            prop("file:size", file.size.to_string()),
            prop("file:mode", format!("{:o}", file.mode)),
        ],
    });
    let name = file.path.rsplit('/').next().unwrap_or_default();
    if let Some(ws) = workspace
        && file.path.contains("/bin/")
        && ws.builds(name)
    {
        let bin = ws.binary(name, timestamp)?;
        // Nested under the file, so their references are made unique to it (two binaries of
        // one image share most crates).
        let mut nested = vec![bin["metadata"]["component"].clone()];
        nested.extend(bin["components"].as_array().into_iter().flatten().cloned());
        for n in &mut nested {
            let r = n["bom-ref"].as_str().unwrap_or_default().to_owned();
            n["bom-ref"] = json!(format!("{bom_ref}#{r}"));
        }
        c["components"] = json!(nested);
    }
    Ok(c)
}

/// One regular file of a layer.
#[derive(Debug)]
struct LayerFile {
    path: String,
    sha256: String,
    size: u64,
    mode: u32,
}

/// The regular files of a tar layer (plain, gzip or zstd), each hashed as it is read; a layer
/// of another media type (an artifact, not a filesystem) lists nothing.
fn layer_files(
    blob: &Path,
    media_type: &str,
    reference: &str,
) -> Result<Vec<LayerFile>, BundleError> {
    let f = std::fs::File::open(blob).map_err(|e| BundleError::io("read", blob, e))?;
    let f = std::io::BufReader::new(f);
    let reader: Box<dyn std::io::Read> = if media_type.ends_with("+gzip")
        || media_type.ends_with(".tar.gzip")
    {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
        Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| BundleError::io("read", blob, e))?)
    } else if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
        Box::new(f)
    } else {
        return Ok(Vec::new());
    };
    let bad = |e: std::io::Error| {
        BundleError::Layout(format!(
            "a layer of {reference} ({}) is not a readable {media_type}: {e}",
            blob.display()
        ))
    };
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let path = format!("/{}", path.trim_start_matches("./").trim_start_matches('/'));
        let mode = entry.header().mode().unwrap_or(0);
        let (sha256, size) = fsx::sha256_reader(&mut entry).map_err(bad)?;
        out.push(LayerFile {
            path,
            sha256,
            size,
            mode,
        });
    }
    Ok(out)
}

fn host_triple() -> &'static str {
    if cfg!(all(target_arch = "aarch64", target_os = "linux")) {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// Cargo's old `license` form (`MIT/Apache-2.0`, deprecated but still published) as the SPDX
/// expression it means (`MIT OR Apache-2.0`); an SPDX expression is returned as it is.
pub fn spdx_expression(cargo_license: &str) -> String {
    if !cargo_license.contains('/') {
        return cargo_license.trim().to_owned();
    }
    cargo_license
        .split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A cargo workspace, read once: its packages and dependency graph (`cargo metadata` against
/// the lock file) and the registry checksum of every crate in its `Cargo.lock`.
#[derive(Debug)]
pub struct Workspace {
    dir: std::path::PathBuf,
    meta: Value,
    /// (name, version) -> SHA-256 of the `.crate` file, as Cargo.lock records it.
    checksums: BTreeMap<(String, String), String>,
}

impl Workspace {
    pub fn load(workspace: &Path) -> Result<Self, BundleError> {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            // Not `--offline`: metadata reads the manifest of every crate in the lock file's
            // graph, dev-dependencies included, and a fresh machine that built only the
            // binaries has not downloaded those yet (the README's first command failed there).
            // Cargo fetches what is missing, or stays offline when CARGO_NET_OFFLINE says so.
            .args(["metadata", "--format-version", "1", "--locked"])
            // The platform the binaries are built for: only its dependencies are in them.
            .args(["--filter-platform", host_triple(), "--manifest-path"])
            .arg(workspace.join("Cargo.toml"))
            .output()
            .map_err(|e| {
                BundleError::Input(format!(
                    "cannot run cargo metadata in {}: {e}",
                    workspace.display()
                ))
            })?;
        if !out.status.success() {
            return Err(BundleError::Input(format!(
                "cargo metadata failed in {}: {}",
                workspace.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let meta: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| BundleError::Input(format!("cargo metadata printed no JSON: {e}")))?;
        let lock = workspace.join("Cargo.lock");
        let text = std::fs::read_to_string(&lock).map_err(|e| BundleError::io("read", &lock, e))?;
        Ok(Self {
            dir: workspace.to_owned(),
            meta,
            checksums: lock_checksums(&text),
        })
    }

    fn packages(&self) -> BTreeMap<&str, &Value> {
        self.meta["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["id"].as_str()?, p)))
            .collect()
    }

    /// The package that builds the binary `bin`.
    fn owner(&self, bin: &str) -> Option<&Value> {
        self.meta["packages"].as_array()?.iter().find(|p| {
            p["targets"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["name"] == bin
                        && t["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
            })
        })
    }

    /// Whether a package of the workspace builds a binary named `bin`.
    pub fn builds(&self, bin: &str) -> bool {
        self.owner(bin).is_some()
    }

    /// The SBOM of a project binary: the crates in its dependency closure, each with its purl,
    /// version, SPDX license expression and, for registry crates, the SHA-256 Cargo.lock holds.
    pub fn binary(&self, bin: &str, timestamp: &str) -> Result<Value, BundleError> {
        let packages = self.packages();
        let owner = self.owner(bin).ok_or_else(|| {
            BundleError::Input(format!(
                "no package in {} builds a binary named {bin}",
                self.dir.display()
            ))
        })?;
        let root = owner["id"].as_str().unwrap_or_default().to_owned();
        let (seen, mut deps) = self.closure(&packages, &root);
        let mut components: Vec<Value> = seen
            .iter()
            .filter(|id| **id != root)
            .filter_map(|id| packages.get(id.as_str()))
            .map(|p| self.crate_component(p))
            .collect();
        components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));
        deps.sort_by(|a, b| a["ref"].as_str().cmp(&b["ref"].as_str()));
        let subject = json!({
            "type": "application",
            "bom-ref": purl(owner),
            "name": bin,
            "version": owner["version"],
            "purl": purl(owner),
        });
        Ok(document(timestamp, subject, components, deps))
    }

    /// The package ids in the run-time dependency closure of `root` (itself included), and
    /// each package's dependencies as CycloneDX `dependencies`.
    fn closure(
        &self,
        packages: &BTreeMap<&str, &Value>,
        root: &str,
    ) -> (BTreeSet<String>, Vec<Value>) {
        let nodes: BTreeMap<&str, &Value> = self.meta["resolve"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n["id"].as_str()?, n)))
            .collect();
        // Normal (run-time) dependencies only: what ends up in the binary.
        let normal_deps = |id: &str| -> Vec<String> {
            nodes
                .get(id)
                .and_then(|n| n["deps"].as_array())
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null()))
                })
                .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
                .collect()
        };
        let mut seen = BTreeSet::new();
        let mut queue = vec![root.to_owned()];
        let mut deps = Vec::new();
        while let Some(id) = queue.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let children = normal_deps(&id);
            if let Some(p) = packages.get(id.as_str()) {
                deps.push(json!({
                    "ref": purl(p),
                    "dependsOn": children.iter().filter_map(|c| packages.get(c.as_str())).map(|c| purl(c)).collect::<BTreeSet<_>>(),
                }));
            }
            queue.extend(children);
        }
        (seen, deps)
    }

    /// A crate as a library component, with its license and Cargo.lock checksum when known.
    fn crate_component(&self, p: &Value) -> Value {
        let mut c = json!({
            "type": "library",
            "bom-ref": purl(p),
            "name": p["name"],
            "version": p["version"],
            "purl": purl(p),
        });
        if let Some(l) = p["license"].as_str() {
            c["licenses"] = json!([{"expression": spdx_expression(l)}]);
        }
        let key = (
            p["name"].as_str().unwrap_or("").to_owned(),
            p["version"].as_str().unwrap_or("").to_owned(),
        );
        if let Some(sum) = self.checksums.get(&key) {
            c["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
        }
        c
    }
}

/// A cargo package's purl.
fn purl(p: &Value) -> String {
    format!(
        "pkg:cargo/{}@{}",
        p["name"].as_str().unwrap_or(""),
        p["version"].as_str().unwrap_or("")
    )
}

/// `(name, version) -> checksum` of every `[[package]]` in a Cargo.lock. Read by hand: the
/// lock file's package entries are flat `key = "value"` lines, and a TOML parser would be a
/// new dependency for these three keys.
fn lock_checksums(text: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let (mut name, mut version, mut sum) = (None, None, None);
    let mut flush = |n: &mut Option<String>, v: &mut Option<String>, c: &mut Option<String>| {
        if let (Some(n), Some(v), Some(c)) = (n.take(), v.take(), c.take()) {
            out.insert((n, v), c);
        }
    };
    for line in text.lines().map(str::trim) {
        if line == "[[package]]" {
            flush(&mut name, &mut version, &mut sum);
            continue;
        }
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        let v = v.trim_matches('"').to_owned();
        match k {
            "name" => name = Some(v),
            "version" => version = Some(v),
            "checksum" => sum = Some(v),
            _ => {}
        }
    }
    flush(&mut name, &mut version, &mut sum);
    out
}

/// The SBOM of the media: every file with its hash, and every image.
pub fn media(
    product: &str,
    version: &str,
    files: &crate::sums::Hashes,
    images: &[ImageSummary],
    timestamp: &str,
) -> Value {
    let mut components: Vec<Value> = images
        .iter()
        .map(|i| {
            json!({
                "type": "container",
                "bom-ref": format!("image:{}", i.reference),
                "name": i.reference,
                "version": i.digest,
                "purl": oci_purl(&i.reference, &i.digest),
            })
        })
        .collect();
    components.extend(
        files
            .iter()
            .filter(|(p, _)| !p.starts_with("images/blobs/"))
            .map(|(path, (hex, size))| {
                json!({
                    "type": "file",
                    "bom-ref": format!("file:{path}"),
                    "name": path,
                    "hashes": [{"alg": "SHA-256", "content": hex}],
                    "properties": [prop("meshguard:size", size.to_string())],
                })
            }),
    );
    let subject = json!({
        "type": "platform",
        "bom-ref": format!("media:{product}@{version}"),
        "name": format!("{product} offline media"),
        "version": version,
    });
    document(timestamp, subject, components, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::spdx_expression;

    #[test]
    fn cargo_slash_licenses_become_spdx_or_expressions() {
        assert_eq!(spdx_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(spdx_expression("Apache-2.0 / MIT"), "Apache-2.0 OR MIT");
        assert_eq!(spdx_expression("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(spdx_expression("Unlicense"), "Unlicense");
    }
}
