//! The fuzz targets: every parser that reads untrusted input, called as the product calls it,
//! with the seeds mutations start from. Shared by the fuzzer (`main.rs`) and the regression test
//! that replays every input it ever found (`regressions.rs`). A target passes an input if it
//! returns (an error is fine); a panic is a finding.

use std::sync::OnceLock;

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};

pub(crate) const TARGETS: &[&str] = &[
    "policy_yaml",
    "checkpoint_note",
    "witness_request",
    "sha256sums",
    "media_manifest",
    "license_envelope",
    "license_payload",
    "activation_request",
    "tar_volume",
    "provider_values",
    "proxy_request",
];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A log key and a note it signed, made once per run.
struct Fixtures {
    vkey: String,
    note: String,
    vendor: meshguard_license::VendorKey,
    license: Vec<u8>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let name = "fuzz.example/meshguard-audit";
        let public = key.verifying_key().to_bytes();
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(b"\n\x01");
        h.update(public);
        let id: [u8; 4] = h.finalize()[..4].try_into().unwrap();
        let mut raw = vec![0x01];
        raw.extend_from_slice(&public);
        let vkey = format!("{name}+{}+{}", hex_encode(&id), B64.encode(raw));
        let text = format!("{name}\n12\n{}\n", B64.encode([9u8; 32]));
        let sig = key.sign(text.as_bytes());
        let mut blob = id.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        let note = format!("{text}\n\u{2014} {name} {}\n", B64.encode(blob));
        let license = br#"{"schema":"meshguard.license/v1","id":"lic_fuzz","customer":"Fuzz","edition":"enterprise","deploymentMode":"air-gapped","entitlements":{"maxAgents":5,"features":[]},"regions":["*"],"notBefore":"2026-01-01T00:00:00Z","expires":"2027-01-01T00:00:00Z","graceDays":30,"sequence":1,"issuedAt":"2026-01-01T00:00:00Z"}"#.to_vec();
        Fixtures {
            vkey,
            note,
            vendor: meshguard_license::VendorKey::generate(),
            license,
        }
    })
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The repository's root: the first directory above this crate that holds the examples (the
/// targets are shared by `tests/` and by `tests/fuzz/afl/`).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("examples/policies").is_dir())
        .expect("the repository's examples/policies above the crate")
        .to_owned()
}

/// Where mutations start.
pub(crate) fn seeds(target: &str) -> Vec<Vec<u8>> {
    let f = fixtures();
    match target {
        "policy_yaml" => std::fs::read_dir(root().join("examples/policies"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .chain([
                std::fs::read(root().join("examples/regulated/policies/hipaa-phi.yaml")).unwrap(),
                b"name: a\nappliesTo: {trustTiers: [verified], tags: [x]}\nrules:\n  - name: r\n    effect: allow\n    actions: ['read:*']\n    conditions: {path: ['/a/**'], action: ['read:*']}\nrateLimits: [{perMinute: 5}]\n".to_vec(),
            ])
            .collect(),
        "checkpoint_note" => vec![
            f.note.clone().into_bytes(),
            format!("{}\n{}", f.vkey, f.note).into_bytes(),
        ],
        "witness_request" => vec![
            format!("old 0\n\n{}", f.note).into_bytes(),
            format!(
                "old 5\n{}\n{}\n\n{}",
                B64.encode([1u8; 32]),
                B64.encode([2u8; 32]),
                f.note
            )
            .into_bytes(),
        ],
        "sha256sums" => vec![
            format!(
                "{}  MEDIA.json\n{}  images/blobs/sha256/ab\n",
                "a".repeat(64),
                "0".repeat(64)
            )
            .into_bytes(),
        ],
        "media_manifest" => vec![
            b"schema: meshguard.media/v1\nproduct: meshguard\nversion: 1.4.0\nprofile: air-gapped\nimages:\n  - ref: meshguard/gateway:1.4.0\n    from: oci:layout:meshguard/gateway:1.4.0\nchart: helm/meshguard-gateway\nterraform:\n  provider:\n    version: 0.1.0\n    binaries: {linux_amd64: dist/p}\n  modules: modules\npolicies: examples/policies\nlicense: {file: a.license, recipients: [age1x]}\nscans: [r.json]\nsbom: {workspace: ., binaries: [meshguard-gateway]}\nsource: {repository: https://x, revision: 0123456789abcdef0123456789abcdef01234567}\n".to_vec(),
        ],
        "license_envelope" => vec![
            meshguard_license::dsse::Envelope::sign(
                meshguard_license::document::LICENSE_PAYLOAD_TYPE,
                &f.license,
                &f.vendor,
            )
            .to_json(),
        ],
        "license_payload" => vec![f.license.clone()],
        "activation_request" => vec![
            br#"{"schema":"meshguard.activation-request/v1","licenseId":"lic_1","installationId":"inst_1","nonce":"00","createdAt":"2026-01-01T00:00:00Z","deploymentMode":"air-gapped","region":"eu","softwareVersion":"0.1.0"}"#.to_vec(),
        ],
        "tar_volume" => vec![small_tar()],
        "provider_values" => meshguard_provider::fuzzing::seeds(),
        // Rows of the attacker's probe (issue #32): method, path after /proxy/, headers, body.
        "proxy_request" => [
            "GET\nnotes/x?page=2&q=a%20b\n",
            "delete\nadmin/x\n",
            "PURGE\nadmin/x\n",
            "GET\nnotes/..;/admin/x\n",
            "GET\nnotes/%2e%2e;/admin/x\n",
            "GET\nnotes/%252e%252e/admin/x\n",
            "GET\nnotes/\u{ff0e}\u{ff0e}/admin/x\n",
            "GET\nnotes/a%20b/\n",
            "POST\nnotes/x?_method=DELETE\n",
            "GET\nnotes/x\nX-HTTP-Method-Override: DELETE\nX_Original_URL: /admin/x\n",
            "POST\nnotes/x\nContent-Type: application/x-www-form-urlencoded\n\n_method=DELETE&a=1",
            "POST\nnotes/x\nContent-Type: application/json\n\n{\"_method\":\"DELETE\"}",
        ]
        .into_iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        other => panic!("unknown target {other}"),
    }
}

fn small_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("media/dir/").unwrap();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("media/dir/file.txt").unwrap();
    h.set_mode(0o644);
    h.set_size(6);
    h.set_cksum();
    b.append(&h, &b"hello\n"[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("media/link").unwrap();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_link_name("dir/file.txt").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    b.into_inner().unwrap()
}

/// Runs one input through `target`.
pub(crate) fn run(target: &str, input: &[u8]) {
    let f = fixtures();
    let text = String::from_utf8_lossy(input);
    match target {
        "policy_yaml" => meshguard_gateway::bench_support::fuzz_policy(&text),
        "checkpoint_note" => {
            // The first line may be a vkey (so keys are fuzzed too), else the fixture's.
            let (vkey, note) = match text.split_once('\n') {
                Some((k, n)) if k.contains('+') => (k.to_owned(), n.to_owned()),
                _ => (f.vkey.clone(), text.to_string()),
            };
            meshguard_gateway::bench_support::fuzz_checkpoint(&vkey, &note);
            if let Ok(n) = meshguard_tlog::note::Note::parse(&note) {
                let _ = meshguard_tlog::note::Checkpoint::parse(n.text);
                if let Ok(v) = meshguard_tlog::note::Vkey::parse(&vkey) {
                    let _ = n.verify(&v);
                    let _ = meshguard_tlog::note::verify_cosignature(
                        &note,
                        note.lines().last().unwrap_or(""),
                        &v,
                    );
                    let _ = meshguard_tlog::note::cosigned_by(&note, &v);
                }
            }
        }
        "witness_request" => {
            if let Ok(r) = meshguard_tlog::witness::Request::parse(&text)
                && let Ok(n) = meshguard_tlog::note::Note::parse(r.checkpoint)
                && let Ok(c) = meshguard_tlog::note::Checkpoint::parse(n.text)
            {
                let _ = meshguard_tlog::merkle::verify_consistency(
                    r.old, c.size, &r.proof, &[0; 32], &c.root,
                );
            }
        }
        "sha256sums" => {
            let _ = meshguard_bundler::sums::parse(&text, "SHA256SUMS");
        }
        "media_manifest" => {
            let dir = scratch();
            let p = dir.join("media.yaml");
            std::fs::write(&p, input).unwrap();
            let _ = meshguard_bundler::manifest::Loaded::load(&p);
        }
        "license_envelope" => {
            let _ = meshguard_license::SignedLicense::verify(input, &f.vendor.public(), "fuzz");
        }
        "license_payload" => {
            let env = meshguard_license::dsse::Envelope::sign(
                meshguard_license::document::LICENSE_PAYLOAD_TYPE,
                input,
                &f.vendor,
            );
            let _ =
                meshguard_license::SignedLicense::verify_envelope(env, &f.vendor.public(), "fuzz");
        }
        "activation_request" => {
            let _ = meshguard_license::document::ActivationRequest::parse(input, "fuzz");
        }
        "tar_volume" => {
            let dir = scratch();
            let _ = meshguard_bundler::archive::extract(
                input,
                &dir.join("out"),
                meshguard_bundler::archive::Limits::default(),
                None,
                "fuzz",
            );
            // Nothing may land outside the destination.
            for e in std::fs::read_dir(&dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    name == "out" || name == "media.yaml" || name.starts_with("out.partial"),
                    "extraction wrote {name} beside its destination"
                );
            }
        }
        "provider_values" => meshguard_provider::fuzzing::values(input),
        "proxy_request" => meshguard_gateway::bench_support::fuzz_proxy_request(input),
        other => panic!("unknown target {other}"),
    }
}

/// A fresh directory per input, removed by the next call.
fn scratch() -> std::path::PathBuf {
    thread_local! {
        static DIR: std::cell::RefCell<Option<tempfile::TempDir>> = const { std::cell::RefCell::new(None) };
    }
    DIR.with(|d| {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().to_owned();
        *d.borrow_mut() = Some(t);
        p
    })
}
