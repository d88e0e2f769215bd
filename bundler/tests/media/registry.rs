//! Registries as source and target: a corrupt blob served by a real registry, differential
//! media, and an import interrupted mid-upload that resumes where the registry stopped.

use std::io::{Read as _, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::support::*;

fn find_blob(storage: &Path, hex: &str) -> std::path::PathBuf {
    storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

#[test]
fn a_registry_serving_a_blob_that_does_not_match_its_digest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    umoci_image(
        &dir.join("layout"),
        "v1",
        &[("srv/app", b"the real content of the layer\n")],
    );
    let reg = Registry::start();
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", dir.join("layout").display()))
            .arg(format!("docker://{}/src/app:v1", reg.addr)),
    );
    let (layer, data) = corrupt_the_layer_in_the_registry(&reg);
    let man = manifest(
        dir,
        "6.0.0",
        &format!(
            "images:\n  - ref: meshguard/app:6\n    from: docker://{}/src/app:v1\n",
            reg.addr
        ),
    );
    let err = fails(
        create_from(dir, &man, &reg),
        "create from a corrupt registry",
    );
    assert!(err.contains(&layer), "the bad blob is named: {err}");
    assert!(
        !dir.join("media").exists(),
        "no media is left looking complete"
    );
    assert!(std::fs::read_dir(dir).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("media.partial")
    }));
    // Restored, the same manifest pulls through oci-client into verified media.
    flip_byte(&data);
    ok(create_from(dir, &man, &reg), "create from the registry");
    ok(
        bundle(&["verify", "media", "--pubkey", &keys().ed_public()], dir),
        "verify",
    );
}

/// Corrupt the layer in the registry's own storage: it serves whatever is on disk. Returns the
/// layer's hex digest and its file in the storage.
fn corrupt_the_layer_in_the_registry(reg: &Registry) -> (String, std::path::PathBuf) {
    let m: serde_json::Value = serde_json::from_slice(
        &run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/src/app:v1", reg.addr),
        ]))
        .stdout,
    )
    .unwrap();
    let layer = m["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let data = find_blob(&reg.storage, &layer);
    flip_byte(&data);
    (layer, data)
}

/// `create` of `media` from the manifest `man`, pulling from the insecure registry `reg`.
fn create_from(dir: &Path, man: &Path, reg: &Registry) -> std::process::Output {
    bundle(
        &[
            "create",
            "--manifest",
            man.to_str().unwrap(),
            "--out",
            "media",
            "--key",
            &keys().ed_secret(),
            "--insecure-registry",
            &reg.addr,
        ],
        dir,
    )
}

#[test]
fn differential_media_carries_only_new_layers_and_imports_on_top_of_the_old() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    umoci_image(&dir.join("layout"), "v1", &[("base.txt", b"base layer\n")]);
    create_v1(dir);
    // v2 adds a layer on top of v1's.
    add_a_layer_as_v2(dir);
    create_v2_since_v1(dir);
    let reg = Registry::start();
    let err = fails(import(dir, "v2", &reg.addr, "s"), "v2 alone");
    assert!(
        err.contains("import the older media it builds on first"),
        "{err}"
    );
    ok(import(dir, "v1", &reg.addr, "s"), "import v1");
    ok(import(dir, "v2", &reg.addr, "s"), "import v2");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("v2/MEDIA.json")).unwrap()).unwrap();
    assert_eq!(
        reg.digest("meshguard/gw:7.0.1").as_deref(),
        doc["images"][0]["digest"].as_str()
    );
}

/// `import` of `media` into the insecure registry at `registry`, the rest into `dest`.
fn import(dir: &Path, media: &str, registry: &str, dest: &str) -> std::process::Output {
    bundle(
        &[
            "import",
            media,
            "--pubkey",
            &keys().ed_public(),
            "--registry",
            registry,
            "--insecure",
            "--dest",
            dest,
        ],
        dir,
    )
}

/// Media 7.0.0 with the one-layer image `layout:v1`, into `v1`.
fn create_v1(dir: &Path) {
    let m1 = manifest(
        dir,
        "7.0.0",
        "images:\n  - ref: meshguard/gw:7.0.0\n    from: oci:layout:v1\n",
    );
    ok(
        bundle(
            &[
                "create",
                "--manifest",
                m1.to_str().unwrap(),
                "--out",
                "v1",
                "--key",
                &keys().ed_secret(),
            ],
            dir,
        ),
        "create v1",
    );
}

/// `layout:v2` is `layout:v1` with one more layer (a patch file), made with umoci.
fn add_a_layer_as_v2(dir: &Path) {
    let l = dir.join("layout").display().to_string();
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &format!("{l}:v1")])
            .arg(dir.join("b2")),
    );
    std::fs::write(dir.join("b2/rootfs/patch.txt"), b"the 7.0.1 fix\n").unwrap();
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &format!("{l}:v2")])
            .arg(dir.join("b2")),
    );
}

/// Media 7.0.1 made `--since v1` leaves v1's layer to it, and verifies on its own.
fn create_v2_since_v1(dir: &Path) {
    let m2 = manifest(
        dir,
        "7.0.1",
        "images:\n  - ref: meshguard/gw:7.0.1\n    from: oci:layout:v2\n",
    );
    let out = ok(
        bundle(
            &[
                "create",
                "--manifest",
                m2.to_str().unwrap(),
                "--out",
                "v2",
                "--key",
                &keys().ed_secret(),
                "--since",
                "v1",
            ],
            dir,
        ),
        "create v2 --since v1",
    );
    assert!(out.contains("1 layer(s) left to the older media"), "{out}");
    ok(
        bundle(&["verify", "v2", "--pubkey", &keys().ed_public()], dir),
        "verify differential",
    );
}

/// An HTTP relay that forwards whole requests and, until `open` is set, drops the connection
/// instead of forwarding any PATCH after the first `allowed`: a link that fails between two
/// upload chunks, which a real registry cannot be asked to produce.
struct FlakyLink {
    addr: String,
    open: Arc<AtomicBool>,
}

impl FlakyLink {
    fn start(target: String, allowed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(false));
        let patches = Arc::new(AtomicU64::new(0));
        let o = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (patches, o) = (Arc::clone(&patches), Arc::clone(&o));
                std::thread::spawn(move || relay_requests(client, server, &patches, allowed, &o));
                std::thread::spawn(move || {
                    let (mut from, mut to) = (s2, c2);
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
        });
        Self { addr, open }
    }
}

fn relay_requests(
    client: TcpStream,
    mut server: TcpStream,
    patches: &AtomicU64,
    allowed: u64,
    open: &AtomicBool,
) {
    let mut reader = std::io::BufReader::new(client.try_clone().unwrap());
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match std::io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = server.shutdown(Shutdown::Both);
                    return;
                }
                Ok(_) => {}
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let length: u64 = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        if text.starts_with("PATCH ")
            && !open.load(Ordering::SeqCst)
            && patches.fetch_add(1, Ordering::SeqCst) >= allowed
        {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        if server.write_all(&head).is_err() {
            return;
        }
        let mut body = (&mut reader).take(length);
        if std::io::copy(&mut body, &mut server).is_err() {
            return;
        }
    }
}

#[test]
fn an_interrupted_import_resumes_where_the_registry_stopped() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    create_media_with_a_40_mib_layer(dir);
    let reg = Registry::start();
    // The link fails after two PATCHes: the config blob's, and the first 16 MiB chunk of the
    // 40 MiB layer.
    let link = FlakyLink::start(reg.addr.clone(), 2);
    let err = fails(
        import(dir, "media", &link.addr, "site"),
        "import over a failing link",
    );
    assert!(err.contains("after 5 attempts"), "{err}");
    assert_eq!(reg.digest("meshguard/big:8"), None);
    link.open.store(true, Ordering::SeqCst);
    the_resumed_import_sends_only_the_rest(dir, &reg, &link);
    the_registry_holds_the_image_byte_for_byte(dir, &reg);
}

/// Media 8.0.0 whose image has one 40 MiB layer of incompressible (xorshift) bytes.
fn create_media_with_a_40_mib_layer(dir: &Path) {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..40 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    umoci_image(&dir.join("layout"), "v1", &[("big.bin", &data)]);
    let man = manifest(
        dir,
        "8.0.0",
        "images:\n  - ref: meshguard/big:8\n    from: oci:layout:v1\n",
    );
    ok(
        bundle(
            &[
                "create",
                "--manifest",
                man.to_str().unwrap(),
                "--out",
                "media",
                "--key",
                &keys().ed_secret(),
            ],
            dir,
        ),
        "create",
    );
}

/// With the link open again, the import resumes the one interrupted blob, sends less than the
/// layer, and the registry holds the digest MEDIA.json records.
fn the_resumed_import_sends_only_the_rest(dir: &Path, reg: &Registry, link: &FlakyLink) {
    let out = ok(import(dir, "media", &link.addr, "site"), "import resumed");
    let receipt: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipt["push"]["blobsResumed"], 1, "{receipt}");
    let layer_size = std::fs::read_dir(dir.join("media/images/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(
        receipt["push"]["bytesSent"].as_u64().unwrap() < layer_size,
        "only the rest was sent: {receipt}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("media/MEDIA.json")).unwrap()).unwrap();
    assert_eq!(
        reg.digest("meshguard/big:8").as_deref(),
        doc["images"][0]["digest"].as_str()
    );
}

/// What the registry holds is the image, byte for byte: skopeo copies it out and it matches.
fn the_registry_holds_the_image_byte_for_byte(dir: &Path, reg: &Registry) {
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/meshguard/big:8", reg.addr))
            .arg(format!("oci:{}:back", dir.join("back").display())),
    );
    let back: Vec<_> = std::fs::read_dir(dir.join("back/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for f in std::fs::read_dir(dir.join("media/images/blobs/sha256")).unwrap() {
        let name = f.unwrap().file_name();
        let blob = std::fs::read(dir.join("media/images/blobs/sha256").join(&name)).unwrap();
        if blob.len() > 1 << 20 {
            assert!(
                back.contains(&name),
                "the big layer came back from the registry intact"
            );
        }
    }
}
