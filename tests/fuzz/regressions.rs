//! Every input the fuzzer (`fuzz/main.rs`) ever found, and the seeds, replayed through their
//! targets: none may panic again.

#[path = "targets.rs"]
mod targets;

#[test]
fn every_kept_fuzz_input_and_seed_runs_without_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for target in targets::TARGETS {
        for seed in targets::seeds(target) {
            targets::run(target, &seed);
            replayed += 1;
        }
        if let Ok(dir) = std::fs::read_dir(root.join(target)) {
            for e in dir.flatten() {
                let input = std::fs::read(e.path()).unwrap();
                targets::run(target, &input);
                replayed += 1;
            }
        }
    }
    assert!(replayed >= targets::TARGETS.len());
}
