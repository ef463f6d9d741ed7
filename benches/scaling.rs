//! B2 of docs/BENCH.md: faults under mmu_lock's read side on 1 and 2 threads (this machine has
//! two cores), partitioned and overlapping, for parking_lot's and std's rwlock, an exclusive
//! lock (every fault takes the write side: the legacy MMU), and private VMs with no shared lock
//! (the ideal). Twice: with SEAMCALLs free, where the model's one TDX-module mutex serialises
//! every fault whatever mmu_lock does, and with each SEAMCALL taking 2 us (busy-waited outside
//! that mutex, as the real module works on different entries in parallel). Medians of 5 runs,
//! interleaved, ratios printed. Run: `cargo bench --bench scaling`.

use std::time::Instant;

use tdxcore::model::honor_policy::HonorStep;
use tdxcore::native::lock::LockKind;
use tdxcore::native::workload::Workload;
use tdxcore::native::{RunConfig, run};

const GIB: u64 = 32;
const RUNS: usize = 5;

/// Faults per second and retries per fault of one run.
fn shared(lock: LockKind, threads: u16, overlap: bool, gib: u64, seamcall_ns: u64) -> (f64, f64) {
    let r = run(&RunConfig {
        workload: Workload::FaultScan { gib, vcpus: threads, overlap },
        honor_policy: HonorStep::FINAL.to_vec(),
        atomic_demote: false,
        lock,
        seamcall_ns,
        kick_ns: 0,
        sequential: false,
        timeline: false,
    })
    .expect("a valid configuration");
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    (r.faults as f64 / r.elapsed_s, r.retries as f64 / r.faults.max(1) as f64)
}

/// `threads` VMs, each with its share of the memory and one thread: no shared lock at all.
fn private(threads: u16, gib: u64, seamcall_ns: u64) -> f64 {
    let start = Instant::now();
    let faults: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let cfg = RunConfig {
                        workload: Workload::FaultScan { gib: gib / threads as u64, vcpus: 1, overlap: false },
                        honor_policy: HonorStep::FINAL.to_vec(),
                        atomic_demote: false,
                        lock: LockKind::ParkingLot,
                        seamcall_ns,
                        kick_ns: 0,
                        sequential: false,
                        timeline: false,
                    };
                    run(&cfg).expect("a valid configuration").faults
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("no panic")).sum()
    });
    // Wall time includes each VM's set-up, which the shared runs do not count: a lower bound.
    faults as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for seamcall_ns in [0, 2_000] {
        let gib = if seamcall_ns == 0 { GIB } else { GIB / 8 };
        measure(gib, seamcall_ns, cores);
    }
}

fn measure(gib: u64, seamcall_ns: u64, cores: usize) {
    println!(
        "B2: 2M faults on {gib} GiB of unaccepted memory, SEAMCALLs {} us; {cores} cores; medians of {RUNS} runs (faults/s)",
        seamcall_ns / 1000
    );
    let locks =
        [("parking_lot read", LockKind::ParkingLot), ("std read", LockKind::Std), ("exclusive", LockKind::Exclusive)];
    let mut table = std::collections::BTreeMap::new();
    // 1 and 2 threads, and more where the machine has the cores.
    let ns: Vec<u16> = (0..8).map(|k| 1u16 << k).filter(|&n| n <= 2 || n as usize <= cores).collect();
    for overlap in [false, true] {
        for &n in &ns {
            let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); locks.len()];
            for _ in 0..RUNS {
                for (i, &(_, lock)) in locks.iter().enumerate() {
                    samples[i].push(shared(lock, n, overlap, gib, seamcall_ns));
                }
            }
            for (i, (name, _)) in locks.iter().enumerate() {
                let fps = median(samples[i].iter().map(|s| s.0).collect());
                let retries = median(samples[i].iter().map(|s| s.1).collect());
                table.insert((overlap, n, *name), (fps, retries));
            }
            if !overlap {
                let private = median((0..RUNS).map(|_| private(n, gib, seamcall_ns)).collect());
                table.insert((overlap, n, "private (no shared lock)"), (private, 0.0));
            }
        }
    }
    for ((overlap, n, name), (fps, retries)) in &table {
        let pattern = if *overlap { "overlapping" } else { "partitioned" };
        println!("  {pattern:<12} N={n}  {name:<26} {fps:>12.0}   retries/fault {retries:.3}");
    }
    let get = |o: bool, n: u16, name: &str| table[&(o, n, name)].0;
    println!("ratios (same run):");
    for (name, _) in &locks {
        for &n in &ns[1..] {
            println!(
                "  partitioned speed-up N={n}/N=1, {name}: {:.2} (target >= 0.5*N = {:.1})",
                get(false, n, name) / get(false, 1, name),
                0.5 * n as f64
            );
        }
    }
    println!(
        "  read (parking_lot) over exclusive at N=2: {:.2}",
        get(false, 2, "parking_lot read") / get(false, 2, "exclusive")
    );
    println!(
        "  read (parking_lot) over private at N=2: {:.2} (target >= 0.5)",
        get(false, 2, "parking_lot read") / get(false, 2, "private (no shared lock)")
    );
    println!(
        "  overlapping N=2 over N=1, parking_lot read: {:.2} (must not fall below 1)\n",
        get(true, 2, "parking_lot read") / get(true, 1, "parking_lot read")
    );
}
