//! One fuzz target under AFL++ (`cargo xtask fuzz-afl`): the target named by
//! `MESHGUARD_FUZZ_TARGET`, fed by afl-fuzz. `--list` prints the targets; `--seeds DIR` writes the target's seeds (some are
//! signed at run time, so they are made here, not kept in files) for afl-fuzz's `-i`.

#[path = "../../targets.rs"]
#[allow(dead_code)]
mod targets;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--list") {
        for t in targets::TARGETS {
            println!("{t}");
        }
        return;
    }
    let Ok(target) = std::env::var("MESHGUARD_FUZZ_TARGET") else {
        eprintln!(
            "set MESHGUARD_FUZZ_TARGET to one of: {}",
            targets::TARGETS.join(", ")
        );
        std::process::exit(2);
    };
    if !targets::TARGETS.contains(&target.as_str()) {
        eprintln!(
            "MESHGUARD_FUZZ_TARGET {target:?} is not a target; use one of: {}",
            targets::TARGETS.join(", ")
        );
        std::process::exit(2);
    }
    if let [_, flag, dir] = args.as_slice()
        && flag == "--seeds"
    {
        std::fs::create_dir_all(dir).expect("the seeds directory can be made");
        for (i, seed) in targets::seeds(&target).iter().enumerate() {
            std::fs::write(format!("{dir}/seed-{i:03}"), seed).expect("a seed is written");
        }
        return;
    }
    afl::fuzz!(|data: &[u8]| {
        targets::run(&target, data);
    });
}
