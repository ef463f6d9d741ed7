//! One execution of a scenario: build the VM, start one simulated thread per program, and let
//! the chooser pick who steps next until every thread is done, the run cannot go on (a
//! deadlock, a cycle without progress, a KVM_BUG_ON that kills the VM) or it is cut (a thread's
//! step budget, a guest operation's exit budget). Everything else it finds (invariants broken
//! where their condition holds, WARNs, contract breaches, races) is recorded as a property hit
//! (properties.rs) and the run goes on, so the consequence a breach leads to is found too.

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{Hash, Hasher};

use super::state_hasher;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};

use super::properties::{Hit, Property, RunHits};
use super::sim::{Chooser, Decision, Sim, Status};
use crate::abi::Seamcall;
use crate::model::guest::GuestResult;
use crate::model::invariants::{check_state, check_touched};
use crate::model::vm::{Cx, Vm};
use crate::program::scenario::{Fairness, ProgramOp, Scenario};
use crate::program::thread::{run_op, run_setup};
use crate::sync::{Finding, FindingKind, LockId, Mode, Runtime, Tid, TraceLine, WaitCond};

/// What one program operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpResult {
    pub op: usize,
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// An invariant broken where its condition holds. `stable`: still broken when every
    /// thread had stopped; otherwise repaired later in the run (transient).
    Invariant { rule: String, message: String, tid: Option<Tid>, step: u32, stable: bool },
    /// KVM_BUG_ON / TDX_BUG_ON / WARN_ON.
    Bug { rule: String, message: String, tid: Tid, step: u32 },
    /// A wait-for cycle or a thread that waits for ever: every blocked thread with what it waits for.
    Deadlock { blocked: Vec<String> },
    /// A reachable cycle of states in which no thread completes an operation; `fairness` is
    /// what the verdict assumes of the scheduler; `escape`, whether some schedule leaves it.
    Livelock {
        threads: Vec<Tid>,
        cycle_steps: u32,
        fairness: Fairness,
        message: String,
        escape: Escape,
        /// The operation each spinning thread is stuck in (program index): what an escape
        /// must complete.
        #[serde(skip)]
        stuck: Vec<(Tid, usize)>,
        /// The state the cycle closed at.
        #[serde(skip)]
        state: u64,
    },
    /// Two plain accesses unordered by happens-before.
    Race(super::race::Race),
}

/// Whether some schedule leaves a livelock's cycle (escape.rs searches every continuation from
/// the state it closed at).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "escape", rename_all = "snake_case")]
pub enum Escape {
    /// Not searched, or the search was cut: `why`.
    Unknown { why: String },
    /// Some continuation completes every stuck operation.
    Leaves { schedules: u64 },
    /// No continuation completes these threads' operations: a trap.
    Trapped { threads: Vec<Tid>, schedules: u64 },
}

impl Violation {
    /// The violation in a sentence, its threads named as in a VM of `vcpus` vCPUs.
    pub fn summary(&self, vcpus: u16) -> String {
        let name = |t: Tid| crate::sync::thread_name(t, vcpus);
        match self {
            // Found at the step that broke it (an install, a store, an ACCEPT).
            Violation::Invariant { rule, message, tid: Some(_), .. } => format!("invariant {rule}: {message}"),
            Violation::Invariant { rule, message, stable, .. } => {
                format!("invariant {rule} ({}): {message}", if *stable { "stable" } else { "transient" })
            }
            Violation::Bug { rule, message, .. } => format!("{rule}: {message}"),
            Violation::Deadlock { blocked } => format!("deadlock: {}", blocked.join("; ")),
            Violation::Livelock { threads, message, escape, .. } => {
                let how = match escape {
                    Escape::Unknown { why } => format!("whether some schedule leaves it is not known: {why}"),
                    Escape::Leaves { schedules } => {
                        format!("some schedule leaves the cycle (found within {} continuations)", thousands(*schedules))
                    }
                    Escape::Trapped { threads, schedules } => format!(
                        "no continuation completes the operation of {} (all {} continuations searched): a trap",
                        threads.iter().map(|&t| name(t)).collect::<Vec<_>>().join(", "),
                        thousands(*schedules)
                    ),
                };
                let who = threads.iter().map(|&t| name(t)).collect::<Vec<_>>().join(" and ");
                format!("livelock: {who} {message}; {how}")
            }
            Violation::Race(r) => format!(
                "race on {}: {} {} ({}) vs {} {} ({}): {}",
                r.object,
                name(r.first.tid),
                r.first.op,
                r.first.locks,
                name(r.second.tid),
                r.second.op,
                r.second.locks,
                r.fix
            ),
        }
    }
}

/// 1234567 as "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// Every thread finished.
    Finished,
    /// The run cannot go on: a deadlock, a cycle without progress, a KVM_BUG_ON.
    Stopped,
    /// A thread's step budget or a guest operation's exit budget ran out: not a verdict.
    Cut,
    /// State caching found a state already explored.
    Pruned,
    /// Every operation of the run's goal completed (an escape search).
    Goal,
}

pub struct Execution {
    pub end: RunEnd,
    /// The properties the run broke, at most one hit per property and rule.
    pub hits: Vec<Hit>,
    /// Why the run was cut (RunEnd::Cut).
    pub unfinished: Option<String>,
    pub decisions: Vec<Decision>,
    pub steps: u32,
    pub preemptions: u32,
    pub trace: Vec<TraceLine>,
    pub results: BTreeMap<Tid, Vec<OpResult>>,
    /// Design-rule findings: reported beside a verdict, never as one.
    pub design_rules: Vec<Finding>,
    pub races: Vec<super::race::Race>,
    /// The cached states this execution reached after its replayed prefix (RunOptions).
    pub path_states: Vec<PathState>,
    /// The goal's threads whose stuck operation completed (a bit per tid).
    pub progressed: u64,
}

/// An escape search's run (escape.rs): the cycle's state is reached after `from_step` steps;
/// `ops` are the stuck threads' operations; the run ends once each has completed.
pub struct Goal {
    pub from_step: u32,
    pub ops: Vec<(Tid, usize)>,
}

/// A state an execution passed, cached at a decision point: its key, the steps taken before it,
/// and the decisions made before it.
#[derive(Clone, Copy, Debug)]
pub struct PathState {
    pub key: u64,
    pub step: usize,
    pub decisions: usize,
}

/// Hashes of states already explored (with the preemptions used, when bounded).
pub type StateCache = std::collections::HashSet<u64, foldhash::fast::FixedState>;

pub struct RunOptions<'a> {
    pub tracing: bool,
    /// Check the state invariants after every step (else only when the run ends).
    pub check_every_step: bool,
    /// State caching: prune at a Schedule decision whose state is in the cache.
    pub cache: Option<&'a mut StateCache>,
    /// Key cached states with the preemptions used (a bounded search must).
    pub key_preemptions: bool,
    /// Detect data races on plain accesses (vector clocks).
    pub races: bool,
    /// Check the state invariants only where things changed (else the whole state each time;
    /// a test compares the two).
    pub incremental: bool,
    /// The chooser's replayed prefix was run, checked, by an earlier execution (a depth-first
    /// search), so its steps need no state-invariant checks again.
    pub trust_prefix: bool,
    /// The cached states on the replayed prefix (earlier executions' `path_states`), so that a
    /// cycle back to one of them is seen.
    pub path_states: &'a [PathState],
    /// An escape search's goal: cycles count only after it, and completing it ends the run.
    pub goal: Option<&'a Goal>,
}

impl RunOptions<'_> {
    /// One execution with every check a search makes (invariants where they can change, data
    /// races) and no cache: a replay, a random or PCT run, a caller's choices.
    pub fn checked(tracing: bool) -> Self {
        RunOptions {
            tracing,
            check_every_step: true,
            cache: None,
            key_preemptions: false,
            races: true,
            incremental: true,
            trust_prefix: false,
            path_states: &[],
            goal: None,
        }
    }
}

type ThreadFuture<'a> = Pin<Box<dyn Future<Output = Vec<OpResult>> + 'a>>;

async fn run_program(cx: Cx<'_, Sim<'_>>, ops: &[ProgramOp]) -> Vec<OpResult> {
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        cx.rt.begin_op(cx.tid, i);
        let result = run_op(&cx, op).await;
        cx.rt.end_op(cx.tid, i, result != GuestResult::NoProgress.name());
        out.push(OpResult { op: i, result });
    }
    out
}

/// Run `scenario` once with choices from `chooser`.
pub fn run_once(
    scenario: &Scenario,
    busy: &BTreeMap<Seamcall, u32>,
    chooser: &mut dyn Chooser,
    mut opts: RunOptions<'_>,
) -> Execution {
    let vm = Vm::new(&scenario.vm).expect("scenario validated before running");
    run_setup(&vm, scenario);
    // From here on: fingerprints for state keys, and invariants checked where things change.
    vm.start_bookkeeping(opts.check_every_step);
    let n = scenario.threads.len();
    let tids: Vec<Tid> = (0..n).map(|i| scenario.tid(i)).collect();
    let nslots = tids.iter().copied().max().map_or(0, |m| m as usize + 1);
    let sim = Sim::new(
        nslots,
        scenario.rwlock,
        scenario.faults.alloc_failures,
        busy.clone(),
        if scenario.vm.retry.event_at_any_retry { u32::MAX } else { scenario.vm.retry.event_after_retries },
        scenario.fairness == Fairness::Weak,
        chooser,
        opts.tracing,
    );
    {
        // Slots of thread ids nobody runs are done from the start.
        let mut st = sim.st.borrow_mut();
        #[cfg(test)]
        {
            st.forget = soundness::REDUCTIONS.get().forget;
        }
        if opts.races {
            st.races = Some(super::race::RaceDetector::new(nslots));
        }
        for (t, s) in st.status.iter_mut().enumerate() {
            if !tids.contains(&(t as Tid)) {
                *s = Status::Done;
            }
        }
    }
    let mut threads: Vec<Option<ThreadFuture<'_>>> = (0..nslots).map(|_| None).collect();
    for (i, p) in scenario.threads.iter().enumerate() {
        let cx = Cx { vm: &vm, rt: &sim, tid: tids[i] };
        threads[tids[i] as usize] = Some(Box::pin(run_program(cx, &p.ops)));
    }
    let mut results = BTreeMap::new();
    let mut waker_cx = Context::from_waker(Waker::noop());
    let mut poll =
        |t: usize, threads: &mut Vec<Option<ThreadFuture<'_>>>, results: &mut BTreeMap<Tid, Vec<OpResult>>| {
            if let Some(f) = threads[t].as_mut()
                && let Poll::Ready(r) = f.as_mut().poll(&mut waker_cx)
            {
                results.insert(t as Tid, r);
                threads[t] = None;
                sim.st.borrow_mut().status[t] = Status::Done;
            }
        };
    // Start every thread: it runs to its first scheduling point.
    for &t in &tids {
        poll(t as usize, &mut threads, &mut results);
    }
    let mut hits = RunHits::default();
    let mut unfinished: Option<String> = None;
    let mut steps = 0u32;
    let mut end = RunEnd::Finished;
    // States seen at places a cycle can close (after a yield): key -> position in `path`;
    // `path` holds, per step, the enabled threads and who stepped.
    let mut loop_states: std::collections::HashMap<u64, usize, foldhash::fast::FixedState> = Default::default();
    let mut path: Vec<(u64, Tid)> = Vec::with_capacity(256);
    // The cached states this execution reached after its replayed prefix.
    let mut path_states: Vec<PathState> = Vec::new();
    let movers = Movers::of(scenario);
    let mut enabled: Vec<Tid> = Vec::with_capacity(nslots);
    // An escape search's cycles count only after the state it starts from.
    let from_step = opts.goal.map_or(0, |g| g.from_step);
    loop {
        enabled.clear();
        {
            let st = sim.st.borrow();
            enabled.extend(
                (0..nslots)
                    .filter(|&t| match st.status[t] {
                        Status::Ready | Status::Granted => true,
                        Status::Wait(c) => vm.wait_cond_holds(c),
                        _ => false,
                    })
                    .map(|t| t as Tid),
            );
        }
        if enabled.is_empty() {
            let blocked = sim.blocked();
            if !blocked.is_empty() {
                hits.add(sim.hit(Property::Deadlock, deadlock(&blocked), steps));
                end = RunEnd::Stopped;
            }
            break;
        }
        // A livelock: a state where a thread spun repeats within the execution.
        if std::mem::take(&mut sim.st.borrow_mut().spun) && steps >= from_step {
            let key = state_key(&vm, &sim);
            if let Some(&start) = loop_states.get(&key) {
                if let Some(v) = livelock(&path[start..], scenario.fairness, &sim, key) {
                    hits.add(sim.hit(Property::Livelock, v, steps));
                    end = RunEnd::Stopped;
                    break;
                }
            } else {
                loop_states.insert(key, path.len());
            }
        }
        // A step that commutes with everything the other threads can do now is taken without a
        // decision (a both-mover in Lipton's sense); see Movers.
        #[cfg(test)]
        let movers_on = soundness::REDUCTIONS.get().movers;
        #[cfg(not(test))]
        let movers_on = true;
        let t = match sim.mover(&movers, &|obj| spte_is_table(&vm, obj)).filter(|_| movers_on) {
            Some(t) => t,
            None => {
                if enabled.len() > 1
                    && !sim.replaying()
                    && let Some(cache) = opts.cache.as_deref_mut()
                {
                    let key = state_key(&vm, &sim);
                    let cache_key = if opts.key_preemptions { with_preemptions(key, &sim) } else { key };
                    if !cache.insert(cache_key) {
                        // Seen before. Usually explored already: prune. But if this execution
                        // was here (on its replayed prefix, or since) and the cycle is fair, it
                        // may be a livelock whose spinning state comes round later: go on as a
                        // replay of these choices would, with no cache, to the spin check.
                        let earlier = opts.path_states.iter().chain(&path_states).find(|s| s.key == key);
                        if earlier.and_then(|s| livelock(&path[s.step..], scenario.fairness, &sim, key)).is_none() {
                            end = RunEnd::Pruned;
                            break;
                        }
                        opts.cache = None;
                    } else {
                        #[cfg(test)]
                        soundness::reached(|| state_key_with(&vm, &sim, false));
                        let decisions = sim.st.borrow().decisions.len();
                        path_states.push(PathState { key, step: path.len(), decisions });
                    }
                }
                sim.schedule(&enabled)
            }
        };
        path.push((enabled.iter().fold(0u64, |m, &e| m | 1 << e), t));
        poll(t as usize, &mut threads, &mut results);
        // A poll takes one step, and the steps after it that cannot switch threads (an unlock).
        steps = sim.st.borrow().events;
        // Event-time consequences (install-time invariants, contract breaches, bugs, warnings)
        // are recorded; a KVM_BUG_ON kills the VM and ends the run. Design-rule findings stay.
        let consequences: Vec<(u32, Finding)> = {
            let mut st = sim.st.borrow_mut();
            if st.findings.iter().all(|(_, f)| f.kind == FindingKind::DesignRule) {
                Vec::new()
            } else {
                let (c, design) =
                    std::mem::take(&mut st.findings).into_iter().partition(|(_, f)| f.kind != FindingKind::DesignRule);
                st.findings = design;
                c
            }
        };
        let mut bugged = false;
        for (at, f) in consequences {
            let Some(p) = Property::of_finding(&f) else { continue };
            bugged |= p == Property::Bug;
            let v = match f.kind {
                FindingKind::Bug | FindingKind::Warn => {
                    Violation::Bug { rule: f.rule.into(), message: f.message, tid: f.tid, step: at }
                }
                _ => Violation::Invariant {
                    rule: f.rule.into(),
                    message: f.message,
                    tid: Some(f.tid),
                    step: at,
                    stable: true,
                },
            };
            hits.add(sim.hit(p, v, at));
        }
        if bugged {
            end = RunEnd::Stopped;
            break;
        }
        let (dirty, dirty_mmu) = {
            let mut st = sim.st.borrow_mut();
            (std::mem::take(&mut st.dirty), std::mem::take(&mut st.dirty_mmu))
        };
        // The state invariants' conditions need mmu_lock free of writers. The huge-leaf ones
        // are checked after any write; the whole-table ones after page-table writes and
        // write-lock releases, the only steps that can change them while their condition holds.
        let checked_before = opts.trust_prefix && sim.replaying();
        if opts.check_every_step && !checked_before && dirty && sim.lock_state_mmu().writer.is_none() {
            let lock = sim.lock_state_mmu();
            let found = if opts.incremental {
                check_touched(&vm, lock)
            } else if dirty_mmu {
                check_state(&vm, lock)
            } else {
                crate::model::invariants::check_huge_leaves(&vm, lock)
            };
            for f in found {
                let v = Violation::Invariant {
                    rule: f.rule.into(),
                    message: f.message,
                    tid: None,
                    step: steps,
                    stable: false,
                };
                hits.add(sim.hit(Property::of_state(f.rule, false), v, steps));
            }
        }
        let over = {
            let st = sim.st.borrow();
            st.steps[t as usize] > scenario.max_steps
        };
        if over {
            unfinished =
                Some(format!("thread {t} took more than {} steps (the scenario's max_steps)", scenario.max_steps));
            end = RunEnd::Cut;
            break;
        }
        if opts.goal.is_some_and(|g| g.ops.iter().all(|&(t, i)| sim.completed(t, i))) {
            end = RunEnd::Goal;
            break;
        }
    }
    if end == RunEnd::Finished {
        // Programs that gave up: a guest operation that made no progress within max_exits.
        for (&t, rs) in &results {
            if let Some(r) = rs.iter().find(|r| r.result == GuestResult::NoProgress.name()) {
                unfinished = Some(format!(
                    "thread {t} op {} made no progress in {} EPT-violation exits (the VM's max_exits)",
                    r.op, vm.retry.max_exits
                ));
                end = RunEnd::Cut;
                break;
            }
        }
    }
    if end == RunEnd::Finished && opts.goal.is_none() {
        // A breach still present when every thread has stopped is stable. Every earlier state
        // was checked where it changed, so only a run that saw a breach (or checks the whole
        // state each step) needs the whole final state looked at.
        let lock = sim.lock_state_mmu();
        let whole = hits.has(Property::Window) || !opts.incremental || !opts.check_every_step;
        for f in if whole { check_state(&vm, lock) } else { check_touched(&vm, lock) } {
            let v =
                Violation::Invariant { rule: f.rule.into(), message: f.message, tid: None, step: steps, stable: true };
            hits.add(sim.hit(Property::of_state(f.rule, true), v, steps));
        }
    }
    drop(threads);
    let progressed = opts
        .goal
        .map_or(0, |g| g.ops.iter().filter(|&&(t, i)| sim.completed(t, i)).fold(0u64, |m, &(t, _)| m | 1 << t));
    let st = sim.st.into_inner();
    let races = st.races.map(|r| r.races).unwrap_or_default();
    let mut hits = hits.hits;
    if let Some(r) = races.first() {
        // The first race of the run stands for the property; every distinct pair is in `races`.
        hits.push(Hit {
            property: Property::Race,
            violation: Violation::Race(r.clone()),
            step: r.second.step,
            preemptions: r.preemptions,
            decisions: r.decisions,
        });
    }
    Execution {
        end,
        hits,
        unfinished,
        decisions: st.decisions,
        steps,
        preemptions: st.preemptions,
        trace: st.trace,
        results,
        design_rules: st.findings.into_iter().map(|(_, f)| f).collect(),
        races,
        path_states,
        progressed,
    }
}

impl Sim<'_> {
    fn lock_state_mmu(&self) -> crate::sync::LockState {
        self.lock_state(LockId::MmuLock)
    }

    /// A hit at `step`, with the preemptions and decisions made so far.
    fn hit(&self, property: Property, violation: Violation, step: u32) -> Hit {
        let st = self.st.borrow();
        Hit { property, violation, step, preemptions: st.preemptions, decisions: st.decisions.len() }
    }
}

/// Which next steps commute with every step other threads can take while the stepping thread
/// holds what it holds, from facts about the scenario: SPTEs are only touched under mmu_lock,
/// so under the write lock they are the holder's alone; lpage_info is written only under the
/// write lock unless the policy sets the flag under the read lock or with no lock; the
/// attributes and the invalidation counters are written only by host threads (the counters
/// under the write lock); an allocation is local when no failure can be injected; and the
/// SPTEs (2M and below), 2M lpage_info and attributes of a 2M region that only one thread's
/// operations touch are that thread's alone.
pub struct Movers {
    /// 2M region -> the threads whose operations touch it (bit per tid; every bit for a region
    /// a host operation touches).
    region_users: std::collections::HashMap<u64, u64, foldhash::fast::FixedState>,
    host_threads: bool,
    attribute_writers: bool,
    lpage_writes_under_read: bool,
    lpage_writes_unlocked: bool,
}

impl Movers {
    fn of(scenario: &Scenario) -> Movers {
        use crate::model::honor_policy::{HonorStep, held_at};
        let inhibit_under =
            |lock| held_at(&scenario.vm.honor_policy).any(|(step, held)| step == HonorStep::SetInhibit && held == lock);
        let (under_read, unlocked) = (inhibit_under(Some(Mode::Read)), inhibit_under(None));
        let hosts = || scenario.threads.iter().filter(|p| p.vcpu.is_none()).flat_map(|p| &p.ops);
        let mut region_users: std::collections::HashMap<u64, u64, foldhash::fast::FixedState> = Default::default();
        for (i, p) in scenario.threads.iter().enumerate() {
            let bit = 1u64 << scenario.tid(i);
            for op in &p.ops {
                let (range, who) = match *op {
                    ProgramOp::Accept { gfn, .. } | ProgramOp::Access { gfn } => (gfn..gfn + 1, bit),
                    ProgramOp::SetMemoryAttributes { start, end, .. } | ProgramOp::PunchHole { start, end } => {
                        (start..end, u64::MAX)
                    }
                };
                for region in range.start >> 9..=range.end.saturating_sub(1) >> 9 {
                    *region_users.entry(region).or_default() |= who;
                }
            }
        }
        Movers {
            region_users,
            host_threads: hosts().next().is_some(),
            attribute_writers: hosts().any(|op| matches!(op, ProgramOp::SetMemoryAttributes { .. })),
            lpage_writes_under_read: under_read,
            lpage_writes_unlocked: unlocked,
        }
    }

    pub fn commutes(
        &self,
        op: crate::sync::Op,
        tid: Tid,
        held: Option<Mode>,
        alloc_budget: u32,
        spte_is_table: &dyn Fn(crate::sync::Obj) -> bool,
    ) -> bool {
        use crate::abi::PG_LEVEL_2M;
        use crate::sync::{Obj, OpKind};
        let region = match op.obj {
            Obj::Spte { level, gfn } | Obj::LpageInfo { level, gfn } if level <= PG_LEVEL_2M => Some(gfn >> 9),
            Obj::Attributes { gfn } => Some(gfn >> 9),
            _ => None,
        };
        if region.is_some_and(|r| self.region_users.get(&r) == Some(&(1 << tid))) {
            return true;
        }
        let load = op.kind == OpKind::Load;
        match op.obj {
            // Under the read lock no one changes a present non-leaf SPTE (readers only fill
            // holes and replace huge leaves; zaps need the write lock), so loading one commutes.
            Obj::Spte { .. } => held == Some(Mode::Write) || held == Some(Mode::Read) && load && spte_is_table(op.obj),
            Obj::LpageInfo { .. } => {
                load && !self.lpage_writes_unlocked
                    && (held == Some(Mode::Write) || held == Some(Mode::Read) && !self.lpage_writes_under_read)
            }
            Obj::InvalidateSeq | Obj::InvalidateRange | Obj::InvalidateStart | Obj::InvalidateEnd => {
                load && (!self.host_threads || held.is_some())
            }
            Obj::Attributes { .. } => load && !self.attribute_writers,
            Obj::Page { .. } => op.kind == OpKind::Alloc && alloc_budget == 0,
            _ => false,
        }
    }
}

/// Whether the SPTE `obj` names holds a present page-table pointer now.
fn spte_is_table(vm: &Vm, obj: crate::sync::Obj) -> bool {
    use crate::model::spte::{is_last_spte, is_shadow_present_pte};
    let crate::sync::Obj::Spte { level, gfn } = obj else { return false };
    vm.mmu.peek(gfn, level).is_some_and(|p| {
        let v = p.load(SeqCst);
        is_shadow_present_pte(v) && !is_last_spte(v, level)
    })
}

/// A cycle closed at the state `key`: with weak fairness it is a livelock only if every thread
/// enabled at every step of it took a step in it (else a fair scheduler would leave the cycle).
fn livelock(cycle: &[(u64, Tid)], fairness: Fairness, sim: &Sim<'_>, key: u64) -> Option<Violation> {
    let stepped = cycle.iter().fold(0u64, |m, &(_, t)| m | 1 << t);
    let always = cycle.iter().fold(u64::MAX, |m, &(e, _)| m & e);
    if fairness == Fairness::Weak && always & !stepped != 0 {
        return None;
    }
    let threads: Vec<Tid> = (0..64).filter(|t| stepped & 1 << t != 0).collect();
    let message = format!(
        "can repeat a cycle of {} steps for ever without completing an operation ({})",
        cycle.len(),
        match fairness {
            Fairness::Weak => "under weak fairness: every thread enabled throughout the cycle steps in it",
            Fairness::None => "assuming no fairness",
        }
    );
    let stuck = threads.iter().map(|&t| (t, sim.op_index(t))).collect();
    Some(Violation::Livelock {
        threads,
        cycle_steps: cycle.len() as u32,
        fairness,
        message,
        escape: Escape::Unknown { why: "not searched".into() },
        stuck,
        state: key,
    })
}

fn deadlock(blocked: &[super::sim::Blocked]) -> Violation {
    let blocked = blocked
        .iter()
        .map(|(t, s, holders)| match s {
            Status::LockWait(lock, mode) => format!("thread {t} waits for {lock:?} ({mode:?}) held by {holders:?}"),
            Status::Wait(WaitCond::NoVcpuInGuest) => format!("thread {t} waits for every vCPU to leave the guest"),
            Status::Wait(WaitCond::VcpuEntryAllowed) => format!("thread {t} waits to enter the guest"),
            s => format!("thread {t} is {s:?}"),
        })
        .collect();
    Violation::Deadlock { blocked }
}

/// The state key for caching: the VM's reachable state in a canonical form, the threads'
/// histories and statuses, the locks and the fault budgets left.
fn state_key(vm: &Vm, sim: &Sim<'_>) -> u64 {
    state_key_with(vm, sim, true)
}

/// The state key, with or without what each thread observed.
fn state_key_with(vm: &Vm, sim: &Sim<'_>, histories: bool) -> u64 {
    let mut h = state_hasher();
    vm.fingerprint.load(SeqCst).hash(&mut h);
    {
        let tdx = vm.tdx.lock();
        tdx.fingerprint.hash(&mut h);
        tdx.epoch.hash(&mut h);
        tdx.wait_for_sept_zap.hash(&mut h);
        for v in &tdx.vcpus {
            v.in_guest_epoch.hash(&mut h);
        }
    }
    let inv = &vm.invalidate;
    [&inv.range_start, &inv.range_end].map(|c| c.load(SeqCst)).hash(&mut h);
    vm.bugged.load(SeqCst).hash(&mut h);
    sim.state_hash(&mut h, histories);
    h.finish()
}

/// A bounded search's key: the state with the current thread and the preemptions used, so a
/// state reached with preemptions to spare is not cut by one reached with fewer left.
fn with_preemptions(key: u64, sim: &Sim<'_>) -> u64 {
    let st = sim.st.borrow();
    let mut h = state_hasher();
    (key, st.current, st.preemptions).hash(&mut h);
    h.finish()
}

/// Test switches for the reductions, and the states a search reached without the threads'
/// histories: forgetting what a thread can no longer act on must not lose one of them.
#[cfg(test)]
pub(crate) mod soundness {
    use std::cell::{Cell, RefCell};
    use std::collections::HashSet;

    #[derive(Clone, Copy)]
    pub struct Reductions {
        pub movers: bool,
        pub forget: bool,
    }

    thread_local! {
        pub static REDUCTIONS: Cell<Reductions> = const { Cell::new(Reductions { movers: true, forget: true }) };
        pub static REACHED: RefCell<Option<HashSet<u64>>> = const { RefCell::new(None) };
    }

    pub fn reached(key: impl FnOnce() -> u64) {
        REACHED.with(|r| {
            if let Some(set) = r.borrow_mut().as_mut() {
                set.insert(key());
            }
        });
    }
}
