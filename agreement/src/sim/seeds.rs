//! Running a scenario over many seeds, printing the seed of any failure.

/// Seeds to run: `default` of them, or `ZZ_SIM_SEEDS` if set (for long soaks).
pub fn seed_count(default: u64) -> u64 {
    std::env::var("ZZ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `scenario` for seeds `0..count`; panics naming every failing seed.
/// `ZZ_SIM_SEED=n` runs just seed n (to reproduce a failure).
pub fn for_seeds(name: &str, default: u64, mut scenario: impl FnMut(u64) -> Result<(), String>) {
    let seeds: Vec<u64> = match std::env::var("ZZ_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(one) => vec![one],
        None => (0..seed_count(default)).collect(),
    };
    let mut failures = Vec::new();
    for seed in seeds {
        if let Err(e) = scenario(seed) {
            eprintln!("{name}: seed {seed} failed: {e}");
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} failing seed(s) (rerun one with ZZ_SIM_SEED=n):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
