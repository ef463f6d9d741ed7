//! A scenario as data: the VM, the threads' programs, fault-injection budgets, the rwlock
//! variant and the exploration bounds. The honour policy travels in `vm.honor_policy`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::abi::Seamcall;
use crate::abi::{Gfn, Level, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::error::{CoreError, CoreResult};
use crate::model::config::VmConfig;

/// One operation of a thread's program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProgramOp {
    /// vCPU: TDG.MEM.PAGE.ACCEPT at a level, with exits handled until the guest sees a result.
    Accept { gfn: Gfn, level: Level },
    /// vCPU: touch private memory.
    Access { gfn: Gfn },
    /// host: KVM_SET_MEMORY_ATTRIBUTES on [start, end).
    SetMemoryAttributes { start: Gfn, end: Gfn, private: bool },
    /// host: guest_memfd punch hole on [start, end).
    PunchHole { start: Gfn, end: Gfn },
}

impl ProgramOp {
    /// The op's name as the user writes it (`op = "accept"`).
    pub fn name(&self) -> &'static str {
        match self {
            ProgramOp::Accept { .. } => "accept",
            ProgramOp::Access { .. } => "access",
            ProgramOp::SetMemoryAttributes { .. } => "set_memory_attributes",
            ProgramOp::PunchHole { .. } => "punch_hole",
        }
    }

    fn is_guest(&self) -> bool {
        matches!(self, ProgramOp::Accept { .. } | ProgramOp::Access { .. })
    }
}

/// A thread: a vCPU running guest operations, or a host thread running ioctls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The vCPU index, or None for a host thread.
    #[serde(default)]
    pub vcpu: Option<u16>,
    pub ops: Vec<ProgramOp>,
}

/// mmu_lock's fairness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RwlockVariant {
    /// The kernel's qrwlock: a waiting writer blocks new readers; FIFO among waiters.
    #[default]
    Qrwlock,
    /// Readers enter whenever no writer holds the lock.
    ReaderPreferring,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultBudget {
    /// At most this many allocations fail in a run; which ones is explored.
    #[serde(default)]
    pub alloc_failures: u32,
    /// At most this many calls of each SEAMCALL ("page_aug", "page_demote", ...) return BUSY.
    #[serde(default)]
    pub busy: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    pub vm: VmConfig,
    /// Programs run one after the other, to completion and with no injected faults, before
    /// the threads start (to build the state the race starts from).
    #[serde(default)]
    pub setup: Vec<Program>,
    pub threads: Vec<Program>,
    #[serde(default)]
    pub faults: FaultBudget,
    #[serde(default)]
    pub rwlock: RwlockVariant,
    /// The fairness liveness verdicts assume.
    #[serde(default)]
    pub fairness: Fairness,
    /// Steps one thread may take; a thread that needs more has not finished within its budget.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
}

/// What a liveness verdict assumes of the scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fairness {
    /// Weak fairness: a thread that spins (yields) lets every other enabled thread step before
    /// it runs again, and a livelock is a cycle in which every thread enabled throughout steps.
    #[default]
    Weak,
    /// No assumption: any cycle without progress is a livelock, starving schedules included.
    None,
}
fn default_max_steps() -> u32 {
    5000
}

impl Scenario {
    /// The thread id of program `i`: vCPU programs use the vCPU index, host threads follow the vCPUs.
    pub fn tid(&self, i: usize) -> u16 {
        match self.threads[i].vcpu {
            Some(v) => v,
            None => self.vm.vcpus + self.threads[..i].iter().filter(|p| p.vcpu.is_none()).count() as u16,
        }
    }

    pub fn busy_budget(&self) -> CoreResult<BTreeMap<Seamcall, u32>> {
        let mut out = BTreeMap::new();
        for (k, &n) in &self.faults.busy {
            out.insert(Seamcall::parse_key(k).map_err(|message| CoreError::Field { path: "busy".into(), message })?, n);
        }
        Ok(out)
    }

    /// Check what serde cannot: thread kinds, vCPU indices, levels, ranges inside memslots.
    pub fn validate(&self) -> CoreResult<()> {
        let bad = |m: String| Err(CoreError::Config(m));
        let field = |path: String, message: String| Err(CoreError::Field { path, message });
        if self.threads.is_empty() {
            return field("threads".into(), "a scenario needs at least one thread".into());
        }
        if self.max_steps == 0 {
            return field("max_steps".into(), "must be at least 1".into());
        }
        let hosts = self.threads.iter().filter(|p| p.vcpu.is_none()).count();
        if self.vm.vcpus as usize + hosts > 64 {
            return bad(format!(
                "{} vCPUs and {hosts} host threads: the explorer numbers them together and supports 64",
                self.vm.vcpus
            ));
        }
        if self.threads.len() > 32 {
            return bad(format!("{} threads: at most 32 are supported", self.threads.len()));
        }
        let vm = crate::model::vm::Vm::new(&self.vm).map_err(|e| e.at("vm"))?;
        // vCPUs enter only a runnable TD (TDH.VP.ENTER before KVM_TDX_FINALIZE_VM fails), so a
        // guest operation in a TD being built would never run: refused, not explored.
        if self.vm.td_state != crate::model::config::TdState::Runnable
            && let Some((i, j)) = self
                .threads
                .iter()
                .enumerate()
                .find_map(|(i, p)| p.ops.iter().position(ProgramOp::is_guest).map(|j| (i, j)))
        {
            return field(
                format!("threads[{i}].ops[{j}]"),
                "a guest operation, and td_state is build: vCPUs run only once the TD is runnable (td_state = \"runnable\")".into(),
            );
        }
        for (i, p) in self.setup.iter().enumerate() {
            check_program(&vm, p, self.vm.vcpus).map_err(|e| e.at(&format!("setup[{i}]")))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.threads.iter().enumerate() {
            check_program(&vm, p, self.vm.vcpus).map_err(|e| e.at(&format!("threads[{i}]")))?;
            if let Some(v) = p.vcpu
                && !seen.insert(v)
            {
                return field(format!("threads[{i}].vcpu"), format!("vcpu {v} already has a program"));
            }
        }
        self.busy_budget()?;
        Ok(())
    }
}

/// A program's thread kind, vCPU index, ops, levels and ranges; refusals name the field below
/// the program (`vcpu`, `ops[1].gfn`).
fn check_program(vm: &crate::model::vm::Vm, p: &Program, vcpus: u16) -> CoreResult<()> {
    let field = |path: String, message: String| Err(CoreError::Field { path, message });
    if let Some(v) = p.vcpu
        && v >= vcpus
    {
        return field("vcpu".into(), format!("vcpu {v} does not exist (the VM has {vcpus} vCPUs)"));
    }
    for (j, op) in p.ops.iter().enumerate() {
        let at = format!("ops[{j}]");
        if op.is_guest() != p.vcpu.is_some() {
            let who = if p.vcpu.is_some() { "a vCPU (vcpu = N)" } else { "a host thread (no vcpu)" };
            return field(at, format!("{} cannot run on {who}", op.name()));
        }
        match *op {
            ProgramOp::Accept { gfn, level } => {
                if level != PG_LEVEL_4K && level != PG_LEVEL_2M {
                    return field(format!("{at}.level"), format!("accept level {level}: allowed are 4K and 2M"));
                }
                vm.check_range(gfn, page_end(gfn).map_err(|e| e.at(&at))?, "page").map_err(|e| e.at(&at))?;
            }
            ProgramOp::Access { gfn } => {
                vm.check_range(gfn, page_end(gfn).map_err(|e| e.at(&at))?, "page").map_err(|e| e.at(&at))?
            }
            ProgramOp::SetMemoryAttributes { start, end, .. } | ProgramOp::PunchHole { start, end } => {
                vm.check_range(start, end, "[start, end)").map_err(|e| e.at(&at))?
            }
        }
    }
    Ok(())
}

/// The gfn after `gfn`, which must exist for the page to lie in a memslot.
fn page_end(gfn: Gfn) -> CoreResult<Gfn> {
    gfn.checked_add(1).ok_or_else(|| CoreError::Field {
        path: "gfn".into(),
        message: format!("gfn {gfn:#x} is the last gfn there is, outside every memslot"),
    })
}
