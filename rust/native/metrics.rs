//! What a native run measures, per thread while it runs (no sharing on the hot path), merged
//! at the end: lock acquisitions with wait and hold times per path, SEAMCALLs by result,
//! retries and faults.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::abi::Seamcall;
use crate::sync::{LockId, Mode};

/// The kernel path a thread is in: the program operation it runs. The honour-accept path and
/// the faults it leads to run inside a guest ACCEPT (split by the ACCEPT's level); conversions
/// and punch holes are ioctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// A guest ACCEPT at 4K: the honour path splits and sets GUEST_INHIBIT for 2M and 1G.
    #[serde(rename = "accept_4k")]
    Accept4K,
    /// A guest ACCEPT at 2M: the honour path sets GUEST_INHIBIT for 1G.
    #[serde(rename = "accept_2m")]
    Accept2M,
    Access,
    SetMemoryAttributes,
    PunchHole,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Accept4K => "accept_4k",
            Path::Accept2M => "accept_2m",
            Path::Access => "access",
            Path::SetMemoryAttributes => "set_memory_attributes",
            Path::PunchHole => "punch_hole",
        }
    }
}

/// Acquisitions of one lock in one mode on one path, with wait and hold times in ns.
pub struct LockStats {
    pub acquisitions: u64,
    pub wait: Histogram<u64>,
    pub hold: Histogram<u64>,
}

impl LockStats {
    fn new() -> LockStats {
        // Three significant digits, auto-resizing (record() grows it; saturating_record()
        // would clamp long holds to the initial range).
        let h = || Histogram::new(3).expect("3 significant digits is a valid precision");
        LockStats { acquisitions: 0, wait: h(), hold: h() }
    }
}

/// One hold of a lock on a thread's timeline: when the thread asked for it, got it and let it
/// go, in ns since the run began, and the path it was on.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LockSpan {
    pub lock: LockId,
    pub mode: Mode,
    pub path: &'static str,
    pub asked_ns: u64,
    pub got_ns: u64,
    pub released_ns: u64,
}

/// The most spans a thread keeps: a timeline is for looking at, and a boot takes ~10^5 locks.
pub const TIMELINE_CAP: usize = 20_000;

/// One thread's measurements. Only that thread writes them while the run is going.
pub struct ThreadMetrics {
    pub path: Path,
    pub locks: BTreeMap<(Path, LockId, Mode), LockStats>,
    /// When this thread acquired each lock it holds (mmu_lock, slots_lock), and when it asked.
    pub acquired_at: [Option<Instant>; 2],
    pub asked_at: [Option<Instant>; 2],
    /// Each hold of a lock, when a timeline was asked for (`RunConfig::timeline`); the spans
    /// past TIMELINE_CAP are counted, not kept.
    pub timeline: Option<Vec<LockSpan>>,
    pub timeline_dropped: u64,
    pub seamcalls: BTreeMap<(Seamcall, u64), u64>,
    pub retries: u64,
    /// EPT-violation exits (the guest operations' own count).
    pub faults: u64,
    pub ops: BTreeMap<Path, u64>,
}

impl ThreadMetrics {
    pub fn new() -> ThreadMetrics {
        ThreadMetrics {
            path: Path::Access,
            locks: BTreeMap::new(),
            acquired_at: [None, None],
            asked_at: [None, None],
            timeline: None,
            timeline_dropped: 0,
            seamcalls: BTreeMap::new(),
            retries: 0,
            faults: 0,
            ops: BTreeMap::new(),
        }
    }

    pub fn stats(&mut self, lock: LockId, mode: Mode) -> &mut LockStats {
        self.locks.entry((self.path, lock, mode)).or_insert_with(LockStats::new)
    }

    /// Add another thread's measurements to these.
    pub fn merge(&mut self, other: &ThreadMetrics) {
        for (k, s) in &other.locks {
            let mine = self.locks.entry(*k).or_insert_with(LockStats::new);
            mine.acquisitions += s.acquisitions;
            mine.wait.add(&s.wait).expect("auto-resizing histograms always merge");
            mine.hold.add(&s.hold).expect("auto-resizing histograms always merge");
        }
        for (k, n) in &other.seamcalls {
            *self.seamcalls.entry(*k).or_default() += n;
        }
        for (k, n) in &other.ops {
            *self.ops.entry(*k).or_default() += n;
        }
        self.retries += other.retries;
        self.faults += other.faults;
    }
}

impl Default for ThreadMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Percentiles of a histogram, in ns.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub total: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let total = h.iter_recorded().map(|v| v.value_iterated_to() * v.count_at_value()).sum();
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            total,
        }
    }
}

/// One row of the lock table of a report.
#[derive(Clone, Debug, Serialize)]
pub struct LockRow {
    pub path: Path,
    pub lock: LockId,
    pub mode: Mode,
    pub acquisitions: u64,
    pub wait_ns: Percentiles,
    pub hold_ns: Percentiles,
}

impl ThreadMetrics {
    /// Every mmu_lock read acquisition's wait, whatever the path.
    pub fn reader_stall(&self) -> Percentiles {
        let mut all = Histogram::<u64>::new(3).expect("3 significant digits is a valid precision");
        for ((_, lock, mode), s) in &self.locks {
            if *lock == LockId::MmuLock && *mode == Mode::Read {
                all.add(&s.wait).expect("auto-resizing histograms always merge");
            }
        }
        Percentiles::of(&all)
    }

    pub fn lock_rows(&self) -> Vec<LockRow> {
        self.locks
            .iter()
            .map(|(&(path, lock, mode), s)| LockRow {
                path,
                lock,
                mode,
                acquisitions: s.acquisitions,
                wait_ns: Percentiles::of(&s.wait),
                hold_ns: Percentiles::of(&s.hold),
            })
            .collect()
    }
}
