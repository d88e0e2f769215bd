//! Step 14: `terraform init` from the imported mirror (no registry), apply of examples/quickstart
//! against the demo's gateway, and a second plan that must be empty.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, bail};

use super::admin::Receiver;
use super::gateway::Gateway;
use super::{Demo, step};
use crate::root;

/// Terraform in the demo's copy of examples/quickstart, pointed at the demo's gateway.
struct Terraform {
    program: PathBuf,
    work: PathBuf,
    cli_config: PathBuf,
    gateway_url: String,
    admin_token: String,
}

pub(super) fn apply(demo: &Demo, gateway: &Gateway, receiver: &Receiver) -> anyhow::Result<()> {
    step("terraform init from the imported mirror (no registry) and apply of examples/quickstart");
    let terraform = Terraform::in_copy_of_quickstart(demo, gateway)?;
    terraform.run(&[
        "init",
        "-no-color",
        &format!("-plugin-dir={}", demo.mirror().display()),
    ])?;
    let alert_var = format!("alert_endpoint={}/ops", receiver.url);
    let applied = terraform.run(&["apply", "-auto-approve", "-no-color", "-var", &alert_var])?;
    for line in applied
        .lines()
        .filter(|l| l.contains("Creation complete") || l.starts_with("Apply complete"))
    {
        println!("    {line}");
    }
    for line in terraform.run(&["output", "-no-color"])?.lines() {
        println!("    {line}");
    }
    terraform.check_second_plan_empty(&alert_var)
}

impl Terraform {
    /// Copies examples/quickstart into the demo's directory, with an empty CLI configuration.
    fn in_copy_of_quickstart(demo: &Demo, gateway: &Gateway) -> anyhow::Result<Terraform> {
        let work = demo.quickstart_dir();
        fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
        for name in ["main.tf", "release-policy.yaml"] {
            let from = root().join("examples/quickstart").join(name);
            fs::copy(&from, work.join(name)).with_context(|| {
                format!("cannot copy {} into {}", from.display(), work.display())
            })?;
        }
        let cli_config = demo.dir.join("terraform.rc");
        fs::write(&cli_config, "")
            .with_context(|| format!("cannot write {}", cli_config.display()))?;
        Ok(Terraform {
            program: demo.tools.bin.join("terraform"),
            work,
            cli_config,
            gateway_url: gateway.api.base.clone(),
            admin_token: demo.admin_token.clone(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(args)
            .current_dir(&self.work)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("MESHGUARD_GATEWAY_URL", &self.gateway_url)
            .env("MESHGUARD_ADMIN_TOKEN", &self.admin_token);
        c
    }

    /// `terraform ARGS`, which must succeed; what it printed.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(args)
            .env("TF_IN_AUTOMATION", "1")
            .output()
            .context("cannot run terraform")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "terraform {} failed:\n{text}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// A second plan finds nothing to change (`-detailed-exitcode` exits 0).
    fn check_second_plan_empty(&self, alert_var: &str) -> anyhow::Result<()> {
        let plan: Output = self
            .command(&["plan", "-detailed-exitcode", "-no-color", "-var", alert_var])
            .output()
            .context("cannot run terraform plan")?;
        let empty = plan.status.code() == Some(0);
        println!(
            "    second plan: {}",
            if empty {
                "no changes (exit 0)"
            } else {
                "CHANGES PENDING"
            }
        );
        if !empty {
            bail!(
                "the second plan of the quickstart is not empty:\n{}",
                String::from_utf8_lossy(&plan.stdout)
            );
        }
        Ok(())
    }
}
