//! `meshguard-witness`: a site witness on a disconnected workstation. Requests and answers
//! travel on removable media as files (the C2SP tlog-witness request body and its response).
//!
//! Exit codes mirror the tlog-witness statuses: 0 cosigned (200), 3 bad or missing log
//! signature (403), 4 unknown origin (404), 5 malformed or old size too large (400), 6 the old
//! size is not the one last cosigned (409; the response file holds the size to prove from),
//! 7 the proof fails or the log forked (422), 1 any local error.
//!
//! `serve` answers the same requests over HTTP (`POST /add-checkpoint`, C2SP tlog-witness) for a
//! witness the gateway can reach; the state and its lock are the same as the CLI's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use meshguard_bundler::keys::{MediaKey, Passphrase};
use meshguard_bundler::witness::{Log, Refusal, State, Witness, WitnessError};
use meshguard_tlog::merkle::empty_root;
use meshguard_tlog::note::{ED25519, Vkey};

#[derive(Parser, Debug)]
#[command(
    name = "meshguard-witness",
    version,
    about = "A site witness for MeshGuard audit logs (C2SP tlog-witness, cosignature/v1), offline"
)]
struct Cli {
    /// The witness's directory: its key (encrypted) and what it has cosigned.
    #[arg(long, global = true, default_value = ".")]
    state: PathBuf,
    /// File holding the key passphrase; otherwise MESHGUARD_WITNESS_PASSPHRASE is read.
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make the witness: a new Ed25519 key and an empty state; prints its verifier key.
    Init {
        /// The witness's name (a schemaless URL is usual), e.g. witness.site.example/w1.
        #[arg(long)]
        name: String,
    },
    /// Print this witness's verifier key (what the gateway is told to trust).
    Vkey,
    /// Follow a log: its verifier key (type 0x01) names the origin.
    Trust { log_vkey: String },
    /// Check an add-checkpoint request and, if it holds, cosign it.
    Cosign {
        /// The request body (request.txt from the gateway).
        request: PathBuf,
        /// Where the cosignature line goes (response.txt).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the logs followed and the last checkpoint size cosigned for each.
    Status,
    /// Answer tlog-witness requests over HTTP: `POST /add-checkpoint`. Put it behind a
    /// TLS-terminating proxy unless it listens on a trusted network.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: String,
    },
}

fn passphrase(file: &Option<PathBuf>) -> Result<Passphrase> {
    Ok(Passphrase::from_file_or_env(
        file.as_deref(),
        "MESHGUARD_WITNESS_PASSPHRASE",
    )?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = &cli.state;
    let key_path = dir.join("witness.key");
    let pass = &cli.passphrase_file;
    match cli.command {
        Command::Init { name } => init(dir, &key_path, pass, name),
        Command::Vkey => {
            println!("{}", Witness::load_state(dir)?.vkey);
            Ok(ExitCode::SUCCESS)
        }
        Command::Trust { log_vkey } => trust(dir, &log_vkey),
        Command::Status => status(dir),
        Command::Serve { listen } => {
            let key = MediaKey::load(&key_path, &passphrase(pass)?)?;
            let w = std::sync::Arc::new(Witness::new(dir, key.signing_key().clone()));
            let name = Witness::load_state(dir)?.name;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(serve(w, &listen, &name))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cosign { request, out } => cosign(dir, &key_path, pass, &request, &out),
    }
}

/// `init`: a new key and an empty state; prints the witness's verifier key.
fn init(dir: &Path, key_path: &Path, pass: &Option<PathBuf>, name: String) -> Result<ExitCode> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        bail!("the witness name {name:?} must be non-empty, with no spaces and no '+'");
    }
    if dir.join(meshguard_bundler::witness::STATE).exists() {
        bail!(
            "{} already holds a witness; refusing to replace it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let (secret, _) = MediaKey::generate(&passphrase(pass)?)?;
    meshguard_bundler::fsx::write_new_private(key_path, secret.as_bytes())?;
    let key = MediaKey::load(key_path, &passphrase(pass)?)?;
    let w = Witness::new(dir, key.signing_key().clone());
    let vkey = w.vkey(&name).encode();
    Witness::save_state(
        dir,
        &State {
            name,
            vkey: vkey.clone(),
            logs: Default::default(),
        },
    )?;
    println!("{vkey}");
    Ok(ExitCode::SUCCESS)
}

/// `trust`: follow the log of `log_vkey` from its empty tree; a known log with another key is
/// refused.
fn trust(dir: &Path, log_vkey: &str) -> Result<ExitCode> {
    let v = Vkey::parse(log_vkey)?;
    if v.key_type != ED25519 {
        bail!("{log_vkey} is not a log key (type 0x01, Ed25519)");
    }
    let _lock = meshguard_bundler::fsx::lock_exclusive(&dir.join(".lock"))?;
    let mut state = Witness::load_state(dir)?;
    if let Some(known) = state.logs.get(&v.name) {
        if known.vkey == v.encode() {
            println!("already following {}", v.name);
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "{} is followed with another key ({}); a changed log key is a new log: refusing",
            v.name,
            known.vkey
        );
    }
    use base64::Engine as _;
    state.logs.insert(
        v.name.clone(),
        Log {
            vkey: v.encode(),
            size: 0,
            root: base64::engine::general_purpose::STANDARD.encode(empty_root()),
            checkpoint: None,
            cosigned_at: None,
        },
    );
    Witness::save_state(dir, &state)?;
    println!("following {}", v.name);
    Ok(ExitCode::SUCCESS)
}

/// `status`: the logs followed and how far each is cosigned.
fn status(dir: &Path) -> Result<ExitCode> {
    let state = Witness::load_state(dir)?;
    println!("witness {} ({})", state.name, state.vkey);
    for (origin, log) in &state.logs {
        match log.cosigned_at {
            Some(t) => println!(
                "  {origin}: cosigned up to size {} (at {t}, seconds since 1970)",
                log.size
            ),
            None => println!("  {origin}: nothing cosigned yet"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cosign`: checks the add-checkpoint request and writes the cosignature to `out`; a refusal
/// exits with its status's code (and a stale request's `out` holds the size to prove from).
fn cosign(
    dir: &Path,
    key_path: &Path,
    pass: &Option<PathBuf>,
    request: &Path,
    out: &Path,
) -> Result<ExitCode> {
    let body = std::fs::read_to_string(request)
        .with_context(|| format!("cannot read {}", request.display()))?;
    let key = MediaKey::load(key_path, &passphrase(pass)?)?;
    let w = Witness::new(dir, key.signing_key().clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    match w.add_checkpoint(&body, now) {
        Ok(line) => {
            meshguard_bundler::fsx::write_atomic(out, line.as_bytes())?;
            println!("cosigned; the cosignature is in {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(WitnessError::Refused(r)) => {
            if let Refusal::Stale { stored, .. } = r {
                meshguard_bundler::fsx::write_atomic(out, format!("{stored}\n").as_bytes())?;
            }
            eprintln!("refused ({}): {r}", r.status());
            Ok(ExitCode::from(match r.status() {
                403 => 3,
                404 => 4,
                409 => 6,
                422 => 7,
                _ => 5,
            }))
        }
        Err(WitnessError::Local(e)) => Err(e.into()),
    }
}

/// Serves `POST /add-checkpoint` until the process is stopped.
async fn serve(w: std::sync::Arc<Witness>, listen: &str, name: &str) -> Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/add-checkpoint",
            axum::routing::post(move |body: String| {
                let w = std::sync::Arc::clone(&w);
                async move {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default();
                    let done =
                        tokio::task::spawn_blocking(move || w.add_checkpoint(&body, now)).await;
                    match done {
                        Ok(Ok(line)) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                            line,
                        )
                            .into_response(),
                        Ok(Err(WitnessError::Refused(Refusal::Stale { stored, .. }))) => (
                            StatusCode::CONFLICT,
                            [(header::CONTENT_TYPE, "text/x.tlog.size")],
                            format!("{stored}\n"),
                        )
                            .into_response(),
                        Ok(Err(WitnessError::Refused(r))) => (
                            StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST),
                            format!("{r}\n"),
                        )
                            .into_response(),
                        Ok(Err(WitnessError::Local(e))) => {
                            eprintln!("error: {e}");
                            (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "the witness cannot record the checkpoint; see its log\n",
                            )
                                .into_response()
                        }
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "witness {name} listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
