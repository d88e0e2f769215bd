//! The "audit off" line of `cargo xtask bench-gateway`: the gateway, configured from the same
//! environment as the binary, answering every decision as usual but recording none, so the
//! audit log's cost is measured in the same run as the durably audited gateway and the floor.
//! A measurement tool only: the `meshguard-gateway` binary cannot run this way.

use clap::Parser;
use meshguard_gateway::{Args, bench_support};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .init();
    let config = Args::parse().into_config()?;
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let state = bench_support::prepare_unaudited(config).await?;
    meshguard_gateway::serve(state, addr, std::future::pending()).await
}
