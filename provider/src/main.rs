//! `terraform-provider-meshguard`: started by Terraform, speaks tfplugin6 on a local socket.

use std::os::unix::process::CommandExt;

/// The handshake cookie Terraform sets for its plugins (go-plugin's `MagicCookieValue` for
/// Terraform providers); a process started without it was not started by Terraform.
const MAGIC_COOKIE: (&str, &str) = (
    "TF_PLUGIN_MAGIC_COOKIE",
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
);

fn main() -> anyhow::Result<()> {
    if std::env::var(MAGIC_COOKIE.0).ok().as_deref() != Some(MAGIC_COOKIE.1) {
        eprintln!(
            "terraform-provider-meshguard {} is a Terraform plugin: Terraform starts it, it is not run by hand.\n\
             Install it where `terraform init` finds it (a filesystem mirror, e.g. `cargo xtask provider-mirror`,\n\
             then `terraform init -plugin-dir=DIR`) and use the `meshguard` provider in your configuration;\n\
             see provider/docs/index.md.",
            env!("CARGO_PKG_VERSION")
        );
        std::process::exit(1);
    }
    // Diagnostics capture a backtrace whenever RUST_BACKTRACE is set in the user's environment,
    // and would append it to every error Terraform shows. Environment changes inside a running
    // process are `unsafe` in Rust 2024, so the provider re-executes itself once with
    // RUST_LIB_BACKTRACE=0 instead (the same process id, file descriptors and handshake).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none_or(|v| v != "0") {
        let exe = std::env::current_exe()?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("RUST_LIB_BACKTRACE", "0")
            .exec();
        anyhow::bail!("cannot re-execute the provider: {err}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            // Terraform forwards Ctrl-C to its plugins and then shuts them down itself, after the
            // calls in flight have finished; dying on SIGINT would orphan objects mid-create.
            tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
            tf_provider::serve(
                "meshguard",
                meshguard_provider::MeshguardProvider::default(),
            )
            .await
        })
}
