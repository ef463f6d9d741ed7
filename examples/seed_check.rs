//! Time the complete check of the seed question: one vCPU accepts 4K, one faults at 2M in the
//! same 2M range, one more accepts 4K there, one allocation may fail. Run:
//! `cargo run --release --example seed_check`.

use std::time::{Duration, Instant};

use tdxcore::abi::PG_LEVEL_4K;
use tdxcore::explore::search::{Budget, Search, Strategy};
use tdxcore::model::config::{RetryOptions, VmConfig};
use tdxcore::model::honor_policy::HonorStep;
use tdxcore::program::scenario::{FaultBudget, Program, ProgramOp, Scenario};

fn main() {
    let threads: u16 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let failures: u32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut programs = vec![
        Program { vcpu: Some(0), ops: vec![ProgramOp::Accept { gfn: 0x201, level: PG_LEVEL_4K }] },
        Program { vcpu: Some(1), ops: vec![ProgramOp::Access { gfn: 0x3ff }] },
        Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] },
    ];
    programs.truncate(threads as usize);
    let scenario = Scenario {
        name: "seed".into(),
        vm: VmConfig {
            vcpus: threads,
            honor_policy: HonorStep::FINAL.to_vec(),
            retry: RetryOptions { event_after_retries: 1, max_exits: 64, ..Default::default() },
            ..Default::default()
        },
        setup: vec![],
        threads: programs,
        faults: FaultBudget { alloc_failures: failures, ..Default::default() },
        rwlock: Default::default(),
        fairness: Default::default(),
        max_steps: 5000,
    };
    let t = Instant::now();
    let budget = Budget { max_time: Some(Duration::from_secs(600)), ..Default::default() };
    let mut s = Search::new(scenario, Strategy::Exhaustive { bound: None, cache: true }, budget).unwrap();
    while !s.run_for(Duration::from_secs(1)) {}
    let r = s.report();
    let secs = t.elapsed().as_secs_f64();
    let c = &r.certificate;
    println!(
        "{} threads, {} alloc failures: {} complete={} in {:.2}s: {} schedules ({:.0}/s), {} states, {} steps ({:.2}M/s)",
        threads,
        failures,
        r.verdict,
        c.complete,
        secs,
        c.schedules,
        c.schedules as f64 / secs,
        c.distinct_states,
        c.steps,
        c.steps as f64 / secs / 1e6
    );
}
