//! `zz-sim`: runs whole-system simulation seeds (see `scripts/sim.sh`).

use clap::Parser;
use std::process::ExitCode;
use std::time::Instant;
use zz_sim::shrink::{replay_shrunk_command, shrink};
use zz_sim::{replay_command, run, Plan, SimConfig, World};

/// Runs seeds of the whole-system simulation and reports any that break
/// an oracle, each with the command that replays it.
#[derive(Parser)]
#[command(name = "zz-sim")]
struct Args {
    /// How many seeds to run (from --seed on).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Faults tolerated; both 1 and 2 when not given.
    #[arg(long)]
    f: Option<usize>,
    /// Print every message and decision of each run (use with one seed).
    #[arg(long)]
    trace: bool,
    /// Worker threads (each runs whole seeds; a run is single-threaded).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Shrink each failing run: drop faults and calm the network while the
    /// same oracle still breaks, and print the smallest plan found (with
    /// --trace, the trace of that plan's run).
    #[arg(long)]
    shrink: bool,
    /// Runs a shrink may spend per failing seed.
    #[arg(long, default_value_t = 200)]
    shrink_runs: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let fs: Vec<usize> = args.f.map_or(vec![1, 2], |f| vec![f]);
    let t0 = Instant::now();
    let seeds: Vec<(u64, usize)> = (args.seed..args.seed + args.seeds)
        .flat_map(|s| fs.iter().map(move |f| (s, *f)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..args.jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(seed, f)) = seeds.get(i) else { return };
                let mut cfg = SimConfig::new(seed, f);
                cfg.trace = args.trace && !args.shrink;
                let report = run(&cfg);
                if cfg.trace {
                    print_trace(&report);
                }
                if !report.ok() {
                    println!("seed {seed} f={f} FAILED\n  plan: {}", report.plan);
                    for v in &report.violations {
                        println!("  {v}");
                    }
                    println!("  replay: {}", replay_command(seed, f));
                    if args.shrink {
                        let plan = Plan::draw(seed, f);
                        let s = shrink(&cfg, plan, report.violations.clone(), args.shrink_runs);
                        println!("  shrunk in {} runs to: {}", s.runs, s.plan.describe());
                        for v in &s.violations {
                            println!("  {v}");
                        }
                        println!("  replay shrunk: {}", replay_shrunk_command(seed, f));
                        if args.trace {
                            cfg.trace = true;
                            let mut w = World::new(&cfg, s.plan);
                            w.run();
                            print_trace(&w.report());
                        }
                    }
                    if let Ok(mut v) = failed.lock() {
                        v.push((seed, f));
                    }
                }
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(500) {
                    eprintln!("{n} runs, {:.1} runs/s", n as f64 / t0.elapsed().as_secs_f64());
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let failed = failed.into_inner().unwrap_or_default();
    println!(
        "{} runs ({} seeds x f in {:?}) in {secs:.1} s, {:.1} runs/s: {} failed",
        seeds.len(),
        args.seeds,
        fs,
        seeds.len() as f64 / secs,
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_trace(report: &zz_sim::Report) {
    for line in &report.trace {
        println!("{line}");
    }
    println!("plan: {}", report.plan);
    println!("stats: {:?}", report.stats);
}
