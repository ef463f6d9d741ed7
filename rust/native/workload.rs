//! Workloads for native runs: what each vCPU does, in phases. Between phases every thread has
//! stopped, so the runner checks the invariants there (a quiescent point).
//!
//! The VMM's conversions (KVM_SET_MEMORY_ATTRIBUTES on the guest's MapGPA) run on the vCPU
//! thread that took the exit, as QEMU does, so a vCPU's program may contain them.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::abi::{Gfn, Level, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::error::{CoreError, CoreResult};
use crate::model::config::{MemslotConfig, TdState, VmConfig};
use crate::program::scenario::ProgramOp;

const PAGES_PER_GIB: u64 = 1 << 18;
const REGION: u64 = 512;

/// On real threads a vCPU may retry (a FROZEN SPTE, a writer) for as long as the OS leaves the
/// other thread descheduled, so the explorer's budget of 8 exits would end healthy operations
/// as no_progress. A real livelock (inhibit-only) still ends, after this many exits.
pub const NATIVE_MAX_EXITS: u32 = 10_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Workload {
    /// A TD boot calibrated to the published one (docs/BENCH.md, B6): vCPU0
    /// accepts at 4K in the firmware's ranges and the converted range, every vCPU accepts the
    /// rest of memory at 2M.
    Boot { gib: u64, vcpus: u16 },
    /// Each vCPU accepts random pages of the whole guest at 4K (a `percent_4k` share) or 2M.
    RandomMix { gib: u64, vcpus: u16, accepts_per_vcpu: u32, percent_4k: u8, seed: u64 },
    /// Each vCPU converts 64-page chunks of its own regions to shared and back, then accepts
    /// them at 4K, `cycles` times.
    ConversionChurn { gib: u64, vcpus: u16, cycles: u32 },
    /// B2: each vCPU touches 2M regions of unaccepted memory, one fault each: its own share
    /// (partitioned) or all of them in the same order (overlapping).
    FaultScan { gib: u64, vcpus: u16, overlap: bool },
    /// B4: `regions` 2M regions are mapped at 2M by guest accesses; then vCPU0 ACCEPTs 4K in each
    /// (a split under the write lock) while each other vCPU faults 8 fresh regions per split
    /// under the read lock.
    FaultStorm { vcpus: u16, regions: u32 },
}

/// A workload made concrete: the VM, the phases (each one program per vCPU), and what the
/// workload's design says some counters must be.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    #[serde(skip)]
    pub vm: VmConfig,
    #[serde(skip)]
    pub phases: Vec<Vec<Vec<ProgramOp>>>,
    /// Distinct 2M regions whose first 4K ACCEPT finds them not inhibited: with a lockless
    /// pre-check, the honour path's write-lock acquisitions.
    pub regions_first_4k: u64,
    pub accepts_4k: u64,
    pub accepts_2m: u64,
    pub conversions: u64,
    pub accesses: u64,
}

fn bad<T>(m: String) -> CoreResult<T> {
    Err(CoreError::Config(m))
}

fn vm_config(gib: u64, vcpus: u16) -> CoreResult<VmConfig> {
    if vcpus == 0 || vcpus > 64 {
        return bad(format!("vcpus {vcpus}: allowed are 1 to 64"));
    }
    if gib == 0 || gib > 256 {
        return bad(format!("gib {gib}: allowed are 1 to 256"));
    }
    let mut vm = VmConfig {
        memslots: vec![MemslotConfig { base_gfn: 0, npages: gib * PAGES_PER_GIB, ugfn: None }],
        vcpus,
        td_state: TdState::Runnable,
        ..VmConfig::default()
    };
    vm.retry.max_exits = NATIVE_MAX_EXITS;
    Ok(vm)
}

fn accept(gfn: Gfn, level: Level) -> ProgramOp {
    ProgramOp::Accept { gfn, level }
}

/// Convert [start, end) to shared and back to private (the guest's MapGPA twice).
fn round_trip(ops: &mut Vec<ProgramOp>, start: Gfn, end: Gfn) {
    ops.push(ProgramOp::SetMemoryAttributes { start, end, private: false });
    ops.push(ProgramOp::SetMemoryAttributes { start, end, private: true });
}

impl Workload {
    pub fn plan(&self) -> CoreResult<Plan> {
        match *self {
            Workload::Boot { gib, vcpus } => boot(gib, vcpus),
            Workload::RandomMix { gib, vcpus, accepts_per_vcpu, percent_4k, seed } => {
                random_mix(gib, vcpus, accepts_per_vcpu, percent_4k, seed)
            }
            Workload::ConversionChurn { gib, vcpus, cycles } => conversion_churn(gib, vcpus, cycles),
            Workload::FaultStorm { vcpus, regions } => fault_storm(vcpus, regions),
            Workload::FaultScan { gib, vcpus, overlap } => fault_scan(gib, vcpus, overlap),
        }
    }
}

/// The published boot (4 GB, 8 vCPUs; Yan Zhao, 1 Jul 2025): 2,710 4K ACCEPTs where KVM could
/// otherwise map 2M, all on vCPU0 (0x806-0x9ff and 0x7e800-0x7e9ff once each, the rest in the
/// converted range 0x7d3ff-0x7e7fe with gfns hit 974, 476 and 156 times), of 17,626 honour-path
/// write-lock acquisitions without the pre-check. The other ~14,900 4K ACCEPTs are taken here as
/// 64-page chunks of the converted range, converted to shared and back and accepted again.
/// The 4K part does not scale with memory (as published); the 2M part covers the rest.
fn boot(gib: u64, vcpus: u16) -> CoreResult<Plan> {
    if gib < 4 {
        return bad(format!("boot: gib {gib}: the published ranges need at least 4 GiB"));
    }
    let vm = vm_config(gib, vcpus)?;
    let firmware: Vec<ProgramOp> = (0x806..0xa00).chain(0x7e800..0x7ea00).map(|g| accept(g, PG_LEVEL_4K)).collect();
    let (hot_start, hot_end) = (0x7d3ff, 0x7e7ff);
    let mut kernel = Vec::new();
    // First touches of the converted range in chunks, then the hot gfns and the churn.
    let chunks: Vec<Gfn> = (hot_start..hot_end).step_by(64).collect();
    let (mut accepts_4k, mut conversions) = (firmware.len() as u64, 0);
    for (hot, times) in [(0x7e7fe, 974), (0x7e000, 476), (0x7d3ff, 156)] {
        for _ in 0..times {
            round_trip(&mut kernel, hot, hot + 1);
            kernel.push(accept(hot, PG_LEVEL_4K));
        }
        accepts_4k += times;
        conversions += 2 * times;
    }
    for g in (hot_start + 1..hot_end).step_by(59).take(86) {
        kernel.push(accept(g, PG_LEVEL_4K));
        accepts_4k += 1;
    }
    for c in 0..233 {
        let start = chunks[c % chunks.len()];
        let end = (start + 64).min(hot_end);
        round_trip(&mut kernel, start, end);
        kernel.extend((start..end).map(|g| accept(g, PG_LEVEL_4K)));
        accepts_4k += end - start;
        conversions += 2;
    }
    let regions_4k: BTreeSet<u64> = firmware
        .iter()
        .chain(&kernel)
        .filter_map(|op| match *op {
            ProgramOp::Accept { gfn, level } if level == PG_LEVEL_4K => Some(gfn / REGION),
            _ => None,
        })
        .collect();
    // The firmware runs on vCPU0 alone; then the kernel's churn on vCPU0 while every vCPU
    // accepts the other regions at 2M, dealt round-robin.
    let regions_2m: Vec<u64> = (0..gib * PAGES_PER_GIB / REGION).filter(|r| !regions_4k.contains(r)).collect();
    let mut kernel_phase = vec![Vec::new(); vcpus as usize];
    for (i, r) in regions_2m.iter().enumerate() {
        kernel_phase[i % vcpus as usize].push(accept(r * REGION, PG_LEVEL_2M));
    }
    kernel.append(&mut kernel_phase[0]);
    kernel_phase[0] = kernel;
    let mut firmware_phase = vec![Vec::new(); vcpus as usize];
    firmware_phase[0] = firmware;
    let phases = vec![firmware_phase, kernel_phase];
    Ok(Plan {
        vm,
        phases,
        regions_first_4k: regions_4k.len() as u64,
        accepts_4k,
        accepts_2m: regions_2m.len() as u64,
        conversions,
        accesses: 0,
    })
}

fn random_mix(gib: u64, vcpus: u16, per_vcpu: u32, percent_4k: u8, seed: u64) -> CoreResult<Plan> {
    if percent_4k > 100 {
        return bad(format!("random_mix: percent_4k {percent_4k}: allowed are 0 to 100"));
    }
    let vm = vm_config(gib, vcpus)?;
    let pages = gib * PAGES_PER_GIB;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut a4, mut a2) = (0, 0);
    let threads = (0..vcpus)
        .map(|_| {
            (0..per_vcpu)
                .map(|_| {
                    let gfn = rng.random_range(0..pages);
                    if rng.random_range(0..100u8) < percent_4k {
                        a4 += 1;
                        accept(gfn, PG_LEVEL_4K)
                    } else {
                        a2 += 1;
                        accept(gfn & !(REGION - 1), PG_LEVEL_2M)
                    }
                })
                .collect()
        })
        .collect();
    // Which 4K ACCEPTs meet an uninhibited region depends on the interleaving: not predicted.
    Ok(Plan {
        vm,
        phases: vec![threads],
        regions_first_4k: 0,
        accepts_4k: a4,
        accepts_2m: a2,
        conversions: 0,
        accesses: 0,
    })
}

fn conversion_churn(gib: u64, vcpus: u16, cycles: u32) -> CoreResult<Plan> {
    let vm = vm_config(gib, vcpus)?;
    let regions = gib * PAGES_PER_GIB / REGION;
    if regions < vcpus as u64 {
        return bad(format!("conversion_churn: {gib} GiB has fewer 2M regions than {vcpus} vCPUs"));
    }
    let mut threads = vec![Vec::new(); vcpus as usize];
    let mut seen = BTreeSet::new();
    for (v, ops) in threads.iter_mut().enumerate() {
        for c in 0..cycles as u64 {
            // vCPU v owns regions v, v + vcpus, ...; chunk c of the next region in turn.
            let region = v as u64 + (c / 8 % (regions / vcpus as u64)) * vcpus as u64;
            let start = region * REGION + c % 8 * 64;
            round_trip(ops, start, start + 64);
            ops.extend((start..start + 64).map(|g| accept(g, PG_LEVEL_4K)));
            seen.insert(region);
        }
    }
    Ok(Plan {
        vm,
        phases: vec![threads],
        regions_first_4k: seen.len() as u64,
        accepts_4k: cycles as u64 * 64 * vcpus as u64,
        accepts_2m: 0,
        conversions: 2 * cycles as u64 * vcpus as u64,
        accesses: 0,
    })
}

/// Reader faults per split in the fault storm.
const STORM: u64 = 8;

fn fault_storm(vcpus: u16, regions: u32) -> CoreResult<Plan> {
    if vcpus < 2 {
        return bad("fault_storm: needs at least 2 vCPUs (one splits, the others fault)".into());
    }
    let regions = regions as u64;
    let readers = vcpus as u64 - 1;
    // The split regions first, then fresh regions for the readers: STORM faults per split, so
    // the readers keep faulting while the splits go on.
    let pages = (regions * (1 + readers * STORM)) * REGION;
    let gib = pages.div_ceil(PAGES_PER_GIB).max(1);
    let vm = vm_config(gib, vcpus)?;
    let mut setup = vec![Vec::new(); vcpus as usize];
    // A guest access to unaccepted memory maps its region at 2M, PENDING (the guest takes a #VE).
    setup[0] = (0..regions).map(|r| ProgramOp::Access { gfn: r * REGION }).collect();
    let mut storm = vec![Vec::new(); vcpus as usize];
    storm[0] = (0..regions).map(|r| accept(r * REGION + 1, PG_LEVEL_4K)).collect();
    for v in 1..vcpus as u64 {
        let first = regions + (v - 1) * regions * STORM;
        storm[v as usize] = (first..first + regions * STORM).map(|r| ProgramOp::Access { gfn: r * REGION }).collect();
    }
    Ok(Plan {
        vm,
        phases: vec![setup, storm],
        regions_first_4k: regions,
        accepts_4k: regions,
        accepts_2m: 0,
        conversions: 0,
        accesses: regions * (1 + readers * STORM),
    })
}

fn fault_scan(gib: u64, vcpus: u16, overlap: bool) -> CoreResult<Plan> {
    let vm = vm_config(gib, vcpus)?;
    let regions = gib * PAGES_PER_GIB / REGION;
    let n = vcpus as u64;
    let threads: Vec<Vec<ProgramOp>> = (0..n)
        .map(|v| {
            let mine = (0..regions).filter(|r| overlap || r % n == v);
            mine.map(|r| ProgramOp::Access { gfn: r * REGION }).collect()
        })
        .collect();
    let accesses = threads.iter().map(|t| t.len() as u64).sum();
    Ok(Plan { vm, phases: vec![threads], regions_first_4k: 0, accepts_4k: 0, accepts_2m: 0, conversions: 0, accesses })
}
