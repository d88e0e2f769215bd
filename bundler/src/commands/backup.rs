//! `meshguard-bundle backup take|follow|verify` and `meshguard-bundle restore`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use meshguard_bundler::audit_archive::Source;
use meshguard_bundler::backup::postgres::DatabaseUrl;
use meshguard_bundler::backup::{self, restore};
use meshguard_bundler::keys::{MediaKey, MediaPublicKey};

use super::shared::{PassphraseArg, admin_token};

#[derive(Subcommand, Debug)]
pub(crate) enum BackupCommand {
    /// Back up a running gateway into a new directory, decisions going on: its database copied
    /// consistently, then its audit log up to a checkpoint signed after the copy, signed with
    /// --key. The admin token comes from MESHGUARD_ADMIN_TOKEN or --admin-token-file.
    Take(TakeArgs),
    /// Keep a backup's audit log current: pull the entries the log gained, prove them against
    /// a fresh signed checkpoint and sign the backup anew, every --every seconds (the audit
    /// log's recovery point is then that interval). Runs until stopped, or --rounds times.
    Follow(FollowArgs),
    /// Verify a backup with no network: its signature, every file, the audit log's chains and
    /// the tree at every checkpoint.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// The gateway, e.g. http://meshguard:3100.
    #[arg(long)]
    gateway: String,
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// A PEM bundle of the site's CAs, when the gateway serves HTTPS with a private CA.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// The signing key (`meshguard-bundle keys generate`).
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArg,
}

impl GatewayArgs {
    fn open(self) -> Result<(Source, MediaKey)> {
        let key = MediaKey::load(&self.key, &self.passphrase.get()?)?;
        let source = Source {
            url: self.gateway,
            admin_token: admin_token(self.admin_token_file.as_deref())?,
            ca_bundle: self.ca_bundle,
        };
        Ok((source, key))
    }
}

#[derive(Args, Debug)]
pub(crate) struct TakeArgs {
    /// The backup directory (new, or empty).
    #[arg(long, required_unless_present = "into", conflicts_with = "into")]
    out: Option<PathBuf>,
    /// Write the backup into a new directory under this one, named after the time
    /// (`20261207T114500Z`), as a scheduled job does.
    #[arg(long)]
    into: Option<PathBuf>,
    /// With --into: keep this many backups there (the newest), removing older ones once this
    /// one is written and signed.
    #[arg(long, requires = "into")]
    keep: Option<usize>,
    /// Encrypt the database copy to this age recipient (age1…; repeatable): it holds the
    /// control plane's records. The audit log is already signed and carries no secrets.
    #[arg(long)]
    recipient: Vec<String>,
    /// The PostgreSQL control plane of a gateway on DATABASE_URL (libpq's URL; the gateway's own
    /// is fine): dumped into the backup with `pg_dump --format=custom` (PostgreSQL's client
    /// tools, from PG_BIN or PATH). Its password is never printed or written to the backup.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub(crate) struct FollowArgs {
    /// The backup directory, made by `backup take`.
    #[arg(long)]
    dir: PathBuf,
    /// Seconds between pulls.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Stop after this many pulls (default: run until stopped).
    #[arg(long)]
    rounds: Option<u64>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    dir: PathBuf,
    /// The public key the backup was signed with.
    #[arg(long)]
    pubkey: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The backup directory.
    backup: PathBuf,
    /// The public key the backup was signed with.
    #[arg(long)]
    pubkey: PathBuf,
    /// The new gateway's data directory (empty): its meshguard.db and audit-log/ are written
    /// there, where the gateway looks by default.
    #[arg(long)]
    data: PathBuf,
    /// The age identity the database copy was encrypted to.
    #[arg(long)]
    identity: Vec<PathBuf>,
    /// Entries the site held after the backup and lost, as two log sizes `FROM..TO` (FROM is
    /// the backup's size; TO, e.g., the size a witness cosigned): recorded in the restored
    /// log as lost.
    #[arg(long, value_parser = parse_range)]
    lost: Option<(u64, u64)>,
    /// An empty PostgreSQL database to load the backup's control-plane dump into with
    /// `pg_restore` (required when the backup holds one); the new gateway's DATABASE_URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not FROM..TO (two log sizes)"))?;
    let n = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{v:?} in {s:?} is not a log size"))
    };
    Ok((n(a)?, n(b)?))
}

pub(crate) fn run(cmd: BackupCommand) -> Result<ExitCode> {
    match cmd {
        BackupCommand::Take(a) => take(a),
        BackupCommand::Follow(a) => follow(a),
        BackupCommand::Verify(a) => verify(a),
    }
}

fn take(a: TakeArgs) -> Result<ExitCode> {
    let recipients = meshguard_license::seal::parse_recipients(&a.recipient)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (source, key) = a.gateway.open()?;
    let out = match (&a.out, &a.into) {
        (Some(out), _) => out.clone(),
        (None, Some(into)) => into.join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()),
        (None, None) => bail!("--out or --into is required"),
    };
    let database = a
        .database_url
        .as_deref()
        .map(DatabaseUrl::parse)
        .transpose()?;
    let m = backup::take::backup(&source, &out, &key, &recipients, database.as_ref())?;
    println!(
        "backed up {} ({} control plane) into {}: the database{}, and the audit log's {} entries proven against its signed checkpoint; signed by key {}",
        m.audit.origin,
        m.gateway.control_plane,
        out.display(),
        if m.database.encrypted {
            " (age-encrypted)"
        } else {
            ""
        },
        m.audit.size,
        key.public().key_id()
    );
    if let Some(cp) = &m.control_plane {
        println!(
            "the PostgreSQL control plane is in {} ({}, {} objects, {})",
            cp.file, cp.format, cp.objects, cp.dumped_with
        );
    }
    print_not_included(&m.not_included);
    if let (Some(into), Some(keep)) = (&a.into, a.keep) {
        for removed in backup::take::prune(into, keep)? {
            println!("removed the older backup {}", removed.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn follow(a: FollowArgs) -> Result<ExitCode> {
    if a.every == 0 {
        bail!("--every must be at least 1 second");
    }
    let (source, key) = a.gateway.open()?;
    let mut round = 0u64;
    loop {
        let m = backup::take::follow_once(&source, &a.dir, &key)?;
        println!(
            "{}: {} audit entries backed up",
            m.audit.origin, m.audit.size
        );
        round += 1;
        if a.rounds.is_some_and(|r| round >= r) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(a.every));
    }
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let pubkey = MediaPublicKey::from_file(&a.pubkey)?;
    let (m, signed_by) = backup::verify(&a.dir, &pubkey)?;
    let verified =
        meshguard_bundler::audit_archive::verify(&a.dir.join(&m.audit.dir), Some(&m.audit.vkey))?;
    println!(
        "backup verified: signed by key {signed_by}; taken {}; {} audit entries of {}, every chain and checkpoint checked",
        m.taken_at, verified.entries, verified.origin
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn restore(a: RestoreArgs) -> Result<ExitCode> {
    let pubkey = MediaPublicKey::from_file(&a.pubkey)?;
    let mut identities = meshguard_license::seal::Identities::default();
    for f in &a.identity {
        identities.add_file(f).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let target = restore::Target {
        control_plane: a
            .database_url
            .as_deref()
            .map(DatabaseUrl::parse)
            .transpose()?,
        ..restore::Target::in_data_dir(&a.data)
    };
    let r = restore::restore(&a.backup, &pubkey, &target, &identities, a.lost)?;
    println!(
        "restored {} entries of {} (signed by key {}) into {}; the database's index holds {} of them, the gateway indexes the rest at start",
        r.size,
        r.origin,
        r.signed_by,
        a.data.display(),
        r.indexed
    );
    if let Some(url) = &target.control_plane {
        println!(
            "loaded the control plane into {} with pg_restore: give the gateway that DATABASE_URL",
            url.shown()
        );
    }
    println!(
        "start the gateway with DB_PATH={} and AUDIT_ORIGIN={}; it records the restore in its log",
        target.db_path.display(),
        r.origin
    );
    println!("the log's verifier key is {}", r.vkey);
    print_not_included(&r.not_included);
    Ok(ExitCode::SUCCESS)
}

fn print_not_included(items: &[String]) {
    println!("not in the backup, to put in place from the site's own records:");
    for item in items {
        println!("  - {item}");
    }
}
