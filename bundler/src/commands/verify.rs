//! `meshguard-bundle verify`: verify media with no network.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::shared::TrustArgs;
use meshguard_bundler::verify;

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    /// Write the transcript to PREFIX.txt and PREFIX.json.
    #[arg(long)]
    pub(crate) transcript: Option<PathBuf>,
    /// Print the transcript as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(a: VerifyArgs) -> Result<ExitCode> {
    let (key, opts) = a.trust.load()?;
    let (t, result) = verify::verify(&a.dir, &key, &opts);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print!("{}", t.text());
    }
    if let Some(prefix) = &a.transcript {
        let (txt, json) = verify::write_transcript(&t, prefix)?;
        eprintln!("transcript: {} and {}", txt.display(), json.display());
    }
    if let Err(e) = result {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
