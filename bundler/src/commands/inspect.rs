//! `meshguard-bundle inspect`: what media hold, from MEDIA.json, not verified.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use meshguard_bundler::media;

pub(crate) fn run(dir: &Path) -> Result<ExitCode> {
    let p = dir.join(media::MEDIA_JSON);
    let doc: media::MediaDoc = serde_json::from_slice(
        &std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
    )
    .with_context(|| format!("{} is not a MEDIA.json", p.display()))?;
    println!(
        "{} {} (created {}) — NOT verified; run `meshguard-bundle verify`",
        doc.product, doc.version, doc.created_at
    );
    if let Some(s) = &doc.since {
        println!(
            "differential since {} ({} layers left to it)",
            s.version,
            s.omitted_blobs.len()
        );
    }
    for i in &doc.images {
        println!("image     {} {}", i.reference, i.digest);
    }
    for p in &doc.providers {
        println!(
            "provider  {} {} {} {}",
            p.source, p.version, p.platform, p.h1
        );
    }
    if let Some(l) = &doc.license {
        println!("license   {}", l.path);
    }
    match &doc.build {
        Some(b) => println!("build     {}", b.describe()),
        None if doc.images.is_empty() => println!("build     none recorded (no gateway image)"),
        None => println!("build     none recorded (no meshguard-gateway binary in the images)"),
    }
    let mut kinds = std::collections::BTreeMap::<&str, (usize, u64)>::new();
    for it in &doc.items {
        let e = kinds.entry(it.kind.as_str()).or_default();
        e.0 += 1;
        e.1 += it.size;
    }
    for (k, (n, b)) in kinds {
        println!("{k:<24} {n:>6} files {b:>14} bytes");
    }
    Ok(ExitCode::SUCCESS)
}
