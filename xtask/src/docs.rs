//! `cargo xtask docs`: runs the shell blocks (```sh) of README.md and docs/*.md as a user would
//! paste them, so the documentation cannot drift from the product.
//!
//! Each file's blocks run in order, in one `bash` with `set -euo pipefail`, with the workspace's
//! debug binaries and the installed tools first on PATH. README.md runs in the repository root
//! (where its reader sits); every other page runs in a directory of its own under
//! `target/docs-run/`. What a page assumes its reader already has is set up first and named in
//! `fixture`: a gateway on 127.0.0.1:3100 with `ADMIN_TOKEN` and `GW` in the environment, a
//! passphrase file, and for the operations page a site on a real PostgreSQL (`PgSite`). `curl` fails on any HTTP error status (as a reader would notice one), and
//! stdin answers `yes` (to `terraform apply`).
//!
//! A block that cannot run here is listed in `NOT_RUN` with the reason, which is printed; a new
//! block runs unless it is added there, and an entry that matches no block is an error.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::root;

/// Blocks not run, by file and a line of the block, with the reason.
const NOT_RUN: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo xtask demo ",
        "the README's own two commands: CI runs `cargo xtask test`, which ends with this demo under `unshare -n`",
    ),
    (
        "README.md",
        "cargo build --release -p meshguard-gateway",
        "a release build and a server in the foreground: the runner starts the debug build of this binary with these variables for the README's other blocks",
    ),
    (
        "docs/media.md",
        "cargo xtask images",
        "a release build (many minutes on two cores); the demo runs the same `meshguard-bundle images` on the debug binaries",
    ),
    (
        "docs/media.md",
        "meshguard-bundle create --manifest media.yaml",
        "needs the images, chart, license and reports the manifest names; the demo and bundler/tests/media create, pack and unpack media the same way",
    ),
    (
        "docs/media.md",
        "meshguard-bundle unpack meshguard-1.4.0.tar.zst",
        "needs media and a registry at registry.local; bundler/tests/media and tests/site verify and import media into docker-registry",
    ),
    (
        "docs/site-install.md",
        "meshguard-bundle install /media/",
        "a whole site install (registry, podman, minutes): tests/site runs it under `unshare -n`, and so does the demo",
    ),
    (
        "docs/site-install.md",
        "minisign -Vm STATE/transcripts/",
        "checks a transcript of the install above: tests/site and the demo check it with minisign",
    ),
    (
        "docs/site-install.md",
        "helm upgrade --install RELEASE",
        "needs a Kubernetes cluster, which this machine has not; the chart's manifests run under `podman kube play` in the product test",
    ),
    (
        "docs/security.md",
        "--example fuzz",
        "a release build and 90 s per target: run by hand (results in docs/security.md)",
    ),
    (
        "docs/security.md",
        "cargo xtask fuzz-afl",
        "an instrumented build of the workspace (18 min) and two minutes per target: run by hand, like the benchmarks (results in docs/security.md)",
    ),
    (
        "docs/keys.md",
        "--keypairgen --key-type EC:edwards25519",
        "pkcs11-tool --login asks for the PIN on a terminal; gateway/tests/it/keys.rs makes this key pair in SoftHSM2 (PIN on the command line) and follows the steps",
    ),
    (
        "docs/keys.md",
        "--rotate-audit-key --new-audit-key-uri",
        "needs the token key pair of the step before; the_audit_key_moves_into_a_pkcs11_token_and_keeps_signing_from_there in gateway/tests/it/keys.rs runs it",
    ),
    (
        "docs/keys.md",
        "--keygen --key-type AES:32",
        "pkcs11-tool --login asks for the PIN on a terminal; alert_channel_secrets_move_from_the_key_file_into_a_pkcs11_token in gateway/tests/it/keys.rs follows these steps",
    ),
    (
        "docs/witness.md",
        "AUDIT_WITNESSES=",
        "needs the gateway restarted with the witness above in AUDIT_WITNESSES; tests/witness and the demo post and verify cosignatures so",
    ),
];

/// The documentation pages whose shell blocks are run.
fn pages() -> anyhow::Result<Vec<String>> {
    let mut pages = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = fs::read_dir(root().join("docs"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    pages.extend(docs);
    Ok(pages)
}

#[derive(Debug)]
struct Block {
    line: usize,
    text: String,
}

/// The ```sh blocks of a Markdown page.
fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // Inside a fenced block: Some(the sh block being read), or None for another language's.
    let mut inside: Option<Option<Block>> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut inside, fence) {
            (None, Some(info)) => {
                let sh = info.split_whitespace().next() == Some("sh");
                inside = Some(sh.then(|| Block {
                    line: i + 1,
                    text: String::new(),
                }));
            }
            (Some(_), Some(_)) => blocks.extend(inside.take().flatten()),
            (Some(Some(b)), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (Some(None), None) | (None, None) => {}
        }
    }
    blocks
}

/// What a page assumes its reader has.
enum Fixture {
    None,
    Gateway,
    /// The gateway, and a site on a PostgreSQL control plane besides ([`PgSite`]).
    GatewayAndPostgres,
}

fn fixture(page: &str) -> Fixture {
    match page {
        "README.md" | "docs/witness.md" | "docs/evidence.md" => Fixture::Gateway,
        "docs/operations.md" => Fixture::GatewayAndPostgres,
        _ => Fixture::None,
    }
}

/// A site on a PostgreSQL control plane, for the pages about one: a real PostgreSQL
/// (`meshguard_testkit::pg`, on a free loopback port) with the site's database and an empty
/// one, and a gateway on it. The page's shell gets `PG_GW` (the gateway), `CONTROL_PLANE_URL`
/// (its DATABASE_URL, password included, as the site's operator has it), `EMPTY_DATABASE_URL`
/// (a database made with CREATE DATABASE and nothing else), and what the site's database
/// administrator has: `PG_BIN` (the server's binaries), `PGUSER` and `PGPASSWORD`,
/// `PRIMARY_PORT` and `PRIMARY_DATA` (the server's port and data directory), `STANDBY_PORT`
/// (a free port for a standby), and `SITE_SECRETS_KEY` (the gateway's secrets key file, which
/// every gateway of the site shares).
struct PgSite {
    env: Vec<(&'static str, String)>,
    // Dropped in this order: the gateway before its database.
    _gateway: Gateway,
    _server: meshguard_testkit::pg::PgServer,
}

impl PgSite {
    fn start(bins: &Path, dir: &Path, secrets: (&str, &str)) -> anyhow::Result<Self> {
        let server = meshguard_testkit::pg::PgServer::start();
        let url = server.database("meshguard");
        let empty = server.database("meshguard_restored");
        let gw = format!("http://127.0.0.1:{}", meshguard_testkit::free_port());
        let gateway = start_gateway(bins, dir, secrets, &gw, &[("DATABASE_URL", &url)])?;
        let path = |p: PathBuf| p.display().to_string();
        Ok(Self {
            env: vec![
                ("PG_GW", gw),
                ("CONTROL_PLANE_URL", url),
                ("EMPTY_DATABASE_URL", empty),
                ("PG_BIN", path(meshguard_testkit::pg::bin_dir())),
                ("PGUSER", meshguard_testkit::pg::USER.to_owned()),
                ("PGPASSWORD", meshguard_testkit::pg::PASSWORD.to_owned()),
                ("PRIMARY_PORT", server.port.to_string()),
                ("PRIMARY_DATA", path(server.dir().join("data"))),
                ("STANDBY_PORT", meshguard_testkit::free_port().to_string()),
                ("SITE_SECRETS_KEY", path(dir.join("data/secrets.key"))),
            ],
            _gateway: gateway,
            _server: server,
        })
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway at `url` (`http://127.0.0.1:PORT`) with `env` besides, in use: an agent, and a
/// decision of it in the audit log.
fn start_gateway(
    bins: &Path,
    dir: &Path,
    (token, jwt): (&str, &str),
    url: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Gateway> {
    fs::create_dir_all(dir.join("policies"))?;
    let port = url.rsplit(':').next().unwrap_or_default();
    let child = Command::new(bins.join("meshguard-gateway"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port)
        .env("ADMIN_TOKEN", token)
        .env("JWT_SECRET", jwt)
        .env("DB_PATH", dir.join("data/meshguard.db"))
        .env("POLICIES_DIR", dir.join("policies"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("gateway.log"))?)
        .spawn()
        .context("cannot start the gateway")?;
    let gateway = Gateway(child);
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{url}/ready"))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!(
                "the gateway did not answer on {url} within 30 s (is the port taken?); see {}",
                dir.join("gateway.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent: serde_json::Value = client
        .post(format!("{url}/admin/agents"))
        .header("X-Admin-Token", token)
        .json(&serde_json::json!({"name": "docs-reader", "trustTier": "verified"}))
        .send()?
        .error_for_status()?
        .json()?;
    client
        .get(format!("{url}/proxy/check"))
        .bearer_auth(agent["token"].as_str().unwrap_or_default())
        .header("X-MeshGuard-Action", "read:docs")
        .send()?;
    Ok(gateway)
}

/// Where the pages' gateway listens (`GW` in their shell).
const GW: &str = "http://127.0.0.1:3100";

/// Terraform's files in the quickstart, which the README's block makes in the repository.
const QUICKSTART_LEFTOVERS: &[&str] = &[
    "examples/quickstart/.terraform",
    "examples/quickstart/.terraform.lock.hcl",
    "examples/quickstart/terraform.tfstate",
    "examples/quickstart/terraform.tfstate.backup",
];

pub(crate) fn run(tool_path: &std::ffi::OsStr, tools_dir: &Path) -> anyhow::Result<()> {
    let bins = crate::build_binaries(false)?;
    let work = root().join("target/docs-run");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let mut path = vec![bins.clone()];
    path.extend(std::env::split_paths(tool_path));
    let runner = Runner {
        path: std::env::join_paths(path)?,
        bins,
        work,
        tools_dir,
    };
    let mut used = vec![false; NOT_RUN.len()];
    let mut ran = 0;
    for page in pages()? {
        let (script, runnable) = page_script(&page, &mut used)?;
        if runnable == 0 {
            continue;
        }
        runner.run_page(&page, &script, runnable)?;
        ran += runnable;
    }
    if let Some(i) = used.iter().position(|u| !u) {
        bail!(
            "NOT_RUN in xtask/src/docs.rs names a block that is gone ({}: {:?}); remove the entry",
            NOT_RUN[i].0,
            NOT_RUN[i].1
        );
    }
    println!("docs: {ran} shell blocks ran as written");
    Ok(())
}

/// The page's ```sh blocks as one bash script, but those NOT_RUN names (marked in `used`, and
/// said); the script and how many blocks it runs.
fn page_script(page: &str, used: &mut [bool]) -> anyhow::Result<(String, usize)> {
    let markdown = fs::read_to_string(root().join(page))?;
    let mut script = String::from(
        "set -euo pipefail\ncurl() { command curl --fail-with-body --show-error \"$@\"; }\n",
    );
    let mut runnable = 0;
    for block in sh_blocks(&markdown) {
        let skip = NOT_RUN.iter().enumerate().find(|(_, (file, marker, _))| {
            *file == page && block.text.lines().any(|l| l.contains(marker))
        });
        if let Some((i, (_, _, why))) = skip {
            used[i] = true;
            println!("docs: {page}:{} not run here: {why}", block.line);
            continue;
        }
        runnable += 1;
        // Each block starts where the page's reader is (a block's `cd` does not carry over
        // to the next one); the variables it sets do.
        script.push_str(&format!(
            "cd \"$DOCS_PAGE_DIR\"\necho '--- {page}:{}' >&2\n{}\n",
            block.line, block.text
        ));
    }
    Ok((script, runnable))
}

/// What every page's script runs with: the product's binaries and the tools on PATH, and a
/// directory of its own under `work`.
struct Runner<'a> {
    bins: PathBuf,
    work: PathBuf,
    path: std::ffi::OsString,
    tools_dir: &'a Path,
}

impl Runner<'_> {
    /// Runs one page's script where its reader would be, with the fixture the page needs; fails
    /// naming the block that failed and the end of its output.
    fn run_page(&self, page: &str, script: &str, runnable: usize) -> anyhow::Result<()> {
        let stem = page.trim_end_matches(".md").replace('/', "-");
        let dir = self.work.join(&stem);
        fs::create_dir_all(&dir)?;
        let cwd = reader_dir(page, &dir)?;
        let token = crate::demo::random_hex(24)?;
        let jwt = crate::demo::random_hex(32)?;
        let secrets = (token.as_str(), jwt.as_str());
        let wants = fixture(page);
        let _gateway = (!matches!(wants, Fixture::None))
            .then(|| start_gateway(&self.bins, &dir.join("gateway"), secrets, GW, &[]))
            .transpose()?;
        let pg_site = matches!(wants, Fixture::GatewayAndPostgres)
            .then(|| PgSite::start(&self.bins, &dir.join("pg-gateway"), secrets))
            .transpose()?;
        let env = pg_site.as_ref().map_or(&[][..], |p| &p.env[..]);
        // Passphrase files the pages name (`--passphrase-file`), kept as their readers keep them.
        if cwd != root() {
            for name in [
                "vendor.pass",
                "witness.pass",
                "evidence.pass",
                "backup.pass",
            ] {
                write_private(&cwd.join(name), "a docs-run passphrase")?;
            }
        }
        let log = dir.join("run.log");
        let started = Instant::now();
        let status = self.run_script(script, &cwd, (&token, &jwt), env, &log)?;
        if page == "README.md" {
            for left in QUICKSTART_LEFTOVERS {
                let p = root().join(left);
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
        }
        if !status.success() {
            bail!(failure(page, status, &log));
        }
        println!(
            "docs: {page}: {runnable} block(s) ran as written in {:.0?} (log: {})",
            started.elapsed(),
            log.display()
        );
        Ok(())
    }

    /// bash running `script` in `cwd` as the reader's shell (answering "yes" to what asks),
    /// its output in `log`.
    fn run_script(
        &self,
        script: &str,
        cwd: &Path,
        (token, jwt): (&str, &str),
        env: &[(&'static str, String)],
        log: &Path,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let out = fs::File::create(log)?;
        let mut bash = Command::new("bash");
        // The reader's shell has none of the variables `cargo run` gave xtask.
        crate::without_cargo_run_env(&mut bash);
        let mut child = bash
            .arg("-c")
            .arg(script)
            .current_dir(cwd)
            .env("PATH", &self.path)
            .env("MESHGUARD_TOOLS_DIR", self.tools_dir)
            .env("CHECKPOINT_DISABLE", "1")
            .env("ADMIN_TOKEN", token)
            .env("JWT_SECRET", jwt)
            .env("GW", GW)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("DOCS_PAGE_DIR", cwd)
            .env("TF_CLI_ARGS", "-no-color")
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot run bash")?;
        {
            let mut stdin = child.stdin.take().expect("piped");
            let _ = stdin.write_all("yes\n".repeat(16).as_bytes());
        }
        Ok(child.wait()?)
    }
}

/// Where the page's reader runs its blocks: the repository for the README (whose Terraform
/// block must not find an earlier run's files), else the page's own directory.
fn reader_dir(page: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    if page != "README.md" {
        return Ok(dir.to_owned());
    }
    if let Some(left) = QUICKSTART_LEFTOVERS
        .iter()
        .find(|p| root().join(p).exists())
    {
        bail!(
            "{left} exists: the README's Terraform block would use it; remove Terraform's files from examples/quickstart first"
        );
    }
    Ok(root())
}

/// The error for a page whose script failed: the block that ran last and the end of the log.
fn failure(page: &str, status: std::process::ExitStatus, log: &Path) -> String {
    let out = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = out.lines().rev().take(40).collect();
    let last_block = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("--- "))
        .unwrap_or(page);
    format!(
        "the block at {last_block} fails as written ({status}); its output ends:\n{}\n(whole log: {})",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        log.display()
    )
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sh_blocks_are_taken_with_their_first_line() {
        let md = "a\n```sh\necho 1\n```\n```yaml\nk: v\n```\n```\nplain\n```\n```sh\necho 2\n```\n";
        let b = sh_blocks(md);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].line, b[0].text.as_str()), (2, "echo 1\n"));
        assert_eq!((b[1].line, b[1].text.as_str()), (11, "echo 2\n"));
    }
}
