//! What starting on a large audit log costs:
//!
//! ```text
//! cargo run --release -p meshguard-gateway --example audit_startup -- build DIR [ENTRIES]
//! cargo run --release -p meshguard-gateway --example audit_startup -- start DIR
//! ```
//!
//! `build` writes a log of ENTRIES decisions (default 10,000,000) in DIR straight through the
//! audit writer, with one checkpoint over it and an empty index (as if the index were lost); DIR
//! must not hold a log already, and needs about 450 bytes per entry for the tiles plus as much
//! again for the index. `start` opens it as the gateway does at start: the time until it takes
//! entries, and until the index holds every entry (rebuilt from the tiles the first time; at
//! once when it is complete). Each is its own process, as a gateway restart is.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let usage = "usage: audit_startup build DIR [ENTRIES] | audit_startup start DIR";
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect(usage);
    let dir = std::path::PathBuf::from(args.next().expect(usage));
    match mode.as_str() {
        "build" => {
            let entries: usize = args
                .next()
                .map_or(10_000_000, |v| v.parse().expect("ENTRIES is a number"));
            std::fs::create_dir_all(&dir)?;
            let built = meshguard_gateway::bench_support::build_log(&dir, entries)?;
            println!("built {entries} entries in {:.1} s", built.as_secs_f64());
        }
        "start" => {
            let (open, indexed) = meshguard_gateway::bench_support::start_log(&dir)?;
            println!(
                "{:.3} s until the log takes entries; {:.1} s until the index holds every entry",
                open.as_secs_f64(),
                indexed.as_secs_f64()
            );
        }
        _ => anyhow::bail!("{usage}"),
    }
    Ok(())
}
