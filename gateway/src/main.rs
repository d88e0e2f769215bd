use std::process::ExitCode;

use clap::Parser;
use meshguard_gateway::{Args, app, prepare};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshguard-gateway: {e}");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshguard-gateway: {e:#}");
            ExitCode::FAILURE
        }
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
    let mode = config.mode;
    let state = prepare(config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}; is another process using the port? set PORT")
    })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, mode = mode.as_str(), "meshguard gateway listening");
    println!("listening on http://{local}");
    // TCP_NODELAY: without it, Nagle's algorithm and the client's delayed ACK add ~40 ms to
    // small answers on a kept-alive connection (measured: 3.8x slower Terraform plans).
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .tcp_nodelay(true)
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    Ok(())
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
