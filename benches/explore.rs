//! Explorer throughput, measured side by side in one run (medians of 5; `cargo bench --bench
//! explore`). Prints each figure with its baseline and the ratio:
//! - scheduling steps per second (random schedules of the two-accepts scenario);
//! - complete schedules per second on a 3-vCPU scenario of about 50 steps a thread;
//! - the deterministic runtime against the same operations run sequentially without it: the
//!   schedule that never preempts (every choice 0) runs vCPU0's accept, vCPU1's access and
//!   vCPU2's accept one after the other, as the sequential backend does; the two are checked to
//!   take the same steps;
//! - the complete check of the seed question (3 vCPUs, one allocation failure allowed).

use std::time::{Duration, Instant};

use tdxcore::abi::PG_LEVEL_4K;
use tdxcore::explore::run::{RunOptions, run_once};
use tdxcore::explore::search::{Budget, Prefix, Search, Strategy};
use tdxcore::model::config::{RetryOptions, VmConfig};
use tdxcore::model::honor_policy::HonorStep;
use tdxcore::program::scenario::{FaultBudget, Program, ProgramOp, Scenario};
use tdxcore::session::Session;
use tdxcore::sync::sequential::FaultPlan;
use tdxcore::sync::{Op, Tid, TraceLine};

fn scenario(threads: usize, alloc_failures: u32) -> Scenario {
    let mut programs = vec![
        Program { vcpu: Some(0), ops: vec![ProgramOp::Accept { gfn: 0x201, level: PG_LEVEL_4K }] },
        Program { vcpu: Some(1), ops: vec![ProgramOp::Access { gfn: 0x3ff }] },
        Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] },
    ];
    programs.truncate(threads);
    Scenario {
        name: "seed".into(),
        vm: VmConfig {
            vcpus: threads as u16,
            honor_policy: HonorStep::FINAL.to_vec(),
            retry: RetryOptions { event_after_retries: 1, max_exits: 64, ..Default::default() },
            ..Default::default()
        },
        setup: vec![],
        threads: programs,
        faults: FaultBudget { alloc_failures, ..Default::default() },
        rwlock: Default::default(),
        fairness: Default::default(),
        max_steps: 5000,
    }
}

fn search(s: Scenario, strategy: Strategy, max_time: Duration) -> (f64, tdxcore::explore::search::Report) {
    let t = Instant::now();
    let mut search = Search::new(s, strategy, Budget { max_time: Some(max_time), ..Default::default() }).unwrap();
    while !search.run_for(Duration::from_secs(1)) {}
    (t.elapsed().as_secs_f64(), search.report())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// The steps of a trace: who did what to which object.
fn steps(trace: &[TraceLine]) -> Vec<(Tid, Op)> {
    trace
        .iter()
        .filter_map(|l| match l {
            TraceLine::Step(e) => Some((e.tid, e.op)),
            _ => None,
        })
        .collect()
}

/// The three programs one after the other on the sequential backend: seconds per run, and the
/// steps of one run.
fn sequential_baseline(runs: u32) -> (f64, Vec<(Tid, Op)>) {
    let cfg = scenario(3, 0).vm;
    let plan = FaultPlan { event_after_retries: 1, ..Default::default() };
    let steps = {
        let mut s = Session::new(&cfg, plan.clone()).unwrap();
        let a = s.guest_accept(0, 0x201, PG_LEVEL_4K).unwrap().trace;
        let b = s.guest_access(1, 0x3ff).unwrap().trace;
        let c = s.guest_accept(2, 0x300, PG_LEVEL_4K).unwrap().trace;
        steps(&[a, b, c].concat())
    };
    let t = Instant::now();
    for _ in 0..runs {
        let mut s = Session::new(&cfg, plan.clone()).unwrap();
        s.set_tracing(false);
        s.guest_accept(0, 0x201, PG_LEVEL_4K).unwrap();
        s.guest_access(1, 0x3ff).unwrap();
        s.guest_accept(2, 0x300, PG_LEVEL_4K).unwrap();
    }
    (t.elapsed().as_secs_f64() / runs as f64, steps)
}

/// The same programs on the deterministic runtime, in the same order (every choice 0: the
/// current thread runs until it finishes), with the checks a search makes (invariants after
/// every step, race detection, state bookkeeping) and no trace: seconds per run, and the steps.
fn deterministic_same_order(runs: u32) -> (f64, Vec<(Tid, Op)>) {
    let s = scenario(3, 0);
    let busy = s.busy_budget().unwrap();
    let steps = steps(&run_once(&s, &busy, &mut Prefix::new(vec![]), RunOptions::checked(true)).trace);
    let t = Instant::now();
    for _ in 0..runs {
        run_once(&s, &busy, &mut Prefix::new(vec![]), RunOptions::checked(false));
    }
    (t.elapsed().as_secs_f64() / runs as f64, steps)
}

fn main() {
    println!("machine: {} cores; one core used", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let mut steps_rate = vec![];
    let mut sched_rate = vec![];
    let mut per_schedule = vec![];
    let mut seq = vec![];
    let mut same_order = vec![];
    let mut steps_compared = (vec![], vec![]);
    for _ in 0..5 {
        let (secs, r) = search(scenario(3, 0), Strategy::Random { seed: 1, runs: 20_000 }, Duration::from_secs(60));
        steps_rate.push(r.certificate.steps as f64 / secs);
        sched_rate.push(r.certificate.schedules as f64 / secs);
        per_schedule.push(secs / r.certificate.schedules as f64);
        let (base, base_steps) = sequential_baseline(5_000);
        let (det, det_steps) = deterministic_same_order(5_000);
        seq.push(base);
        same_order.push(det);
        steps_compared = (det_steps, base_steps);
    }
    let steps_per_schedule = {
        let (_, r) = search(scenario(3, 0), Strategy::Random { seed: 1, runs: 1000 }, Duration::from_secs(60));
        r.certificate.steps as f64 / r.certificate.schedules as f64
    };
    println!("scheduling steps per second: {:.2}M (target >= 2.5M)", median(steps_rate) / 1e6);
    println!(
        "complete schedules per second, 3 vCPUs x ~{:.0} steps each: {:.0} (target >= 40,000)",
        steps_per_schedule / 3.0,
        median(sched_rate)
    );
    let (det, base) = (median(same_order), median(seq));
    assert_eq!(steps_compared.0, steps_compared.1, "the two runs must take the same steps");
    println!(
        "deterministic runtime {:.2} us vs sequential {:.2} us for the same operations in the same order ({} steps each): ratio {:.2} (target <= 5)",
        det * 1e6,
        base * 1e6,
        steps_compared.1.len(),
        det / base
    );
    println!(
        "  (a random schedule of the same programs: {:.1} us; random schedules split the 2M leaf and retry, so they do more work)",
        median(per_schedule) * 1e6
    );
    for (threads, failures) in [(2, 0), (2, 1), (3, 0), (3, 1)] {
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let strategy = Strategy::Exhaustive { bound: None, cache: true };
                search(scenario(threads, failures), strategy, Duration::from_secs(120))
            })
            .collect();
        let secs = median(runs.iter().map(|(s, _)| *s).collect());
        let r = &runs[0].1;
        let c = &r.certificate;
        println!(
            "complete check, seed question, {threads} vCPUs, {failures} allocation failure(s): {} complete={} cut_by={:?} in {secs:.2}s (median of 3), {} schedules, {} states (target < 1 s for 3 vCPUs, 1 failure)",
            r.verdict, c.complete, c.cut_by, c.schedules, c.distinct_states
        );
    }
}
