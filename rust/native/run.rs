//! One native run: a workload under a policy on real threads, measured.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::lock::LockKind;
use super::metrics::{LockRow, Path};
use super::runtime::{Costs, Native};
use super::workload::{Plan, Workload};
use crate::abi::Seamcall;
use crate::abi::status_name;
use crate::abi::{Gfn, Level, PG_LEVEL_4K};
use crate::error::{CoreError, CoreResult};
use crate::model::honor_policy::HonorStep;
use crate::model::invariants::check_state;
use crate::model::vm::{Cx, Vm};
use crate::program::scenario::ProgramOp;
use crate::program::thread::run_op_counted;
use crate::sync::{Finding, FindingKind, LockId, Mode, Runtime, Tid, run_to_completion};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub workload: Workload,
    pub honor_policy: Vec<HonorStep>,
    #[serde(default)]
    pub atomic_demote: bool,
    #[serde(default)]
    pub lock: LockKind,
    /// Busy-wait per KVM SEAMCALL, in ns.
    #[serde(default)]
    pub seamcall_ns: u64,
    /// Busy-wait per kick, in ns.
    #[serde(default)]
    pub kick_ns: u64,
    /// Run every program on one OS thread, one after the other (for comparisons).
    #[serde(default)]
    pub sequential: bool,
    /// Keep each thread's lock spans for a timeline (`tdxcore bench --perfetto`).
    #[serde(default)]
    pub timeline: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeamcallCount {
    pub call: &'static str,
    pub result: &'static str,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub threads: usize,
    pub lock: LockKind,
    pub elapsed_s: f64,
    pub ops: BTreeMap<&'static str, u64>,
    /// Guest-visible results of the program operations, by name.
    pub results: BTreeMap<String, u64>,
    pub accepts_per_s: f64,
    /// EPT-violation exits, each one a fault KVM handled.
    pub faults: u64,
    pub faults_per_s: f64,
    pub locks: Vec<LockRow>,
    /// Each thread's lock spans, with `RunConfig::timeline` (empty otherwise), and how many
    /// spans past the per-thread cap were only counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Vec<super::metrics::LockSpan>>,
    pub timeline_dropped: u64,
    /// The most spans a thread keeps (metrics::TIMELINE_CAP).
    pub timeline_cap: usize,
    /// Reader stall: how long mmu_lock read acquisitions waited, over every path (ns).
    pub reader_stall_ns: super::metrics::Percentiles,
    /// mmu_lock write acquisitions on the path of 4K ACCEPTs (the honour path and the faults it
    /// leads to): with a lockless pre-check, one per region whose first 4K ACCEPT finds it not
    /// inhibited (docs/BENCH.md, B4).
    pub accept_4k_write_acquisitions: u64,
    /// The same for 2M ACCEPTs, whose honour path sets GUEST_INHIBIT for 1G.
    pub accept_2m_write_acquisitions: u64,
    /// RET_PF_RETRY and other retries (each a yield).
    pub retries: u64,
    pub seamcalls: Vec<SeamcallCount>,
    /// Successful TDH.MEM.PAGE.DEMOTEs.
    pub splits: u64,
    /// Mirror leaves at the end, by level name.
    pub mappings: BTreeMap<&'static str, u64>,
    /// Invariants broken at a quiescent point (between phases, at the end), and KVM_BUG_ON/WARN.
    pub violations: Vec<Finding>,
    /// An operation gave up (no_progress) and the run stopped there: the counters are partial.
    pub stopped: bool,
    /// The caller interrupted the run (Ctrl-C): the counters are partial.
    pub interrupted: bool,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    #[serde(skip)]
    pub leaves: Vec<(Gfn, Level)>,
}

fn path_of(op: &ProgramOp) -> Path {
    match op {
        ProgramOp::Accept { level, .. } if *level == PG_LEVEL_4K => Path::Accept4K,
        ProgramOp::Accept { .. } => Path::Accept2M,
        ProgramOp::Access { .. } => Path::Access,
        ProgramOp::SetMemoryAttributes { .. } => Path::SetMemoryAttributes,
        ProgramOp::PunchHole { .. } => Path::PunchHole,
    }
}

/// A program on `tid`, to the end or until some operation of the run gave up (no_progress: a
/// livelock on real threads; the run stops there rather than spin through every operation) or
/// the caller interrupted it: `[stop, interrupt]`.
fn run_program(vm: &Vm, rt: &Native, tid: Tid, ops: &[ProgramOp], flags: [&AtomicBool; 2]) -> BTreeMap<String, u64> {
    let [stop, interrupt] = flags;
    let mut results = BTreeMap::new();
    let cx = Cx { vm, rt, tid };
    for op in ops {
        if stop.load(Relaxed) || interrupt.load(Relaxed) {
            break;
        }
        rt.begin(tid, path_of(op));
        let (r, exits) = run_to_completion(run_op_counted(&cx, op)).expect("a native operation never suspends");
        rt.count_faults(tid, exits);
        if r == NO_PROGRESS {
            stop.store(true, Relaxed);
        }
        *results.entry(r).or_default() += 1;
    }
    results
}

/// GuestResult::NoProgress's name.
const NO_PROGRESS: &str = "no_progress";

/// `run_program`, turning a panic into an error after releasing what the thread held (a panic
/// with mmu_lock held would otherwise leave the other threads waiting for ever).
fn run_guarded(
    vm: &Vm,
    rt: &Native,
    tid: Tid,
    ops: &[ProgramOp],
    flags: [&AtomicBool; 2],
) -> Result<BTreeMap<String, u64>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_program(vm, rt, tid, ops, flags))).map_err(|p| {
        rt.abandon(tid);
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// VmRSS and VmHWM of this process, in bytes (0 where /proc is missing).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn quiescent_check(vm: &Vm, rt: &Native, out: &mut Vec<Finding>) {
    out.extend(check_state(vm, rt.lock_state(LockId::MmuLock)));
}

pub fn run(cfg: &RunConfig) -> CoreResult<Report> {
    run_until(cfg, &AtomicBool::new(false))
}

/// `run`, stopping before each thread's next operation once `interrupt` is set.
pub fn run_until(cfg: &RunConfig, interrupt: &AtomicBool) -> CoreResult<Report> {
    let plan = cfg.workload.plan()?;
    let mut vmc = plan.vm.clone();
    vmc.honor_policy = cfg.honor_policy.clone();
    vmc.module.atomic_demote = cfg.atomic_demote;
    crate::model::honor_policy::check_lock_discipline(&vmc.honor_policy)
        .map_err(|e| CoreError::Config(format!("honor_policy: {e}")))?;
    let vm = Vm::new(&vmc)?;
    let threads = vmc.vcpus as usize;
    let rt = Native::new(
        &vm,
        threads,
        cfg.lock,
        Costs { seamcall: Duration::from_nanos(cfg.seamcall_ns), kick: Duration::from_nanos(cfg.kick_ns) },
    );
    let rt = if cfg.timeline { rt.with_timeline() } else { rt };
    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut elapsed = Duration::ZERO;
    let stop = AtomicBool::new(false);
    for phase in &plan.phases {
        if interrupt.load(Relaxed) {
            break;
        }
        let start = Instant::now();
        let per_thread: Vec<Result<BTreeMap<String, u64>, String>> = if cfg.sequential {
            phase.iter().enumerate().map(|(t, ops)| run_guarded(&vm, &rt, t as Tid, ops, [&stop, interrupt])).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = phase
                    .iter()
                    .enumerate()
                    .map(|(t, ops)| {
                        let (vm, rt, stop) = (&vm, &rt, &stop);
                        s.spawn(move || run_guarded(vm, rt, t as Tid, ops, [stop, interrupt]))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
            })
        };
        elapsed += start.elapsed();
        for r in per_thread {
            for (k, n) in r.map_err(|m| CoreError::Internal(format!("native run: {m}")))? {
                *results.entry(k).or_default() += n;
            }
        }
        quiescent_check(&vm, &rt, &mut violations);
    }
    violations.extend(rt.findings().into_iter().filter(|f| f.kind != FindingKind::DesignRule));
    let m = rt.merged();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let count = |p: Path| m.ops.get(&p).copied().unwrap_or(0);
    let accepts = count(Path::Accept4K) + count(Path::Accept2M);
    let faults = m.faults;
    let writes = |p: Path| m.locks.get(&(p, LockId::MmuLock, Mode::Write)).map_or(0, |s| s.acquisitions);
    let splits =
        m.seamcalls.iter().filter(|((c, code), _)| *c == Seamcall::PageDemote && *code == 0).map(|(_, n)| n).sum();
    let leaves = vm.mmu.leaves();
    let mut mappings = BTreeMap::new();
    for &(_, level) in &leaves {
        *mappings.entry(level.name()).or_default() += 1;
    }
    let (rss_bytes, peak_rss_bytes) = rss();
    let (timeline, timeline_dropped) = if cfg.timeline { rt.timeline() } else { (Vec::new(), 0) };
    Ok(Report {
        threads: if cfg.sequential { 1 } else { threads },
        lock: cfg.lock,
        elapsed_s: secs,
        ops: m.ops.iter().map(|(p, n)| (p.name(), *n)).collect(),
        results,
        accepts_per_s: accepts as f64 / secs,
        faults,
        faults_per_s: faults as f64 / secs,
        locks: m.lock_rows(),
        timeline,
        timeline_dropped,
        timeline_cap: super::metrics::TIMELINE_CAP,
        reader_stall_ns: m.reader_stall(),
        accept_4k_write_acquisitions: writes(Path::Accept4K),
        accept_2m_write_acquisitions: writes(Path::Accept2M),
        retries: m.retries,
        seamcalls: m
            .seamcalls
            .iter()
            .map(|(&(call, code), &count)| SeamcallCount { call: call.name(), result: status_name(code), count })
            .collect(),
        splits,
        mappings,
        violations,
        stopped: stop.load(Relaxed),
        interrupted: interrupt.load(Relaxed),
        rss_bytes,
        peak_rss_bytes,
        leaves,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_PRECHECK: [HonorStep; 4] =
        [HonorStep::WriteLock, HonorStep::Split, HonorStep::SetInhibit, HonorStep::WriteUnlock];

    fn config(workload: Workload, policy: &[HonorStep]) -> RunConfig {
        RunConfig {
            workload,
            honor_policy: policy.to_vec(),
            atomic_demote: false,
            lock: LockKind::ParkingLot,
            seamcall_ns: 0,
            kick_ns: 0,
            sequential: false,
            timeline: false,
        }
    }

    #[test]
    fn boot_takes_the_write_lock_once_per_region_with_the_pre_check() {
        let r = run(&config(Workload::Boot { gib: 4, vcpus: 2 }, &HonorStep::FINAL)).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.plan.regions_first_4k, 13);
        assert_eq!(r.accept_4k_write_acquisitions, 13);
        // Without it, every 4K ACCEPT's EPT violation takes the write lock.
        let r = run(&config(Workload::Boot { gib: 4, vcpus: 2 }, &NO_PRECHECK)).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.accept_4k_write_acquisitions, r.plan.accepts_4k);
    }

    #[test]
    fn boot_ends_in_the_same_mappings_on_two_threads_as_sequentially() {
        for lock in [LockKind::ParkingLot, LockKind::Std] {
            let mut cfg = config(Workload::Boot { gib: 4, vcpus: 2 }, &HonorStep::FINAL);
            cfg.lock = lock;
            let threaded = run(&cfg).unwrap();
            cfg.sequential = true;
            let sequential = run(&cfg).unwrap();
            assert!(threaded.violations.is_empty() && sequential.violations.is_empty());
            assert_eq!(threaded.results, sequential.results);
            let a: std::collections::BTreeSet<_> = threaded.leaves.iter().collect();
            let b: std::collections::BTreeSet<_> = sequential.leaves.iter().collect();
            let only_threaded: Vec<_> = a.difference(&b).take(5).collect();
            let only_sequential: Vec<_> = b.difference(&a).take(5).collect();
            assert!(
                only_threaded.is_empty() && only_sequential.is_empty(),
                "{lock:?}: only threaded {only_threaded:?}, only sequential {only_sequential:?}"
            );
            assert_eq!(threaded.mappings["2M"], threaded.plan.accepts_2m);
        }
    }

    #[test]
    fn every_workload_keeps_the_invariants_on_two_threads() {
        let workloads = [
            Workload::RandomMix { gib: 1, vcpus: 2, accepts_per_vcpu: 2000, percent_4k: 30, seed: 7 },
            Workload::ConversionChurn { gib: 1, vcpus: 2, cycles: 40 },
            Workload::FaultStorm { vcpus: 2, regions: 64 },
        ];
        for w in workloads {
            let r = run(&config(w.clone(), &HonorStep::FINAL)).unwrap();
            assert!(r.violations.is_empty(), "{w:?}: {:?}", r.violations);
            // Guest-visible outcomes only: no operation gave up, none failed with an errno.
            assert!(r.results.keys().all(|k| k != "no_progress" && !k.starts_with('E')), "{w:?}: {:?}", r.results);
            let accepts = r.ops.get("accept_4k").unwrap_or(&0) + r.ops.get("accept_2m").unwrap_or(&0);
            assert_eq!(accepts, r.plan.accepts_4k + r.plan.accepts_2m, "{w:?}");
            assert_eq!(r.ops.get("access").copied().unwrap_or(0), r.plan.accesses, "{w:?}");
            if let Workload::FaultStorm { regions, .. } = w {
                // Each region mapped at 2M is split once by its 4K ACCEPT, under the write lock,
                // which the split drops and re-takes once to allocate the page table.
                assert_eq!(r.splits, regions as u64, "{:?}", r.seamcalls);
                assert_eq!(r.accept_4k_write_acquisitions, 2 * regions as u64);
            }
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let e = run(&config(Workload::Boot { gib: 2, vcpus: 2 }, &HonorStep::FINAL)).unwrap_err();
        assert!(e.to_string().contains("at least 4 GiB"), "{e}");
        let e = run(&config(Workload::Boot { gib: 4, vcpus: 2 }, &[HonorStep::WriteUnlock])).unwrap_err();
        assert!(e.to_string().contains("step 1"), "{e}");
        let e = run(&config(Workload::FaultStorm { vcpus: 1, regions: 4 }, &HonorStep::FINAL)).unwrap_err();
        assert!(e.to_string().contains("at least 2 vCPUs"), "{e}");
    }
}
