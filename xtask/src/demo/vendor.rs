//! Licensing, both sides: the vendor's key and license (step 2), then the offline activation of
//! the demo's gateway (step 5) with `meshguard-license request` / `activate`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

use super::gateway::Api;
use super::{Demo, random_hex, run_indented, step, write_private};

/// The vendor's side: `meshguard-license` run in the demo's directory, with its key's
/// passphrase in `vendor/passphrase`.
pub(super) struct Vendor {
    demo_dir: PathBuf,
    dir: PathBuf,
    license_tool: PathBuf,
}

impl Vendor {
    /// Step 2: a signing key (encrypted at rest) and a license for the demo site.
    pub(super) fn issue_license(demo: &Demo) -> anyhow::Result<Vendor> {
        step("the vendor's side of licensing: a signing key (encrypted at rest) and a license");
        let vendor = Vendor {
            demo_dir: demo.dir.clone(),
            dir: demo.vendor_dir(),
            license_tool: demo.bin("meshguard-license"),
        };
        fs::create_dir_all(&vendor.dir)
            .with_context(|| format!("cannot create {}", vendor.dir.display()))?;
        // The key's passphrase goes in a file, never on a command line or in the environment of
        // a command whose description an error message might print.
        write_private(&vendor.dir.join("passphrase"), &random_hex(16)?)?;
        run_indented(&mut vendor.license(&[
            "keys",
            "generate",
            "--secret",
            "vendor/vendor.key",
            "--public",
            "vendor/vendor.pub",
        ]))?;
        run_indented(&mut vendor.license(&[
            "issue",
            "--key",
            "vendor/vendor.key",
            "--customer",
            "Demo Site",
            "--mode",
            "air-gapped",
            "--region",
            "local",
            "--max-agents",
            "25",
            "--valid-for",
            "365d",
            "--out",
            "vendor/demo.license",
        ]))?;
        Ok(vendor)
    }

    /// Step 5: the gateway's license state before, the offline request and the vendor's
    /// activation, then both installed through POST /admin/license.
    pub(super) fn activate(&self, api: &Api) -> anyhow::Result<()> {
        step(
            "activating an offline license (meshguard-license request / activate, POST /admin/license)",
        );
        let before = api.get("/admin/license")?;
        println!(
            "    before: {} (admin writes allowed: {})",
            before["state"].as_str().unwrap_or("?"),
            before["adminWritesAllowed"]
        );
        self.request_and_activate()?;
        let installed = api.send(
            api.admin(reqwest::Method::POST, "/admin/license")
                .json(&json!({
                    "license": self.read("demo.license")?, "activation": self.read("activation.json")?
                })),
            200,
        )?;
        let lic = &installed["license"];
        println!(
            "    {}: {} ({} agents, installation {}); enforcement never depends on it",
            installed["result"].as_str().unwrap_or("?"),
            lic["message"].as_str().unwrap_or("?"),
            lic["maxAgents"],
            lic["installationId"].as_str().unwrap_or("?")
        );
        Ok(())
    }

    /// The installation's request (from the gateway's license directory) and the vendor's
    /// answer to it, in vendor/request.json and vendor/activation.json.
    fn request_and_activate(&self) -> anyhow::Result<()> {
        let license_dir = self.demo_dir.join("data/license");
        let license_dir = license_dir.to_str().context("the demo path is not UTF-8")?;
        run_indented(&mut self.license(&[
            "request",
            "--data-dir",
            license_dir,
            "--pubkey",
            "vendor/vendor.pub",
            "--license",
            "vendor/demo.license",
            "--mode",
            "air-gapped",
            "--region",
            "local",
            "--out",
            "vendor/request.json",
        ]))?;
        run_indented(&mut self.license(&[
            "activate",
            "--key",
            "vendor/vendor.key",
            "--license",
            "vendor/demo.license",
            "--request",
            "vendor/request.json",
            "--out",
            "vendor/activation.json",
        ]))
    }

    /// `meshguard-license ARGS` in the demo's directory; the commands that use the vendor's key
    /// get its passphrase file.
    fn license(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.license_tool);
        c.args(args).current_dir(&self.demo_dir);
        if ["keys", "issue", "activate", "renew"].contains(&args[0]) {
            c.args(["--passphrase-file", "vendor/passphrase"]);
        }
        c
    }

    fn read(&self, name: &str) -> anyhow::Result<Value> {
        let path = self.dir.join(name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not JSON; did meshguard-license change its output?",
                path.display()
            )
        })
    }
}
