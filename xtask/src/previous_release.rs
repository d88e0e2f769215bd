//! The previous release of the product, built from this repository's own history, for the
//! site test's upgrade and rollback across a real schema migration (issue #31 item 7): the
//! commit before SQLite migration 13 (`changes.idempotency_key`). Its sources come from
//! `git archive`; it builds into a target directory of its own seeded with hard links to this
//! workspace's compiled dependencies, so only the workspace's own crates compile again (about a
//! minute here) and nothing in `target/debug` is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The release before the last schema change.
pub(crate) const COMMIT: &str = "6e4d7a3b2261ba8d5f1ecb833ee5e21dceb888a5";

/// Builds the previous release's gateway; its path. None, said on stdout, when this checkout
/// does not hold the commit (a shallow clone): the site test then names the step it skips.
pub(crate) fn build(root: &Path) -> anyhow::Result<Option<PathBuf>> {
    let held = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["cat-file", "-e", &format!("{COMMIT}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !held {
        println!(
            "xtask test: SKIPPED building the previous release: this checkout does not hold commit {COMMIT} (a shallow clone?); tests/site will skip the cross-version upgrade and say so"
        );
        return Ok(None);
    }
    let base = root.join("target/previous-release").join(&COMMIT[..12]);
    let src = base.join("src");
    if !src.join("Cargo.lock").is_file() {
        extract(root, &src)?;
    }
    let target = base.join("target");
    if !target.join("debug").exists() {
        seed(&root.join("target/debug"), &target.join("debug"))?;
    }
    println!("\nxtask test: the previous release's gateway ({COMMIT}), from git");
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--locked",
        "-p",
        "meshguard-gateway",
        "--bin",
        "meshguard-gateway",
    ])
    .arg("--target-dir")
    .arg(&target)
    .env_remove("CARGO_TARGET_DIR")
    .current_dir(&src);
    // Cargo names a path crate's outputs by its path relative to the workspace, so the old
    // release's own crates would take the names of this workspace's (and an extracted file's
    // old mtime would make this workspace's outputs look fresh for them): a profile setting
    // of their own gives them names of their own, and leaves every dependency's name alone.
    for krate in [
        "meshguard-api",
        "meshguard-common",
        "meshguard-license",
        "meshguard-gateway",
    ] {
        cmd.arg("--config")
            .arg(format!("profile.dev.package.{krate}.codegen-units=17"));
    }
    crate::without_cargo_run_env(&mut cmd);
    crate::run_checked(&mut cmd)?;
    Ok(Some(target.join("debug/meshguard-gateway")))
}

/// `git archive COMMIT | tar -x` into `src` (written beside, then renamed in).
fn extract(root: &Path, src: &Path) -> anyhow::Result<()> {
    let partial = src.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", COMMIT])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run git archive")?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&partial)
        .stdin(archive.stdout.take().expect("piped"))
        .status()
        .context("cannot run tar")?;
    if !archive.wait()?.success() || !status.success() {
        bail!("git archive {COMMIT} | tar -x failed");
    }
    std::fs::rename(&partial, src)?;
    Ok(())
}

/// A target directory whose compiled dependencies are hard links to this workspace's
/// (`deps`, `build`, `.fingerprint`; never the lock file): cargo finds them fresh, and what it
/// compiles anew it writes as new files, so the links' originals are never changed.
fn seed(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for part in ["deps", "build", ".fingerprint"] {
        if !from.join(part).exists() {
            continue;
        }
        let status = Command::new("cp")
            .arg("-al")
            .arg(from.join(part))
            .arg(to.join(part))
            .status()
            .context("cannot run cp")?;
        if !status.success() {
            bail!("cp -al {} failed", from.join(part).display());
        }
    }
    Ok(())
}
