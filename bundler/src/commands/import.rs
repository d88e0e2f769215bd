//! `meshguard-bundle import`: verify, then import into a registry and a Terraform mirror.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::shared::{RegistryAccessArgs, TrustArgs};
use meshguard_bundler::import;

#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    /// Push images to this registry (HOST:PORT); without it images go to DEST/images.
    #[arg(long)]
    pub(crate) registry: Option<String>,
    /// Talk to the registry over plain HTTP.
    #[arg(long)]
    pub(crate) insecure: bool,
    #[command(flatten)]
    pub(crate) registry_access: RegistryAccessArgs,
    /// Put the Terraform provider in this filesystem mirror (default DEST/terraform/providers).
    #[arg(long)]
    pub(crate) terraform_mirror: Option<PathBuf>,
    /// Where chart, modules, policies and license go.
    #[arg(long, default_value = "meshguard-imported")]
    pub(crate) dest: PathBuf,
}

pub(crate) fn run(a: ImportArgs) -> Result<ExitCode> {
    let (key, opts) = a.trust.load()?;
    let (_, receipt) = import::import(
        &a.dir,
        &key,
        &import::Options {
            registry: a.registry,
            access: a.registry_access.access(a.insecure),
            terraform_mirror: a.terraform_mirror,
            dest: a.dest.clone(),
            verify: opts,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&receipt)?);
    Ok(ExitCode::SUCCESS)
}
