//! Profile target: random schedules of the three-vCPU seed scenario.
//! `cargo run --release --example random_runs -- 20000`

use std::time::{Duration, Instant};

use tdxcore::abi::PG_LEVEL_4K;
use tdxcore::explore::search::{Budget, Search, Strategy};
use tdxcore::model::config::{RetryOptions, VmConfig};
use tdxcore::model::honor_policy::HonorStep;
use tdxcore::program::scenario::{FaultBudget, Program, ProgramOp, Scenario};

fn main() {
    let runs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let scenario = Scenario {
        name: "seed3".into(),
        vm: VmConfig {
            vcpus: 3,
            honor_policy: HonorStep::FINAL.to_vec(),
            retry: RetryOptions { event_after_retries: 1, max_exits: 64, ..Default::default() },
            ..Default::default()
        },
        setup: vec![],
        threads: vec![
            Program { vcpu: Some(0), ops: vec![ProgramOp::Accept { gfn: 0x201, level: PG_LEVEL_4K }] },
            Program { vcpu: Some(1), ops: vec![ProgramOp::Access { gfn: 0x3ff }] },
            Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] },
        ],
        faults: FaultBudget::default(),
        rwlock: Default::default(),
        fairness: Default::default(),
        max_steps: 5000,
    };
    let t = Instant::now();
    let budget = Budget::default();
    let mut s = Search::new(scenario, Strategy::Random { seed: 1, runs }, budget).unwrap();
    while !s.run_for(Duration::from_secs(1)) {}
    let r = s.report();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} schedules in {secs:.2}s: {:.0}/s, {:.2}M steps/s",
        r.certificate.schedules,
        r.certificate.schedules as f64 / secs,
        r.certificate.steps as f64 / secs / 1e6
    );
}
