//! The site's witness (`meshguard-witness`): its key, which the gateway is told to trust (step 3),
//! and its cosignature of the audit log's checkpoint across the gap, as files (step 16).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use super::gateway::Api;
use super::{Demo, random_hex, step, write_private};

pub(super) struct Witness {
    tool: PathBuf,
    dir: PathBuf,
    /// The witness's verifier key, which the gateway is started with.
    pub(super) vkey: String,
}

impl Witness {
    /// Step 3: a witness on its own key (`meshguard-witness init`).
    pub(super) fn init(demo: &Demo) -> anyhow::Result<Witness> {
        step(
            "a site witness on its own key (meshguard-witness init), which the gateway is told to trust",
        );
        let dir = demo.witness_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_private(&dir.join("passphrase"), &random_hex(16)?)?;
        let mut witness = Witness {
            tool: demo.bin("meshguard-witness"),
            dir,
            vkey: String::new(),
        };
        witness.vkey = witness
            .run_ok(
                &["init", "--name", "witness.demo.local/w1"],
                "meshguard-witness init failed",
            )?
            .trim()
            .to_owned();
        println!("    witness key {}", witness.vkey);
        Ok(witness)
    }

    /// Step 16: the witness trusts the gateway's log key, cosigns the gateway's tlog-witness
    /// request and the gateway keeps the cosignature, which its verify then reports.
    pub(super) fn cosign(&self, api: &Api, checkpoint: &Value) -> anyhow::Result<()> {
        step(
            "the witness cosigns that checkpoint across the gap (tlog-witness request and response as files), and the gateway keeps the cosignature",
        );
        self.run_ok(
            &["trust", checkpoint["vkey"].as_str().unwrap_or_default()],
            "meshguard-witness trust failed",
        )?;
        let response = self.answer(&request_from(api)?)?;
        println!("    {}", response.trim());
        api.send(
            api.admin(reqwest::Method::POST, "/admin/audit/cosignatures")
                .body(response),
            200,
        )?;
        let report = api.get("/admin/audit/verify")?;
        println!(
            "    /admin/audit/verify: valid={} witnessed up to size {} (quorum {})",
            report["valid"],
            report["witnesses"]["latestWitnessedSize"],
            report["witnesses"]["quorum"]
        );
        if report["witnesses"]["latestWitnessedSize"].is_null() {
            bail!("the cosigned checkpoint is not reported as witnessed: {report}");
        }
        Ok(())
    }

    /// The request goes across the gap as request.txt; the cosigned answer comes back as
    /// response.txt.
    fn answer(&self, request: &str) -> anyhow::Result<String> {
        let request_file = self.dir.join("request.txt");
        let response_file = self.dir.join("response.txt");
        fs::write(&request_file, request)
            .with_context(|| format!("cannot write {}", request_file.display()))?;
        self.run_ok(
            &[
                "cosign",
                path_arg(&request_file),
                "--out",
                path_arg(&response_file),
            ],
            "the witness refused",
        )?;
        fs::read_to_string(&response_file)
            .with_context(|| format!("the witness wrote no {}", response_file.display()))
    }

    /// `meshguard-witness ARGS` on the demo's witness state; what it said, or an error starting
    /// with `failure` if it failed.
    fn run_ok(&self, args: &[&str], failure: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.tool)
            .arg("--state")
            .arg(&self.dir)
            .arg("--passphrase-file")
            .arg(self.dir.join("passphrase"))
            .args(args)
            .output()
            .context("cannot run meshguard-witness")?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("{failure}: {said}");
        }
        Ok(said)
    }
}

/// The gateway's tlog-witness add-checkpoint request for its latest checkpoint.
fn request_from(api: &Api) -> anyhow::Result<String> {
    api.admin(
        reqwest::Method::GET,
        "/admin/audit/consistency?from=0&format=tlog-witness",
    )
    .send()
    .and_then(|r| r.text())
    .context("the gateway did not answer GET /admin/audit/consistency")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}
