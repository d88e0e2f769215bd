//! `cargo run --release -p meshguard-gateway --example audit_rows -- DIR [ROWS] [CONCURRENCY]`:
//! what durably auditing a decision costs, without HTTP: wall time, and CPU time per entry on
//! the path a decision waits on and for the index filled behind it. DIR is where the log goes
//! (a disk for the real cost, `/dev/shm` for the cost without fsync); it must not hold a log
//! already.

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
    let (wall, cpu, index) = meshguard_gateway::bench_support::audit_rows(&dir, rows, concurrency);
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / rows as f64;
    println!(
        "{rows} entries, {concurrency} at once: {:.0} entries/s durable; CPU per entry: {:.2} us on the durable path (the workers, which lead the groups, and the writer thread; {:.2} cores), {:.2} us more for the index behind the log",
        rows as f64 / wall.as_secs_f64(),
        us(cpu),
        cpu.as_secs_f64() / wall.as_secs_f64(),
        us(index),
    );
}
