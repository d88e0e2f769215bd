//! `meshguard-bundle`: create, verify, pack, unpack, import and inspect offline media.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use meshguard_bundler::keys::{CosignKey, MediaKey, MediaPublicKey, Passphrase};
use meshguard_bundler::{create, import, manifest, media, pack, verify};

#[derive(Parser, Debug)]
#[command(
    name = "meshguard-bundle",
    version,
    about = "Signed offline media for MeshGuard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Assemble and sign media from a manifest.
    Create(CreateArgs),
    /// Verify media with no network; exit 1 naming the first problem.
    Verify(VerifyArgs),
    /// Verify, then import into a registry (or a local directory) and a Terraform mirror.
    Import(ImportArgs),
    /// Pack media into a deterministic tar.zst, optionally split into volumes.
    Pack(PackArgs),
    /// Check every volume against the signed index, then extract.
    Unpack(UnpackArgs),
    /// Install a site from media, no network: verify, import, start, bootstrap, smoke-test,
    /// and write a signed transcript (the air-gapped runbook as one command).
    Install(InstallArgs),
    /// Show what media holds (from MEDIA.json; does not verify).
    Inspect { dir: PathBuf },
    /// Build the product's OCI images (NAMESPACE/gateway, NAMESPACE/tools) from its binaries,
    /// with no container daemon, into an OCI layout that `create` takes as `oci:layout:`.
    Images(ImagesArgs),
    /// Pack a terraform-provider-meshguard binary into Terraform's packed mirror layout (zip,
    /// SHA256SUMS, h1: and zh: hashes), for `terraform init -plugin-dir`.
    ProviderMirror(ProviderMirrorArgs),
    /// The local audit archive: segments of the gateway's log, each proven against a signed
    /// checkpoint, in a directory that verifies on its own (the chart's archive job).
    #[command(subcommand)]
    AuditArchive(AuditArchiveCommand),
    /// Evidence bundles for auditors: export one regime's evidence for a period from the
    /// gateway, signed; verify it offline.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
}

#[derive(Subcommand, Debug)]
enum EvidenceCommand {
    /// Export a signed evidence bundle of PROFILE for a period (hipaa, fedramp-moderate, finra,
    /// soc2, iso27001, pci-dss, sovereign-eu, airgapped-defense). The admin token comes from
    /// MESHGUARD_ADMIN_TOKEN or --admin-token-file; the key's passphrase from
    /// MESHGUARD_BUNDLE_PASSPHRASE or --passphrase-file.
    Export {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        profile: String,
        /// Start of the period (included): 2026-11-01 or an RFC 3339 time.
        #[arg(long, required_unless_present = "month", conflicts_with = "month")]
        from: Option<String>,
        /// End of the period (excluded).
        #[arg(long, required_unless_present = "month", conflicts_with = "month")]
        to: Option<String>,
        /// The calendar month instead (e.g. 2026-11): the monthly continuous-monitoring bundle.
        #[arg(long)]
        month: Option<String>,
        /// The bundle directory to create (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The exporter's signing key (`meshguard-bundle keys generate`, minisign format).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// The site's signed installation transcript (`.json`; its `.minisig` beside it).
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// Export even when no quorum of witnesses cosigned a checkpoint covering the period.
        #[arg(long)]
        allow_unwitnessed: bool,
    },
    /// Verify a bundle with no network and print the verification transcript; exit 1 unless
    /// every check passes.
    Verify {
        dir: PathBuf,
        /// The exporter's public key.
        #[arg(long)]
        pubkey: PathBuf,
        /// The log's verifier key you trust (default: the one in the signed manifest).
        #[arg(long)]
        log_key: Option<String>,
        /// A witness's verifier key (repeat for each); its cosignature must be on the checkpoint.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// How many of the witnesses must have cosigned (default: all given).
        #[arg(long)]
        quorum: Option<usize>,
        /// The site key that signed the installation transcript.
        #[arg(long)]
        transcript_pubkey: Option<PathBuf>,
        /// Accept that the witnesses' cosignatures are not checked (no --witness key): without
        /// this, a bundle verified with no witness key is UNVERIFIED.
        #[arg(long)]
        accept_unwitnessed: bool,
        /// Accept that the installation transcript's signature is not checked (no
        /// --transcript-pubkey): without this, such a bundle is UNVERIFIED.
        #[arg(long)]
        accept_unsigned_transcript: bool,
        /// Print the transcript as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the transcript (text, and JSON beside it as .json) to this file.
        #[arg(long)]
        transcript_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditArchiveCommand {
    /// Archive what the gateway's log holds beyond the archive, once proven against a fresh
    /// checkpoint signed by the log's key. The admin token comes from MESHGUARD_ADMIN_TOKEN or
    /// --admin-token-file.
    Pull {
        /// The archive directory (created on the first run).
        #[arg(long)]
        dir: PathBuf,
        /// The gateway, e.g. http://meshguard:3100.
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// A PEM bundle of the site's CAs, when the gateway serves HTTPS with a private CA.
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// The log's verifier key (`GET /admin/audit/checkpoint` shows it): pinned on the first
        /// run; without it the gateway's key is taken and printed, to be checked out of band.
        #[arg(long)]
        vkey: Option<String>,
    },
    /// Keep an evidence bundle in the archive (never replacing one): it must verify with the
    /// exporter's key and the archive's log key, and prove entries the archive holds.
    AddEvidence {
        #[arg(long)]
        dir: PathBuf,
        /// The evidence bundle (`meshguard-bundle evidence export`).
        bundle: PathBuf,
        /// The exporter's public key, pinned in the archive with the bundle.
        #[arg(long)]
        pubkey: PathBuf,
    },
    /// Verify the archive, print its root (and with --evidence, copy that bundle out, verified,
    /// with its manifest digest and its checkpoint's root), as JSON.
    Retrieve {
        #[arg(long)]
        dir: PathBuf,
        /// The name of an archived evidence bundle.
        #[arg(long, requires = "out")]
        evidence: Option<String>,
        /// Where to copy the bundle (must not exist).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an archive with no network: digests, chains, and the tree at every checkpoint.
    Verify {
        dir: PathBuf,
        /// The log's verifier key you trust (default: the one the archive pinned).
        #[arg(long)]
        vkey: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyKind {
    /// ed25519 in the minisign format.
    Ed25519,
    /// ECDSA P-256 as cosign uses (PKCS#8 encrypted PEM, PKIX PEM public key).
    P256,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Make a key pair; the private key is written encrypted.
    Generate {
        /// The key type: ed25519 signs media (minisign format), p256 signs the sigstore bundle.
        #[arg(long, value_enum, default_value = "ed25519")]
        kind: KeyKind,
        /// Where the secret key goes (written encrypted, mode 0600; never overwritten).
        #[arg(long)]
        secret: PathBuf,
        /// Where the public key goes (what sites trust, obtained out of band).
        #[arg(long)]
        public: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
}

#[derive(Args, Debug)]
struct PassphraseArg {
    /// File holding the key passphrase; otherwise MESHGUARD_BUNDLE_PASSPHRASE is read.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

impl PassphraseArg {
    fn get(&self) -> Result<Passphrase> {
        Ok(Passphrase::from_file_or_env(
            self.passphrase_file.as_deref(),
            "MESHGUARD_BUNDLE_PASSPHRASE",
        )?)
    }
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The media manifest (meshguard.media/v1, docs/media.md).
    #[arg(long)]
    manifest: PathBuf,
    /// The media directory to write (built beside it and renamed into place once signed).
    #[arg(long)]
    out: PathBuf,
    /// The ed25519 (minisign) secret key that signs the media.
    #[arg(long)]
    key: PathBuf,
    /// A P-256 secret key: also write SHA256SUMS.sigstore.json.
    #[arg(long)]
    cosign_key: Option<PathBuf>,
    /// Older media: leave out the image layers it already holds (differential media).
    #[arg(long)]
    since: Option<PathBuf>,
    /// A registry to reach over plain HTTP (repeatable), e.g. 127.0.0.1:5000.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    #[command(flatten)]
    registry_access: RegistryAccessArgs,
    #[command(flatten)]
    passphrase: PassphraseArg,
}

#[derive(Args, Debug)]
struct ImagesArgs {
    /// The directory holding meshguard-gateway, meshguard-example-agent, meshguard-bundle and
    /// meshguard-license (e.g. target/release).
    #[arg(long)]
    bin_dir: PathBuf,
    /// The OCI layout to write (built beside it and renamed into place once complete).
    #[arg(long)]
    out: PathBuf,
    /// Registry namespace: NAMESPACE/gateway:VERSION, NAMESPACE/tools:VERSION.
    #[arg(long, default_value = "meshguard")]
    namespace: String,
    /// The images' version tag (default: this tool's version, the workspace's).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// The source commit the binaries were built from (image label).
    #[arg(long, default_value = "unknown")]
    revision: String,
    /// The images' creation time, seconds since 1970, so rebuilds are byte-identical.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    created: i64,
    /// The CA bundle the images trust.
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_bundle: PathBuf,
}

#[derive(Args, Debug)]
struct ProviderMirrorArgs {
    /// The terraform-provider-meshguard binary.
    #[arg(long)]
    binary: PathBuf,
    /// The mirror root to write into.
    #[arg(long)]
    out: PathBuf,
    /// The provider's version (default: this tool's version, the workspace's).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// The binary's platform.
    #[arg(long, default_value = "linux_amd64")]
    platform: String,
}

#[derive(Args, Debug)]
struct RegistryAccessArgs {
    /// PEM CAs to trust for the registry besides the built-in roots (the site's private CA).
    #[arg(long = "ca-bundle", value_name = "PEM")]
    registry_ca_bundle: Option<PathBuf>,
    /// The registry credentials (containers-auth.json, as `podman login --authfile` writes);
    /// before REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json and ~/.docker/config.json, which are also read.
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

impl RegistryAccessArgs {
    fn access(&self, insecure: bool) -> meshguard_bundler::access::Access {
        meshguard_bundler::access::Access {
            insecure,
            ca_bundle: self.registry_ca_bundle.clone(),
            auth_file: self.authfile.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct TrustArgs {
    /// The publisher's minisign public key, obtained out of band.
    #[arg(long)]
    pubkey: PathBuf,
    /// The publisher's P-256 public key (PEM): also check SHA256SUMS.sigstore.json.
    #[arg(long)]
    cosign_pubkey: Option<PathBuf>,
    /// The license vendor's public key: also check the license on the media.
    #[arg(long)]
    license_pubkey: Option<PathBuf>,
    /// Refuse media of any other version.
    #[arg(long)]
    expect_version: Option<String>,
}

impl TrustArgs {
    fn load(&self) -> Result<(MediaPublicKey, verify::Options)> {
        let key = MediaPublicKey::from_file(&self.pubkey)?;
        let cosign_pubkey = self
            .cosign_pubkey
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            })
            .transpose()?;
        let license_pubkey = self
            .license_pubkey
            .as_deref()
            .map(meshguard_license::VendorPublicKey::from_file)
            .transpose()?;
        Ok((
            key,
            verify::Options {
                cosign_pubkey,
                license_pubkey,
                expect_version: self.expect_version.clone(),
            },
        ))
    }
}

#[derive(Args, Debug)]
struct VerifyArgs {
    dir: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Write the transcript to PREFIX.txt and PREFIX.json.
    #[arg(long)]
    transcript: Option<PathBuf>,
    /// Print the transcript as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ImportArgs {
    dir: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Push images to this registry (HOST:PORT); without it images go to DEST/images.
    #[arg(long)]
    registry: Option<String>,
    /// Talk to the registry over plain HTTP.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    registry_access: RegistryAccessArgs,
    /// Put the Terraform provider in this filesystem mirror (default DEST/terraform/providers).
    #[arg(long)]
    terraform_mirror: Option<PathBuf>,
    /// Where chart, modules, policies and license go.
    #[arg(long, default_value = "meshguard-imported")]
    dest: PathBuf,
}

#[derive(Args, Debug)]
struct InstallArgs {
    /// The media directory (unpacked).
    media: PathBuf,
    /// The site file: release, profile, registry, ports, state directory, secrets files,
    /// environment values, bootstrap (docs/site-install.md).
    #[arg(long)]
    site: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Install media older than what runs (rollback media).
    #[arg(long)]
    rollback: bool,
    /// Skip one of the runbook's smoke tests by name (repeatable): "sidecar heartbeat",
    /// "egress denial", "evidence export", ... The transcript records it as skipped by the
    /// operator; every other smoke test must pass.
    #[arg(long = "skip-smoke", value_name = "NAME")]
    skip_smoke: Vec<String>,
    /// The passphrase of the site's transcript key.
    #[command(flatten)]
    passphrase: PassphraseArg,
}

#[derive(Args, Debug)]
struct PackArgs {
    dir: PathBuf,
    /// The archive to write (FILE.tar.zst; volumes FILE.tar.zst.000… and the signed index beside it).
    #[arg(long)]
    out: PathBuf,
    /// The key that signs the volume index.
    #[arg(long)]
    key: PathBuf,
    /// Split into volumes of this size (e.g. 4G, 650M).
    #[arg(long, value_parser = pack::parse_size)]
    volume_size: Option<u64>,
    /// zstd level.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    #[command(flatten)]
    passphrase: PassphraseArg,
}

#[derive(Args, Debug)]
struct UnpackArgs {
    /// The archive (FILE.tar.zst; its volumes and index sit beside it).
    archive: PathBuf,
    /// The publisher's minisign public key, obtained out of band.
    #[arg(long)]
    pubkey: PathBuf,
    /// A new directory to extract the media into.
    #[arg(long)]
    dest: PathBuf,
}

fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?)),
        _ => Ok(None),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys(KeysCommand::Generate {
            kind,
            secret,
            public,
            passphrase,
        }) => {
            for p in [&secret, &public] {
                if p.exists() {
                    bail!("{} exists; refusing to overwrite a key", p.display());
                }
            }
            let pass = passphrase.get()?;
            let (sk, pk) = match kind {
                KeyKind::Ed25519 => MediaKey::generate(&pass)?,
                KeyKind::P256 => CosignKey::generate(&pass)?,
            };
            meshguard_bundler::fsx::write_new_private(&secret, sk.as_bytes())?;
            meshguard_bundler::fsx::write_atomic(&public, pk.as_bytes())?;
            println!(
                "wrote {} (encrypted) and {}",
                secret.display(),
                public.display()
            );
        }
        Command::Create(a) => {
            let m = manifest::Loaded::load(&a.manifest)?;
            let pass = a.passphrase.get()?;
            let key = MediaKey::load(&a.key, &pass)?;
            let cosign = a
                .cosign_key
                .as_deref()
                .map(|p| CosignKey::load(p, &pass))
                .transpose()?;
            let created = create::create(
                &m,
                &create::Options {
                    out: a.out.clone(),
                    key: &key,
                    cosign: cosign.as_ref(),
                    since: a.since,
                    source_date_epoch: source_date_epoch()?,
                    insecure_registries: a.insecure_registries,
                    access: a.registry_access.access(false),
                },
            )?;
            println!(
                "created {}: {} files, {} bytes, {} image(s){}; signed by {}",
                created.dir.display(),
                created.files,
                created.bytes,
                created.images,
                if created.omitted_blobs > 0 {
                    format!(
                        ", {} layer(s) left to the older media",
                        created.omitted_blobs
                    )
                } else {
                    String::new()
                },
                key.public().key_id()
            );
        }
        Command::Verify(a) => {
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
        }
        Command::Import(a) => {
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
        }
        Command::Install(a) => {
            let site = meshguard_bundler::site::SiteConfig::load(&a.site)?;
            meshguard_bundler::site::smoke::check_skips(&a.skip_smoke)?;
            let (key, opts) = a.trust.load()?;
            let transcript_key = MediaKey::load(&site.transcript_key, &a.passphrase.get()?)
                .with_context(|| {
                    format!(
                        "cannot load the site's transcript key {}",
                        site.transcript_key.display()
                    )
                })?;
            let outcome = meshguard_bundler::site::install(&meshguard_bundler::site::Options {
                media: a.media,
                site,
                pubkey: &key,
                pubkey_file: a.trust.pubkey.clone(),
                license_pubkey_file: a.trust.license_pubkey.clone(),
                verify: opts,
                rollback: a.rollback,
                transcript_key: &transcript_key,
                skip_smoke: a.skip_smoke,
            })?;
            print!("{}", outcome.transcript_text);
            println!(
                "transcript: {} (signed: {}.minisig)",
                outcome.transcript_json.display(),
                outcome.transcript_json.display()
            );
            if !outcome.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Pack(a) => {
            let key = MediaKey::load(&a.key, &a.passphrase.get()?)?;
            let packed = pack::pack(
                &a.dir,
                &a.out,
                a.volume_size,
                source_date_epoch()?,
                a.level,
                &key,
            )?;
            println!(
                "packed {} into {} volume(s), {} bytes compressed from {}; index {}",
                a.dir.display(),
                packed.volumes.len(),
                packed.info.compressed_size,
                packed.info.tar_size,
                packed.index.display()
            );
        }
        Command::Unpack(a) => {
            let key = MediaPublicKey::from_file(&a.pubkey)?;
            let (info, dir) = pack::unpack(&a.archive, &a.dest, &key)?;
            println!(
                "all {} volume(s) match the signed index; unpacked {}; now run: meshguard-bundle verify {} --pubkey {}",
                info.volumes.len(),
                dir.display(),
                dir.display(),
                a.pubkey.display()
            );
        }
        Command::AuditArchive(AuditArchiveCommand::Pull {
            dir,
            gateway,
            admin_token_file,
            ca_bundle,
            vkey,
        }) => {
            let admin_token = admin_token(admin_token_file.as_deref())?;
            let first = !dir.join("ARCHIVE.json").exists();
            let pulled = meshguard_bundler::audit_archive::pull(
                &dir,
                &meshguard_bundler::audit_archive::Source {
                    url: gateway,
                    admin_token,
                    ca_bundle,
                },
                vkey.as_deref(),
            )?;
            match &pulled.segment {
                Some(s) => println!(
                    "archived entries {}..={} of {} in {} (proven against the signed checkpoint of {})",
                    pulled.from, pulled.to, pulled.origin, s, pulled.to
                ),
                None => println!(
                    "nothing new: {} entries of {} archived",
                    pulled.to, pulled.origin
                ),
            }
            if first && vkey.is_none() {
                let state: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(dir.join("ARCHIVE.json")).unwrap_or_default(),
                )
                .unwrap_or_default();
                println!(
                    "pinned the log key the gateway serves: {} (compare it with the one you trust)",
                    state["vkey"].as_str().unwrap_or("-")
                );
            }
        }
        Command::Evidence(EvidenceCommand::Export {
            gateway,
            profile,
            from,
            to,
            month,
            out,
            key,
            passphrase,
            admin_token_file,
            ca_bundle,
            transcript,
            allow_unwitnessed,
        }) => {
            let (from, to) = match month {
                Some(m) => meshguard_bundler::evidence::month_bounds(&m)?,
                None => (from.unwrap_or_default(), to.unwrap_or_default()),
            };
            let admin_token = admin_token(admin_token_file.as_deref())?;
            let passphrase = passphrase.get()?;
            let key = MediaKey::load(&key, &passphrase)?;
            let source = meshguard_bundler::audit_archive::Source {
                url: gateway,
                admin_token,
                ca_bundle,
            };
            let m =
                meshguard_bundler::evidence::export(&meshguard_bundler::evidence::ExportOptions {
                    source: &source,
                    profile: &profile,
                    from: &from,
                    to: &to,
                    out: &out,
                    key: &key,
                    transcript: transcript.as_deref(),
                    allow_unwitnessed,
                })?;
            println!(
                "evidence bundle {} for {} from {} to {}: entries {}..={} of {} ({} in the period), proven in checkpoint {}{}",
                out.display(),
                m.profile,
                m.from,
                m.to,
                m.first_seq,
                m.last_seq,
                m.origin,
                m.in_period,
                m.checkpoint_size,
                if m.witnesses.is_empty() {
                    " (not witnessed)".to_owned()
                } else {
                    format!(" cosigned by {}", m.witnesses.join(", "))
                }
            );
        }
        Command::Evidence(EvidenceCommand::Verify {
            dir,
            pubkey,
            log_key,
            witnesses,
            quorum,
            transcript_pubkey,
            accept_unwitnessed,
            accept_unsigned_transcript,
            json,
            transcript_out,
        }) => {
            use meshguard_bundler::evidence::Unchecked;
            let accepted: Vec<Unchecked> = [
                (accept_unwitnessed, Unchecked::Witness),
                (accept_unsigned_transcript, Unchecked::Transcript),
            ]
            .into_iter()
            .filter_map(|(on, u)| on.then_some(u))
            .collect();
            let pubkey = MediaPublicKey::from_file(&pubkey)?;
            let transcript_pubkey = transcript_pubkey
                .as_deref()
                .map(MediaPublicKey::from_file)
                .transpose()?;
            let v = meshguard_bundler::evidence::verify(
                &dir,
                &meshguard_bundler::evidence::VerifyOptions {
                    pubkey: &pubkey,
                    log_vkey: log_key.as_deref(),
                    quorum: quorum.unwrap_or(witnesses.len()),
                    witnesses: &witnesses,
                    transcript_pubkey: transcript_pubkey.as_ref(),
                    list_denials: true,
                    accept_unchecked: &accepted,
                },
            )?;
            if let Some(path) = &transcript_out {
                meshguard_bundler::fsx::write_atomic(path, v.text().as_bytes())?;
                let mut j = path.clone().into_os_string();
                j.push(".json");
                let mut bytes = serde_json::to_vec_pretty(&v)?;
                bytes.push(b'\n');
                meshguard_bundler::fsx::write_atomic(std::path::Path::new(&j), &bytes)?;
            }
            if json {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                serde_json::to_writer_pretty(&mut out, &v)?;
                std::io::Write::write_all(&mut out, b"\n")?;
            } else {
                print!("{}", v.text());
            }
            if !v.ok {
                std::process::exit(1);
            }
        }
        Command::AuditArchive(AuditArchiveCommand::AddEvidence {
            dir,
            bundle,
            pubkey,
        }) => {
            let r = meshguard_bundler::audit_archive::add_evidence(&dir, &bundle, &pubkey)?;
            println!(
                "archived evidence bundle {} ({} from {} to {}, MANIFEST.json sha256 {}), proven in the archived entries up to {}",
                r.name, r.profile, r.from, r.to, r.manifest_sha256, r.checkpoint_size
            );
        }
        Command::AuditArchive(AuditArchiveCommand::Retrieve { dir, evidence, out }) => {
            let r = meshguard_bundler::audit_archive::retrieve(
                &dir,
                evidence.as_deref().zip(out.as_deref()),
            )?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::AuditArchive(AuditArchiveCommand::Verify { dir, vkey }) => {
            let v = meshguard_bundler::audit_archive::verify(&dir, vkey.as_deref())?;
            println!(
                "audit archive of {} verified: {} entries in {} segments, {} signed checkpoints, {} evidence bundles; root {}",
                v.origin,
                v.entries,
                v.segments,
                v.checkpoints,
                v.evidence.len(),
                v.root
            );
        }
        Command::Images(a) => {
            let product = meshguard_bundler::image::ProductBuild {
                bin_dir: a.bin_dir,
                namespace: a.namespace,
                version: a.version,
                revision: a.revision,
                source: env!("CARGO_PKG_REPOSITORY").to_owned(),
                license: env!("CARGO_PKG_LICENSE").to_owned(),
                created: a.created,
                ca_bundle: a.ca_bundle,
            };
            for (reference, digest) in meshguard_bundler::image::build_product(&product, &a.out)? {
                println!("{reference}  {digest}");
            }
            println!("OCI layout: {}", a.out.display());
        }
        Command::ProviderMirror(a) => {
            let id = meshguard_bundler::tfmirror::ProviderId::meshguard(&a.version, &a.platform);
            let p = meshguard_bundler::tfmirror::pack(&a.binary, &id, &a.out)?;
            println!("{}\n  {}\n  {}", p.zip.display(), p.h1, p.zh);
        }
        Command::Inspect { dir } => {
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
            let mut kinds = std::collections::BTreeMap::<&str, (usize, u64)>::new();
            for it in &doc.items {
                let e = kinds.entry(it.kind.as_str()).or_default();
                e.0 += 1;
                e.1 += it.size;
            }
            for (k, (n, b)) in kinds {
                println!("{k:<24} {n:>6} files {b:>14} bytes");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The admin token: from a file, or MESHGUARD_ADMIN_TOKEN (never a flag's value).
fn admin_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match file {
        Some(f) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the admin token file {}", f.display()))?
            .trim()
            .to_owned()),
        None => std::env::var("MESHGUARD_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .context("no admin token: set MESHGUARD_ADMIN_TOKEN or --admin-token-file"),
    }
}
