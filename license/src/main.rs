//! `meshguard-license`: issue, activate and renew MeshGuard licenses across an air gap.
//!
//! Vendor side: `keys generate`, `issue`, `activate`, `renew`.
//! Site side: `site-key`, `request`, `install`, `status`.
//! Either side: `verify`.
//!
//! Every output that crosses the gap takes `--encrypt-to age1…` (repeatable); every input may
//! be age-encrypted and is opened with `--identity FILE` (and, on the site, the site key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Parser, Subcommand};
use meshguard_license::document::{LICENSE_SCHEMA, timestamp};
use meshguard_license::seal::{self, Identities, Passphrase};
use meshguard_license::site::{Expect, InstallKind, SiteDir, write_output};
use meshguard_license::{
    Activation, ActivationRequest, DeploymentMode, Entitlements, License, SignedActivation,
    SignedLicense, State, Status, VendorKey, VendorPublicKey,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser, Debug)]
#[command(
    name = "meshguard-license",
    version,
    about = "Offline MeshGuard licensing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Vendor signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Vendor: sign a new license.
    Issue(IssueArgs),
    /// Vendor: sign a renewal of a license (same id, higher sequence).
    Renew(RenewArgs),
    /// Vendor: answer a site's activation request.
    Activate(ActivateArgs),
    /// Site: make an activation request binding a license to this installation.
    Request(RequestArgs),
    /// Site: verify and install a license (and its activation).
    Install(InstallArgs),
    /// Site: the installed license's state; exits 1 unless it is valid or in grace.
    Status(StatusArgs),
    /// Verify a license (and an activation) against the vendor public key.
    Verify(VerifyArgs),
    /// Site: print this installation's age recipient (making its identity on first use).
    SiteKey(SiteDirArg),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Make an ed25519 key pair; the private key is encrypted with a passphrase.
    Generate {
        /// Where to write the encrypted private key (mode 0600).
        #[arg(long)]
        secret: PathBuf,
        /// Where to write the public key (PEM), which sites configure.
        #[arg(long)]
        public: PathBuf,
        /// scrypt work factor (log2 N) for the key's encryption; age picks about one second
        /// when absent.
        #[arg(long, value_parser = clap::value_parser!(u8).range(10..=22))]
        work_factor: Option<u8>,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
}

#[derive(Args, Debug)]
struct PassphraseArg {
    /// File holding the key passphrase; otherwise MESHGUARD_LICENSE_PASSPHRASE is read.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

impl PassphraseArg {
    fn get(&self) -> Result<Passphrase> {
        Ok(Passphrase::from_file_or_env(
            self.passphrase_file.as_deref(),
            "MESHGUARD_LICENSE_PASSPHRASE",
        )?)
    }
}

#[derive(Args, Debug)]
struct VendorKeyArg {
    /// The encrypted vendor private key.
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArg,
}

impl VendorKeyArg {
    fn load(&self) -> Result<VendorKey> {
        let bytes = std::fs::read(&self.key)
            .with_context(|| format!("cannot read the key {}", self.key.display()))?;
        Ok(VendorKey::from_encrypted(
            &bytes,
            &self.passphrase.get()?,
            &self.key.display().to_string(),
        )?)
    }
}

#[derive(Args, Debug)]
struct Output {
    /// Output file; `-` or absent writes to standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Encrypt the output to this age recipient (age1…); repeatable.
    #[arg(long = "encrypt-to")]
    encrypt_to: Vec<String>,
}

impl Output {
    fn write(&self, bytes: &[u8]) -> Result<()> {
        let bytes = if self.encrypt_to.is_empty() {
            bytes.to_vec()
        } else {
            seal::encrypt_to(bytes, &seal::parse_recipients(&self.encrypt_to)?)?
        };
        write_output(self.out.as_deref(), &bytes, false)?;
        if let Some(p) = self.out.as_deref().filter(|p| *p != Path::new("-")) {
            eprintln!("wrote {}", p.display());
        }
        Ok(())
    }
}

#[derive(Args, Debug, Default)]
struct IdentityArg {
    /// age identity file (as `age-keygen` writes) to open encrypted inputs; repeatable.
    #[arg(long = "identity", short = 'i')]
    identity: Vec<PathBuf>,
}

impl IdentityArg {
    fn load(&self, site: Option<&SiteDir>) -> Result<Identities> {
        let mut ids = Identities::default();
        for p in &self.identity {
            ids.add_file(p)?;
        }
        if let Some(site) = site
            && site.identity_path().exists()
        {
            ids.add_file(&site.identity_path())?;
        }
        Ok(ids)
    }
}

fn read_input(path: &Path, ids: &Identities) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(ids.open(bytes, &path.display().to_string())?)
}

#[derive(Args, Debug)]
struct Terms {
    /// Maximum active agents (absent: no limit).
    #[arg(long)]
    max_agents: Option<u64>,
    /// Maximum gateways serving at once on the installation (absent: no limit).
    #[arg(long)]
    max_gateways: Option<u64>,
    /// A licensed feature, e.g. evidence-profiles; repeatable.
    #[arg(long = "feature")]
    features: Vec<String>,
    /// Days after expiry during which everything keeps working, with warnings.
    #[arg(long)]
    grace_days: Option<u32>,
}

#[derive(Args, Debug)]
struct IssueArgs {
    #[command(flatten)]
    key: VendorKeyArg,
    /// License id (default: lic_ and 16 random hex digits).
    #[arg(long)]
    id: Option<String>,
    /// The customer the license is issued to, as it appears on it.
    #[arg(long)]
    customer: String,
    /// The product edition (e.g. enterprise).
    #[arg(long, default_value = "enterprise")]
    edition: String,
    /// Deployment mode the license is for.
    #[arg(long, value_enum)]
    mode: DeploymentMode,
    /// Allowed region; repeatable; `*` allows any.
    #[arg(long = "region", required = true)]
    regions: Vec<String>,
    /// Start of validity (RFC 3339; default now).
    #[arg(long)]
    not_before: Option<String>,
    /// End of validity (RFC 3339).
    #[arg(
        long,
        conflicts_with = "valid_for",
        required_unless_present = "valid_for"
    )]
    expires: Option<String>,
    /// Validity from not-before, e.g. 365d.
    #[arg(long)]
    valid_for: Option<humantime::Duration>,
    #[command(flatten)]
    terms: Terms,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Debug)]
struct RenewArgs {
    #[command(flatten)]
    key: VendorKeyArg,
    /// The license to renew (its latest renewal).
    #[arg(long)]
    license: PathBuf,
    #[command(flatten)]
    identity: IdentityArg,
    /// New end of validity (RFC 3339).
    #[arg(long, conflicts_with = "extend", required_unless_present = "extend")]
    expires: Option<String>,
    /// Extend the current expiry by this much, e.g. 365d.
    #[arg(long)]
    extend: Option<humantime::Duration>,
    #[command(flatten)]
    terms: Terms,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Debug)]
struct ActivateArgs {
    #[command(flatten)]
    key: VendorKeyArg,
    /// The license file (as issued; age-encrypted is fine with -i).
    #[arg(long)]
    license: PathBuf,
    /// The site's activation request.
    #[arg(long)]
    request: PathBuf,
    #[command(flatten)]
    identity: IdentityArg,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Debug)]
struct SiteDirArg {
    /// The gateway's license directory (LICENSE_DIR; by default `license/` beside the
    /// database).
    #[arg(long, env = "LICENSE_DIR")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
struct ExpectArgs {
    /// This installation's deployment mode (DEPLOYMENT_MODE), checked against the license.
    #[arg(long, env = "DEPLOYMENT_MODE", value_enum)]
    mode: Option<DeploymentMode>,
    /// This installation's region (REGION), checked against the license.
    #[arg(long, env = "REGION")]
    region: Option<String>,
}

impl ExpectArgs {
    fn expect(&self) -> Expect {
        Expect {
            mode: self.mode,
            region: self.region.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct PubkeyArg {
    /// The vendor public key (PEM).
    #[arg(long, env = "LICENSE_PUBKEY")]
    pubkey: PathBuf,
}

impl PubkeyArg {
    fn load(&self) -> Result<VendorPublicKey> {
        Ok(VendorPublicKey::from_file(&self.pubkey)?)
    }
}

#[derive(Args, Debug)]
struct RequestArgs {
    #[command(flatten)]
    site: SiteDirArg,
    #[command(flatten)]
    pubkey: PubkeyArg,
    /// The license file (as issued; age-encrypted is fine with -i).
    #[arg(long)]
    license: PathBuf,
    #[command(flatten)]
    identity: IdentityArg,
    #[command(flatten)]
    expect: ExpectArgs,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Debug)]
struct InstallArgs {
    #[command(flatten)]
    site: SiteDirArg,
    #[command(flatten)]
    pubkey: PubkeyArg,
    /// The license file (as issued; age-encrypted is fine with -i).
    #[arg(long)]
    license: PathBuf,
    /// The vendor's activation (not needed for a renewal of the installed license).
    #[arg(long)]
    activation: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArg,
    #[command(flatten)]
    expect: ExpectArgs,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    site: SiteDirArg,
    #[command(flatten)]
    pubkey: PubkeyArg,
    #[command(flatten)]
    expect: ExpectArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    pubkey: PubkeyArg,
    /// The license file (as issued; age-encrypted is fine with -i).
    #[arg(long)]
    license: PathBuf,
    /// The vendor's activation (not needed for a renewal of the installed license).
    #[arg(long)]
    activation: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArg,
    #[command(flatten)]
    expect: ExpectArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn time_arg(s: &str, flag: &str) -> Result<DateTime<Utc>> {
    timestamp::parse(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

fn duration_arg(d: humantime::Duration, flag: &str) -> Result<Duration> {
    Duration::from_std(*d).with_context(|| format!("--{flag} is too long"))
}

fn now() -> DateTime<Utc> {
    // Whole seconds: documents carry second precision.
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("the clock is in range")
}

fn signed_license_bytes(signed: &SignedLicense) -> Vec<u8> {
    signed.envelope.to_json()
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys(k) => generate_keys(k),
        Command::Issue(a) => issue(a),
        Command::Renew(a) => renew(a),
        Command::Activate(a) => activate(a),
        Command::Request(a) => request(a),
        Command::Install(a) => install(a),
        Command::Status(a) => status(a),
        Command::Verify(a) => verify(a),
        Command::SiteKey(a) => site_key(a),
    }
}

fn generate_keys(command: KeysCommand) -> Result<ExitCode> {
    let KeysCommand::Generate {
        secret,
        public,
        work_factor,
        passphrase,
    } = command;
    for p in [&secret, &public] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    let key = VendorKey::generate();
    let encrypted = key.to_encrypted(&passphrase.get()?, work_factor)?;
    write_output(Some(&secret), &encrypted, true)?;
    write_output(Some(&public), key.public().to_pem().as_bytes(), false)?;
    println!(
        "vendor key {} written: {} (encrypted), {} (public)",
        key.public().key_id(),
        secret.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn issue(a: IssueArgs) -> Result<ExitCode> {
    let key = a.key.load()?;
    let not_before = match &a.not_before {
        Some(t) => time_arg(t, "not-before")?,
        None => now(),
    };
    let expires = match (&a.expires, a.valid_for) {
        (Some(t), _) => time_arg(t, "expires")?,
        (None, Some(d)) => not_before + duration_arg(d, "valid-for")?,
        (None, None) => bail!("give --expires or --valid-for"),
    };
    let license = License {
        schema: LICENSE_SCHEMA.into(),
        id: a
            .id
            .unwrap_or_else(|| format!("lic_{}", hex::encode(rand::random::<[u8; 8]>()))),
        customer: a.customer,
        edition: a.edition,
        deployment_mode: a.mode,
        entitlements: Entitlements {
            max_agents: a.terms.max_agents,
            max_gateways: a.terms.max_gateways,
            features: a.terms.features,
        },
        regions: a.regions,
        not_before,
        expires,
        grace_days: a.terms.grace_days.unwrap_or(30),
        sequence: 1,
        issued_at: now(),
    };
    let signed = license.sign(&key)?;
    a.output.write(&signed_license_bytes(&signed))?;
    eprintln!(
        "issued license {} (sequence 1) for {}, valid {} to {}",
        license.id,
        license.customer,
        timestamp::format(&license.not_before),
        timestamp::format(&license.expires)
    );
    Ok(ExitCode::SUCCESS)
}

fn renew(a: RenewArgs) -> Result<ExitCode> {
    let key = a.key.load()?;
    let ids = a.identity.load(None)?;
    let bytes = read_input(&a.license, &ids)?;
    let old = SignedLicense::verify(&bytes, &key.public(), &a.license.display().to_string())?;
    let mut l = old.license.clone();
    l.expires = match (&a.expires, a.extend) {
        (Some(t), _) => time_arg(t, "expires")?,
        (None, Some(d)) => l.expires + duration_arg(d, "extend")?,
        (None, None) => bail!("give --expires or --extend"),
    };
    if l.expires <= old.license.expires {
        bail!(
            "the renewal must expire after the current license ({}); give a later \
             --expires",
            timestamp::format(&old.license.expires)
        );
    }
    if a.terms.max_agents.is_some() {
        l.entitlements.max_agents = a.terms.max_agents;
    }
    if a.terms.max_gateways.is_some() {
        l.entitlements.max_gateways = a.terms.max_gateways;
    }
    if !a.terms.features.is_empty() {
        l.entitlements.features = a.terms.features;
    }
    if let Some(g) = a.terms.grace_days {
        l.grace_days = g;
    }
    l.sequence = old.license.sequence + 1;
    l.issued_at = now();
    let signed = l.sign(&key)?;
    a.output.write(&signed_license_bytes(&signed))?;
    eprintln!(
        "renewed license {} as sequence {}, valid until {}",
        l.id,
        l.sequence,
        timestamp::format(&l.expires)
    );
    Ok(ExitCode::SUCCESS)
}

fn activate(a: ActivateArgs) -> Result<ExitCode> {
    let key = a.key.load()?;
    let ids = a.identity.load(None)?;
    let license = SignedLicense::verify(
        &read_input(&a.license, &ids)?,
        &key.public(),
        &a.license.display().to_string(),
    )?;
    let request = ActivationRequest::parse(
        &read_input(&a.request, &ids)?,
        &a.request.display().to_string(),
    )?;
    let activation = Activation::for_request(&license.license, &request, now())?;
    let signed = activation.sign(&key)?;
    a.output.write(&signed.envelope.to_json())?;
    eprintln!(
        "activated license {} on installation {}",
        license.license.id, request.installation_id
    );
    Ok(ExitCode::SUCCESS)
}

fn request(a: RequestArgs) -> Result<ExitCode> {
    let site = SiteDir::new(&a.site.data_dir);
    let ids = a.identity.load(Some(&site))?;
    let key = a.pubkey.load()?;
    let license = SignedLicense::verify(
        &read_input(&a.license, &ids)?,
        &key,
        &a.license.display().to_string(),
    )?;
    let request = site.create_request(&license, &a.expect.expect(), VERSION, now())?;
    let mut bytes = serde_json::to_vec_pretty(&request)?;
    bytes.push(b'\n');
    a.output.write(&bytes)?;
    eprintln!(
        "activation request for license {} on installation {} (nonce {}); send it to \
         the vendor",
        request.license_id, request.installation_id, request.nonce
    );
    Ok(ExitCode::SUCCESS)
}

fn install(a: InstallArgs) -> Result<ExitCode> {
    let site = SiteDir::new(&a.site.data_dir);
    let ids = a.identity.load(Some(&site))?;
    let key = a.pubkey.load()?;
    let license = read_input(&a.license, &ids)?;
    let activation = a
        .activation
        .as_ref()
        .map(|p| read_input(p, &ids))
        .transpose()?;
    let (installed, kind) = site.install(
        &key,
        &license,
        activation.as_deref(),
        &a.expect.expect(),
        now(),
    )?;
    let l = &installed.license.license;
    match kind {
        InstallKind::Activated => println!(
            "installed license {} (sequence {}), valid until {}",
            l.id,
            l.sequence,
            timestamp::format(&l.expires)
        ),
        InstallKind::Renewed { from_sequence } => println!(
            "installed renewal of license {}: sequence {from_sequence} -> {}, valid \
             until {}",
            l.id,
            l.sequence,
            timestamp::format(&l.expires)
        ),
        InstallKind::Unchanged => println!(
            "license {} sequence {} is already installed; nothing changed",
            l.id, l.sequence
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn status(a: StatusArgs) -> Result<ExitCode> {
    let site = SiteDir::new(&a.site.data_dir);
    let key = a.pubkey.load()?;
    let status = site.check(&key, &a.expect.expect(), now());
    print_status(&status, a.json)?;
    Ok(exit_for(&status))
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let ids = a.identity.load(None)?;
    let key = a.pubkey.load()?;
    let what = a.license.display().to_string();
    let license = SignedLicense::verify(&read_input(&a.license, &ids)?, &key, &what)?;
    if let Some(p) = &a.activation {
        let activation =
            SignedActivation::verify(&read_input(p, &ids)?, &key, &p.display().to_string())?;
        if activation.activation.license_id != license.license.id {
            bail!(
                "{} is for license {}, not {}",
                p.display(),
                activation.activation.license_id,
                license.license.id
            );
        }
        eprintln!(
            "activation verified: installation {}",
            activation.activation.installation_id
        );
    }
    let expect = a.expect.expect();
    if let Some(mode) = expect.mode
        && mode != license.license.deployment_mode
    {
        bail!(meshguard_license::LicenseError::WrongMode {
            id: license.license.id.clone(),
            licensed: license.license.deployment_mode.as_str().into(),
            configured: mode.as_str().into(),
        });
    }
    if let Some(region) = &expect.region
        && !license.license.allows_region(region)
    {
        bail!(meshguard_license::LicenseError::WrongRegion {
            id: license.license.id.clone(),
            allowed: license.license.regions.join(", "),
            configured: region.clone(),
        });
    }
    let status = Status::of(&license, now());
    print_status(&status, a.json)?;
    Ok(exit_for(&status))
}

fn site_key(a: SiteDirArg) -> Result<ExitCode> {
    let site = SiteDir::new(&a.data_dir);
    println!("{}", site.ensure_identity()?);
    Ok(ExitCode::SUCCESS)
}

fn exit_for(status: &Status) -> ExitCode {
    match status.state {
        State::Valid | State::Grace => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn print_status(s: &Status, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!("state: {}", s.state.as_str());
    println!("{}", s.message);
    let rows = [
        ("license", s.license_id.clone()),
        ("customer", s.customer.clone()),
        ("edition", s.edition.clone()),
        (
            "deployment mode",
            s.deployment_mode.map(|m| m.as_str().to_owned()),
        ),
        ("sequence", s.sequence.map(|n| n.to_string())),
        ("not before", s.not_before.clone()),
        ("expires", s.expires.clone()),
        ("grace ends", s.grace_ends.clone()),
        (
            "max agents",
            s.license_id
                .as_ref()
                .map(|_| s.max_agents.map_or("unlimited".into(), |n| n.to_string())),
        ),
        ("installation", s.installation_id.clone()),
    ];
    for (name, value) in rows {
        if let Some(v) = value {
            println!("{name}: {v}");
        }
    }
    if !s.features.is_empty() {
        println!("features: {}", s.features.join(", "));
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
