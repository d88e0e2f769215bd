//! `cargo run --release -p meshguard-gateway --example audit_rows -- DIR [ROWS] [CONCURRENCY]`:
//! what durably auditing a decision costs, without HTTP: wall time and the process's CPU time
//! per row. DIR is where the log goes (a disk for the real cost, `/dev/shm` for the cost without
//! fsync); it must not hold a log already.

// The gateway binary's allocator, so the numbers are the gateway's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .expect("usage: audit_rows DIR [ROWS] [CONCURRENCY]"),
    );
    let rows: usize = args
        .next()
        .map_or(200_000, |v| v.parse().expect("ROWS is a number"));
    let concurrency: usize = args
        .next()
        .map_or(128, |v| v.parse().expect("CONCURRENCY is a number"));
    std::fs::create_dir_all(&dir).expect("DIR can be created");
    let (wall, cpu) = meshguard_gateway::bench_support::audit_rows(&dir, rows, concurrency);
    println!(
        "{rows} rows, {concurrency} at once: {:.0} rows/s, {:.2} us CPU per row, {:.2} cores",
        rows as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / rows as f64,
        cpu.as_secs_f64() / wall.as_secs_f64()
    );
}
