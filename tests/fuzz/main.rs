//! A mutation fuzzer for every parser that reads untrusted input, on the stable toolchain:
//! each target starts from its seeds and from every input kept in `regressions/`, mutates them
//! (bit flips, random bytes, insertions of tokens parsers care about, deletions, duplications,
//! splices), and runs the target in-process; a panic is a finding, kept under
//! `target/fuzz-findings/<target>/` to be fixed and then moved into `regressions/<target>/`,
//! where `cargo test` replays it forever.
//!
//! ```sh
//! cargo run --release -p meshguard-e2e --example fuzz -- --seconds 60 [TARGET…]
//! ```
//!
//! Without coverage feedback (afl++ would need its compiler wrappers), so it finds shallow
//! crashes, not deep ones; docs/security.md records what was run and found.

#[path = "targets.rs"]
mod targets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKENS: &[&[u8]] = &[
    b"..",
    b"/",
    b"\\",
    b"\0",
    b"\n",
    b"\n\n",
    b"\r\n",
    b"\xe2\x80\x94 ",
    b"+",
    b"0",
    b"-1",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b": ",
    b"- ",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"~",
    b"null",
    b"true",
    b"1e999",
    b"\xff\xfe",
    b"old ",
    b"time ",
    b"../../",
    b"%2e%2e",
    b"AAAA",
    b"==",
    b"\t",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let at = at.min(end);
                v.drain(at..end);
            }
            4 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            5 => {
                let other = &pool[rng.below(pool.len())];
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.below(8);
                for _ in 0..n {
                    v.insert(at.min(v.len()), rng.next() as u8);
                }
            }
        }
    }
    v.truncate(1 << 16);
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 30u64;
    let mut chosen = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--seconds" {
            seconds = args[i + 1].parse().expect("--seconds N");
            i += 2;
        } else {
            chosen.push(args[i].clone());
            i += 1;
        }
    }
    let targets: Vec<&str> = if chosen.is_empty() {
        targets::TARGETS.to_vec()
    } else {
        chosen.iter().map(String::as_str).collect()
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let findings = root.join("../target/fuzz-findings");
    // Panics are findings, reported here rather than printed by the default hook.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1);
    let mut total_findings = 0;
    for target in targets {
        let mut pool = targets::seeds(target);
        if let Ok(dir) = std::fs::read_dir(root.join("fuzz/regressions").join(target)) {
            for e in dir.flatten() {
                pool.push(std::fs::read(e.path()).unwrap());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut runs, mut found, mut slowest) = (0u64, 0u64, Duration::ZERO);
        while Instant::now() < deadline {
            let base = pool[rng.below(pool.len())].clone();
            let input = mutate(&mut rng, &base, &pool);
            let started = Instant::now();
            let result = std::panic::catch_unwind(|| targets::run(target, &input));
            let took = started.elapsed();
            slowest = slowest.max(took);
            runs += 1;
            if let Err(e) = result {
                found += 1;
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let dir = findings.join(target);
                std::fs::create_dir_all(&dir).unwrap();
                let name = format!("{:016x}", rng.next());
                std::fs::write(dir.join(&name), &input).unwrap();
                eprintln!(
                    "{target}: PANIC ({why}); input kept as {}",
                    dir.join(&name).display()
                );
            } else if took > Duration::from_secs(1) {
                let dir = findings.join(format!("{target}-slow"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("{:016x}", rng.next())), &input).unwrap();
                eprintln!("{target}: an input took {took:?}");
            }
            // Inputs that parse keep the pool growing towards valid shapes.
            if runs % 64 == 0 && pool.len() < 4096 {
                pool.push(input);
            }
        }
        total_findings += found;
        println!(
            "{target:<20} {runs:>9} inputs in {seconds} s, {found} panic(s), slowest {:.1} ms",
            slowest.as_secs_f64() * 1000.0
        );
    }
    if total_findings > 0 {
        std::process::exit(1);
    }
}
