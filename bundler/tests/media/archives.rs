//! Packing: reproducible, readable by stock `zstd | tar`, volumes checked before extraction,
//! and hostile archives refused with nothing left behind.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use meshguard_bundler::keys::{MediaKey, MediaPublicKey, Passphrase};
use meshguard_bundler::pack::{self, Volume, VolumeIndex};

use crate::support::*;

fn inputs(dir: &Path) -> std::path::PathBuf {
    // Incompressible (xorshift) bytes, so the packed media really spans several volumes.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    umoci_image(&dir.join("layout"), "v1", &[("data.bin", &data)]);
    // A license shipped with a copy already encrypted (by the stock age) keeps media reproducible.
    std::fs::write(
        dir.join("site.license"),
        b"{\"payloadType\": \"x\", \"payload\": \"\", \"signatures\": []}\n",
    )
    .unwrap();
    let id = dir.join("site.age");
    run_ok(Command::new("age-keygen").arg("-o").arg(&id));
    let recipient = run_ok(Command::new("age-keygen").arg("-y").arg(&id))
        .trim()
        .to_owned();
    run_ok(
        Command::new("age")
            .args(["-r", &recipient, "-o"])
            .arg(dir.join("site.license.age"))
            .arg(dir.join("site.license")),
    );
    let root = root().display().to_string();
    manifest(
        dir,
        "5.0.0",
        &format!(
            "images:\n  - ref: meshguard/p:5\n    from: oci:layout:v1\npolicies: {root}/examples/policies\nlicense:\n  file: site.license\n  encrypted: site.license.age\n"
        ),
    )
}

fn create_at(dir: &Path, m: &Path, out: &str) {
    let o = Command::new(bundle_bin())
        .args([
            "create",
            "--manifest",
            m.to_str().unwrap(),
            "--out",
            out,
            "--key",
            &keys().ed_secret(),
        ])
        .current_dir(dir)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .output()
        .unwrap();
    ok(o, "create");
}

fn pack_at(dir: &Path, media: &str, out: &str, volume: Option<&str>) {
    let mut args = vec!["pack", media, "--out", out, "--key"];
    let key = keys().ed_secret();
    args.push(&key);
    if let Some(v) = volume {
        args.extend(["--volume-size", v]);
    }
    let o = Command::new(bundle_bin())
        .args(&args)
        .current_dir(dir)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .output()
        .unwrap();
    ok(o, "pack");
}

#[test]
fn create_and_pack_are_reproducible_and_stock_tools_unpack_volumes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let m = inputs(dir);
    create_is_reproducible(dir, &m);
    let index = pack_is_reproducible(dir);
    stock_tools_unpack_the_volumes(dir, &index);
    our_unpack_checks_the_volumes_then_the_media_verifies(dir);
    // A truncated volume and two volumes swapped are named before anything is extracted.
    a_truncated_volume_is_named_before_extraction(dir, &index);
    swapped_volumes_are_named_before_extraction(dir, &index);
}

/// `unpack` of `archive` into `dest`, with the media key.
fn unpack(dir: &Path, archive: &str, dest: &str) -> std::process::Output {
    bundle(
        &[
            "unpack",
            archive,
            "--pubkey",
            &keys().ed_public(),
            "--dest",
            dest,
        ],
        dir,
    )
}

/// Two runs of `create` over the same inputs write the same SHA256SUMS, with the license
/// already encrypted on it.
fn create_is_reproducible(dir: &Path, m: &Path) {
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    create_at(dir, m, "a/meshguard-5.0.0");
    create_at(dir, m, "b/meshguard-5.0.0");
    let sums_a = std::fs::read(dir.join("a/meshguard-5.0.0/SHA256SUMS")).unwrap();
    assert!(String::from_utf8_lossy(&sums_a).contains("license/site.license.age"));
    assert_eq!(
        sums_a,
        std::fs::read(dir.join("b/meshguard-5.0.0/SHA256SUMS")).unwrap()
    );
}

/// Two runs of `pack` in 1 MiB volumes write several volumes, byte for byte the same; returns
/// the first run's index.
fn pack_is_reproducible(dir: &Path) -> VolumeIndex {
    pack_at(dir, "a/meshguard-5.0.0", "a/m.tar.zst", Some("1M"));
    pack_at(dir, "b/meshguard-5.0.0", "b/m.tar.zst", Some("1M"));
    let index: VolumeIndex =
        serde_json::from_slice(&std::fs::read(dir.join("a/m.tar.zst.index.json")).unwrap())
            .unwrap();
    assert!(
        index.volumes.len() >= 2,
        "3 MiB of image in 1 MiB volumes: {index:?}"
    );
    for v in &index.volumes {
        assert_eq!(
            std::fs::read(dir.join("a").join(&v.name)).unwrap(),
            std::fs::read(dir.join("b").join(&v.name)).unwrap(),
            "{} differs between two runs",
            v.name
        );
    }
    index
}

/// Stock tools: cat | zstd -d | tar -x, then sha256sum -c inside.
fn stock_tools_unpack_the_volumes(dir: &Path, index: &VolumeIndex) {
    let x = dir.join("stock");
    std::fs::create_dir_all(&x).unwrap();
    let vols: Vec<String> = index
        .volumes
        .iter()
        .map(|v| dir.join("a").join(&v.name).display().to_string())
        .collect();
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "cat {} | zstd -dc | tar -x -C {}",
        vols.join(" "),
        x.display()
    )));
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "--strict", "--quiet", "SHA256SUMS"])
            .current_dir(x.join("meshguard-5.0.0")),
    );
}

/// Our unpack checks every volume first, then the media verifies.
fn our_unpack_checks_the_volumes_then_the_media_verifies(dir: &Path) {
    ok(unpack(dir, "a/m.tar.zst", "u"), "unpack");
    ok(
        bundle(
            &[
                "verify",
                "u/meshguard-5.0.0",
                "--pubkey",
                &keys().ed_public(),
            ],
            dir,
        ),
        "verify unpacked",
    );
}

/// A truncated second volume is named and nothing is extracted; the volume is then restored.
fn a_truncated_volume_is_named_before_extraction(dir: &Path, index: &VolumeIndex) {
    let v1 = dir.join("a").join(&index.volumes[1].name);
    let bytes = std::fs::read(&v1).unwrap();
    std::fs::write(&v1, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(unpack(dir, "a/m.tar.zst", "u2"), "unpack truncated");
    assert!(
        err.contains(&format!(
            "volume 2 of {} ({})",
            index.volumes.len(),
            index.volumes[1].name
        )),
        "{err}"
    );
    assert!(!dir.join("u2/meshguard-5.0.0").exists());
    std::fs::write(&v1, &bytes).unwrap();
}

/// The first two volumes swapped: the first is named damaged or out of order, nothing is
/// extracted.
fn swapped_volumes_are_named_before_extraction(dir: &Path, index: &VolumeIndex) {
    let v1 = dir.join("a").join(&index.volumes[1].name);
    let bytes = std::fs::read(&v1).unwrap();
    let v0 = dir.join("a").join(&index.volumes[0].name);
    let first = std::fs::read(&v0).unwrap();
    std::fs::write(&v0, &bytes).unwrap();
    std::fs::write(&v1, &first).unwrap();
    let err = fails(unpack(dir, "a/m.tar.zst", "u3"), "unpack reordered");
    assert!(
        err.contains("volume 1 of") && err.contains("damaged or out of order"),
        "{err}"
    );
    assert!(!dir.join("u3/meshguard-5.0.0").exists());
}

/// Writes `tar` as a signed single-volume archive, claiming `tar_size`.
fn signed_archive(dir: &Path, name: &str, tar: &[u8], tar_size: u64) -> std::path::PathBuf {
    let key = MediaKey::load(
        Path::new(&keys().ed_secret()),
        &Passphrase::new(PASSPHRASE).unwrap(),
    )
    .unwrap();
    let compressed = zstd::encode_all(tar, 3).unwrap();
    let path = dir.join(format!("{name}.tar.zst"));
    std::fs::write(&path, &compressed).unwrap();
    let index = VolumeIndex {
        format: pack::INDEX_FORMAT.into(),
        media: "m".into(),
        tar_size,
        compressed_size: compressed.len() as u64,
        volumes: vec![Volume {
            name: format!("{name}.tar.zst"),
            size: compressed.len() as u64,
            sha256: meshguard_bundler::fsx::sha256_hex(&compressed),
        }],
    };
    let mut bytes = serde_json::to_vec_pretty(&index).unwrap();
    bytes.push(b'\n');
    let ip = pack::index_path(&path);
    std::fs::write(&ip, &bytes).unwrap();
    let mut sig = ip.as_os_str().to_owned();
    sig.push(".minisig");
    std::fs::write(sig, key.sign(&bytes, "test").unwrap()).unwrap();
    path
}

fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Write the name bytes directly: the builder's own checks would refuse `..` and `/`.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        if *kind == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_refused_with_nothing_left_behind() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let reg = tar::EntryType::Regular;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute",
            raw_tar(&[("/etc/cron.d/x", reg, b"x", None)]),
            "absolute path",
        ),
        (
            "dotdot",
            raw_tar(&[("m/../../escape", reg, b"x", None)]),
            "leaves the destination",
        ),
        (
            "symlink",
            raw_tar(&[(
                "m/link",
                tar::EntryType::Symlink,
                b"",
                Some("../../../etc/passwd"),
            )]),
            "escapes the destination",
        ),
        (
            "hardlink",
            raw_tar(&[("m/hard", tar::EntryType::Link, b"", Some("/etc/shadow"))]),
            "hard link",
        ),
        (
            "device",
            raw_tar(&[("m/null", tar::EntryType::Char, b"", None)]),
            "device node",
        ),
    ];
    for (name, tar, expect) in cases {
        a_hostile_entry_is_refused_leaving_nothing(dir, name, &tar, expect);
    }
    assert!(!dir.join("escape").exists() && !Path::new("/etc/cron.d/x").exists());
    a_decompression_bomb_is_refused(dir);
    a_changed_index_is_refused_before_reading_a_volume(dir);
    let _ = MediaPublicKey::from_file(Path::new(&keys().ed_public())).unwrap();
}

/// One signed archive holding `tar`: unpack refuses it saying `expect`, and leaves no media
/// directory behind.
fn a_hostile_entry_is_refused_leaving_nothing(dir: &Path, name: &str, tar: &[u8], expect: &str) {
    let size = tar.len() as u64;
    let archive = signed_archive(dir, name, tar, size);
    let dest = dir.join(format!("out-{name}"));
    let err = fails(
        unpack(dir, archive.to_str().unwrap(), dest.to_str().unwrap()),
        name,
    );
    assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
    assert!(
        !dest.join("m").exists(),
        "{name} left a media directory behind"
    );
}

/// A bomb: 64 MiB of zeros that compress to a few KiB, under an index that claims 1 MiB.
fn a_decompression_bomb_is_refused(dir: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let zeros = vec![0u8; 64 << 20];
    let mut h = tar::Header::new_gnu();
    h.set_size(zeros.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "m/zeros", &zeros[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let archive = signed_archive(dir, "bomb", &tar, 1 << 20);
    let dest = dir.join("out-bomb");
    let err = fails(
        unpack(dir, archive.to_str().unwrap(), dest.to_str().unwrap()),
        "bomb",
    );
    assert!(err.contains("decompression bomb"), "{err}");
    assert!(!dest.join("m").exists());
}

/// Unsigned or foreign-signed indexes are refused before reading a volume: here one changed
/// after it was signed.
fn a_changed_index_is_refused_before_reading_a_volume(dir: &Path) {
    let reg = tar::EntryType::Regular;
    let archive = signed_archive(
        dir,
        "resigned",
        &raw_tar(&[("m/a", reg, b"a", None)]),
        10240,
    );
    let mut idx = pack::index_path(&archive).as_os_str().to_owned();
    idx.push(".minisig");
    std::fs::OpenOptions::new()
        .append(true)
        .open(pack::index_path(&archive))
        .unwrap()
        .write_all(b" ")
        .unwrap();
    let err = fails(unpack(dir, archive.to_str().unwrap(), "x"), "changed index");
    assert!(err.contains("does not match its signature"), "{err}");
}
