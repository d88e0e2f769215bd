use std::process::ExitCode;

use clap::Parser;
use meshguard_gateway::{Args, prepare};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// mimalloc: under load the decision path spent about a fifth of its CPU in glibc
/// malloc/free (perf, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_policy_bundle {
        let (Some(bundle), Some(pubkey)) = (&args.policy_bundle, &args.policy_bundle_pubkey) else {
            eprintln!(
                "meshguard-gateway: --check-policy-bundle needs POLICY_BUNDLE and POLICY_BUNDLE_PUBKEY"
            );
            return ExitCode::from(2);
        };
        return match meshguard_gateway::check_policy_bundle(bundle, pubkey) {
            Ok(what) => {
                println!("{what}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshguard-gateway: policy bundle refused: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(url) = &args.probe {
        return probe(url);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshguard-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's batch task runs on this runtime.
    let entered = runtime.enter();
    // Colour only on a terminal: a log file or a collector gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info")),
        );
    #[cfg(feature = "otel")]
    let (otel, provider) = match otel::layer() {
        Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("meshguard-gateway: OTLP export: {e}");
            return ExitCode::from(2);
        }
    };
    #[cfg(not(feature = "otel"))]
    let otel: Option<tracing_subscriber::layer::Identity> = None;
    tracing_subscriber::registry().with(fmt).with(otel).init();
    drop(entered);
    let args_rotate = (
        args.rotate_audit_key,
        args.audit_key_lost,
        args.new_audit_key_uri.clone(),
    );
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshguard-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if args_rotate.0 {
        return match meshguard_gateway::rotate_audit_key(
            &config,
            args_rotate.1,
            args_rotate.2.as_deref(),
        ) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshguard-gateway: key rotation failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(serve(config));
    #[cfg(feature = "otel")]
    if let Some(p) = provider {
        // Flush the spans still batched.
        let _ = p.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshguard-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::TracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    /// The OTLP/HTTP span layer, when OTEL_EXPORTER_OTLP_ENDPOINT (or its _TRACES_ variant) is
    /// set: decision spans and HTTP request spans, batched.
    pub(super) fn layer<S>() -> Result<Option<(impl Layer<S>, TracerProvider)>, String>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if !configured {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot build the exporter: {e}"))?;
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "meshguard-gateway".to_owned());
        let provider = TracerProvider::builder()
            .with_batch_exporter(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_resource(Resource::new(vec![KeyValue::new("service.name", service)]))
            .build();
        let tracer = provider.tracer("meshguard-gateway");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                Targets::new()
                    .with_target("meshguard_gateway", LevelFilter::INFO)
                    .with_target("tower_http", LevelFilter::DEBUG),
            );
        Ok(Some((layer, provider)))
    }
}

async fn serve(config: meshguard_gateway::Config) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(config.host, config.port);
    if config.generated_admin_token {
        // Printed once, to stdout, never to the log.
        println!(
            "dev mode: generated admin token (shown once): {}",
            config.admin_token
        );
    }
    let state = prepare(config).await?;
    meshguard_gateway::serve(state, addr, shutdown_signal()).await
}

/// Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send): stop accepting, finish requests.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

/// `--probe URL`: 0 when URL answers 200 within 3 s, 1 otherwise (saying why on stderr).
fn probe(url: &str) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(std::time::Duration::from_secs(3))
                    .build()
                    .map_err(|e| e.to_string())?;
                client
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            })
        });
    match answer {
        Ok(status) if status == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("meshguard-gateway: probe {url}: HTTP {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("meshguard-gateway: probe {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
