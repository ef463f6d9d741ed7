//! Search strategies over the choices of run.rs: exhaustive (iterative preemption bounding with
//! state caching), seeded random, PCT, replay of a choice sequence, and a caller's sequence.
//! A search runs in slices (`run_for`) so a caller can check for Ctrl-C between them.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::properties::{Coverage, Property, PropertyResult, Tracker, livelock_hits};
use super::run::{Escape, Execution, PathState, RunEnd, RunOptions, StateCache, Violation, run_once};
use super::sim::{ChoiceKind, Chooser, Decision};
use crate::abi::Seamcall;
use crate::error::CoreResult;
use crate::program::scenario::Scenario;
use crate::sync::Tid;

/// Follows a given choice sequence, then takes option 0 ("keep going") for the rest.
pub struct Prefix {
    pub choices: Vec<u32>,
    pos: usize,
}

impl Prefix {
    pub fn new(choices: Vec<u32>) -> Self {
        Prefix { choices, pos: 0 }
    }
}

impl Chooser for Prefix {
    fn choose(&mut self, _: ChoiceKind, n: u32, _: &[Tid], _: Tid) -> u32 {
        let c = self.choices.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        c % n
    }
    fn replaying(&self) -> bool {
        self.pos < self.choices.len()
    }
}

/// Uniform random choices from a named portable generator.
pub struct Random(Xoshiro256PlusPlus);

impl Chooser for Random {
    fn choose(&mut self, _: ChoiceKind, n: u32, _: &[Tid], _: Tid) -> u32 {
        self.0.random_range(0..n)
    }
}

/// PCT (Burckhardt et al., ASPLOS 2010): random distinct thread priorities, d - 1 priority
/// change points among the first k steps; the highest-priority enabled thread runs. A thread
/// that retries yields: its priority drops below every other.
pub struct Pct {
    rng: Xoshiro256PlusPlus,
    priority: BTreeMap<Tid, i64>,
    change_points: Vec<u64>,
    step: u64,
    next_low: i64,
}

impl Pct {
    pub fn new(seed: u64, threads: &[Tid], depth: u32, k: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut prios: Vec<i64> = (0..threads.len() as i64).map(|p| p + depth as i64).collect();
        for i in (1..prios.len()).rev() {
            let j = rng.random_range(0..=i);
            prios.swap(i, j);
        }
        let priority = threads.iter().copied().zip(prios).collect();
        let change_points = (1..depth).map(|_| rng.random_range(1..=k.max(1))).collect();
        Pct { rng, priority, change_points, step: 0, next_low: depth as i64 - 1 }
    }

    fn lower(&mut self, tid: Tid) {
        self.next_low -= 1;
        self.priority.insert(tid, self.next_low);
    }
}

impl Chooser for Pct {
    fn choose(&mut self, kind: ChoiceKind, n: u32, tids: &[Tid], tid: Tid) -> u32 {
        match kind {
            ChoiceKind::Schedule => {
                self.step += 1;
                let (i, &best) = tids
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, t)| self.priority.get(t).copied().unwrap_or(0))
                    .expect("n >= 2");
                if self.change_points.contains(&self.step) {
                    self.lower(best);
                    let (j, _) = tids
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, t)| self.priority.get(t).copied().unwrap_or(0))
                        .expect("n >= 2");
                    return j as u32;
                }
                i as u32
            }
            ChoiceKind::KeepRetrying => {
                let c = self.rng.random_range(0..n);
                if c == 1 {
                    self.lower(tid);
                }
                c
            }
            _ => self.rng.random_range(0..n),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// All schedules up to `bound` preemptions (None: no bound), bound by bound, with state
    /// caching unless `cache` is false.
    Exhaustive {
        #[serde(default)]
        bound: Option<u32>,
        #[serde(default = "yes")]
        cache: bool,
    },
    Random {
        seed: u64,
        runs: u64,
    },
    Pct {
        seed: u64,
        depth: u32,
        runs: u64,
    },
    /// Exactly these choices (a replay token's, or a caller's such as Hypothesis).
    Choices {
        choices: Vec<u32>,
    },
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Certificate {
    pub strategy: String,
    /// The preemption bound the search completed (exhaustive only).
    pub bound: Option<u32>,
    /// Every schedule within the bound was covered.
    pub complete: bool,
    /// The highest preemption bound whose pass covered every schedule, even when a later pass
    /// (a higher bound, or the unbounded search) was cut.
    pub completed_bound: Option<u32>,
    /// Which budget stopped the search early, if one did.
    pub cut_by: Option<String>,
    /// The search stopped because every asked property had a counterexample.
    pub stopped_when_found: bool,
    /// Runs cut by a thread's step budget or a guest operation's exit budget (not verdicts:
    /// what follows them was not searched), with one example.
    pub unfinished_runs: u64,
    pub unfinished: Option<String>,
    /// Runs spent searching the continuations of livelock cycles (escape.rs).
    pub escape_schedules: u64,
    pub schedules: u64,
    /// Schedules of the last pass (an iterative search re-runs lower bounds first).
    pub schedules_last_pass: u64,
    pub pruned: u64,
    pub distinct_states: u64,
    pub steps: u64,
    /// Schedules run per number of preemptions.
    pub preemption_histogram: BTreeMap<u32, u64>,
    /// For PCT: the probability bound 1/(n k^(d-1)) of hitting a depth-d bug in one run, and the
    /// runs needed for 99% confidence.
    pub pct_probability: Option<f64>,
    pub pct_runs_for_99: Option<u64>,
}

/// A property's counterexample: the choices that replay it, and the step at which it shows.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    pub property: Property,
    /// The verdict-matrix code (`TRAP`, `I1~`, ...).
    pub code: String,
    pub violation: Violation,
    /// The violation in a sentence, threads named (vCPUn, host).
    pub summary: String,
    pub choices: Vec<u32>,
    pub steps: u32,
    pub preemptions: u32,
}

/// One property's answer, with its counterexample when it was broken.
#[derive(Clone, Debug, Serialize)]
pub struct PropertyReport {
    #[serde(flatten)]
    pub result: PropertyResult,
    pub counterexample: Option<Counterexample>,
}

/// A distinct racing pair, with the choices of a run that shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RaceWitness {
    #[serde(flatten)]
    pub race: super::race::Race,
    pub choices: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// "violated": a deciding property broke; "holds": none did and the search was complete;
    /// "cut": none did, but the search was cut, bounded or sampled.
    pub verdict: &'static str,
    /// The worst deciding property broken.
    pub worst: Option<Property>,
    /// Its counterexample.
    pub counterexample: Option<Counterexample>,
    /// Every property, worst first.
    pub properties: Vec<PropertyReport>,
    pub certificate: Certificate,
    /// Design-rule findings across the search: rule -> (times seen, one message).
    pub design_rules: BTreeMap<String, (u64, String)>,
    /// For a single-run strategy: what each thread's operations returned.
    pub results: BTreeMap<Tid, Vec<super::run::OpResult>>,
    pub elapsed_ms: u64,
    /// A hash of every schedule the search ran, in order: equal inputs give equal hashes.
    pub schedule_hash: String,
    /// Pairs of unsynchronised plain accesses the search reached, one per kind of pair.
    pub races: Vec<RaceWitness>,
    pub memory_model: &'static str,
}

/// At most this many runs shorten one counterexample.
const SHORTEN_RUNS: u32 = 2_000;

/// Budgets that cut a search: schedules and wall time.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_schedules: u64,
    pub max_time: Option<Duration>,
    /// The state cache's memory: reaching it cuts the search (the certificate says so).
    pub max_cache_bytes: u64,
}

impl Default for Budget {
    /// No schedule or time limit; the state cache may use a quarter of the machine's memory.
    fn default() -> Self {
        Budget { max_schedules: u64::MAX, max_time: None, max_cache_bytes: machine_memory() / 4 }
    }
}

/// The machine's memory (MemTotal), or 4 GiB where it cannot be read.
pub fn machine_memory() -> u64 {
    meminfo("MemTotal:")
}

/// The memory the machine can still give (MemAvailable), or 4 GiB where it cannot be read.
pub fn machine_memory_available() -> u64 {
    meminfo("MemAvailable:")
}

fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix(field))?.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(4 << 30, |kib| kib * 1024)
}

/// Bytes a cached state takes in a hash set of u64 keys (the key and a control byte per slot).
const BYTES_PER_CACHE_SLOT: u64 = 9;

/// An unbounded exhaustive search first tries these preemption bounds, bound by bound.
const QUICK_BOUNDS: u32 = 1;
/// The bound an unbounded search secures when half its budget is gone: it pauses, completes
/// this bound, and goes on (a search the budget cuts still certifies this bound).
const SECURED_BOUND: u32 = QUICK_BOUNDS + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Unbounded,
    /// Iterative preemption bounding up to `max`; then, if `then_unbounded`, one unbounded DFS.
    Bounded {
        max: u32,
        then_unbounded: bool,
    },
    /// Looking for counterexamples with fewer preemptions for `Search::targets`.
    Minimize,
    /// The unbounded search is paused (`paused`) while this bound is completed.
    Securing,
}

/// A paused depth-first search: where it was, and what it had cached.
struct PausedDfs {
    prefix: Option<Vec<u32>>,
    cache: StateCache,
    path_states: Vec<PathState>,
    schedules_last_pass: u64,
}

pub struct Search {
    scenario: Scenario,
    busy: BTreeMap<Seamcall, u32>,
    strategy: Strategy,
    budget: Budget,
    started: Instant,
    // exhaustive
    phase: Phase,
    bound: u32,
    prefix: Option<Vec<u32>>,
    bound_hit: bool,
    cache: StateCache,
    // random / pct
    run_index: u64,
    pct_k: u64,
    /// Properties whose counterexamples may have more preemptions than needed (Minimize).
    targets: Vec<Property>,
    /// The whole space of schedules was covered by some pass.
    space_covered: bool,
    // results
    cert: Certificate,
    props: Tracker,
    design: BTreeMap<String, (u64, String)>,
    races: BTreeMap<String, RaceWitness>,
    /// Livelock cycles already classified, by the state they close at.
    escapes: std::collections::HashMap<u64, Escape>,
    results: BTreeMap<Tid, Vec<super::run::OpResult>>,
    done: bool,
    /// A hash of every schedule run, in order (determinism checks).
    schedule_hash: u64,
    /// Skip re-checking the invariants on a depth-first run's replayed prefix (RunOptions).
    trust_prefix: bool,
    /// The cached states on the current depth-first path (RunOptions::path_states).
    path_states: Vec<PathState>,
    /// The unbounded search while SECURED_BOUND is being completed; `secured` once it was.
    paused: Option<PausedDfs>,
    secured: bool,
}

fn mix(h: u64, x: impl std::hash::Hash) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut s = crate::explore::state_hasher();
    h.hash(&mut s);
    x.hash(&mut s);
    s.finish()
}

impl Search {
    /// A search that answers every property (`properties` empty), or the named ones.
    pub fn new(scenario: Scenario, strategy: Strategy, budget: Budget) -> CoreResult<Search> {
        Search::asking(scenario, strategy, budget, &[])
    }

    pub fn asking(
        scenario: Scenario,
        strategy: Strategy,
        budget: Budget,
        properties: &[Property],
    ) -> CoreResult<Search> {
        scenario.validate()?;
        let busy = scenario.busy_budget()?;
        let name = match &strategy {
            Strategy::Exhaustive { .. } => "exhaustive",
            Strategy::Random { .. } => "random",
            Strategy::Pct { .. } => "pct",
            Strategy::Choices { .. } => "choices",
        };
        let mut s = Search {
            scenario,
            busy,
            strategy: strategy.clone(),
            budget,
            started: Instant::now(),
            phase: match strategy {
                Strategy::Exhaustive { bound: Some(max), .. } => Phase::Bounded { max, then_unbounded: false },
                // Shallow bugs first (most are), then the complete search.
                _ => Phase::Bounded { max: QUICK_BOUNDS, then_unbounded: true },
            },
            bound: 0,
            prefix: Some(Vec::new()),
            bound_hit: false,
            cache: StateCache::default(),
            run_index: 0,
            pct_k: 0,
            targets: Vec::new(),
            space_covered: false,
            cert: Certificate { strategy: name.into(), ..Default::default() },
            props: Tracker::new(properties),
            design: BTreeMap::new(),
            races: BTreeMap::new(),
            escapes: Default::default(),
            results: BTreeMap::new(),
            done: false,
            schedule_hash: 0,
            trust_prefix: true,
            path_states: Vec::new(),
            paused: None,
            secured: false,
        };
        if let Strategy::Pct { depth, .. } = s.strategy {
            // k: the steps of a run that takes the default choices.
            let e = run_once(&s.scenario, &s.busy, &mut Prefix::new(vec![]), s.opts(false, None));
            s.pct_k = e.steps.max(1) as u64;
            let n = s.scenario.threads.len() as f64;
            let p = 1.0 / (n * (s.pct_k as f64).powi(depth as i32 - 1));
            s.cert.pct_probability = Some(p);
            s.cert.pct_runs_for_99 = Some(((0.01f64).ln() / (1.0 - p).ln()).ceil() as u64);
        }
        Ok(s)
    }

    fn opts<'a>(&self, tracing: bool, cache: Option<&'a mut StateCache>) -> RunOptions<'a> {
        RunOptions { cache, key_preemptions: true, ..RunOptions::checked(tracing) }
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Stop now, saying why (Ctrl-C, for example).
    pub fn cut(&mut self, why: &str) {
        if !self.done {
            self.cert.cut_by = Some(why.into());
            self.done = true;
        }
    }

    /// Run executions for about `slice`; returns whether the search has ended.
    pub fn run_for(&mut self, slice: Duration) -> bool {
        let until = Instant::now() + slice;
        while !self.done && Instant::now() < until {
            if self.cert.schedules >= self.budget.max_schedules {
                self.cut(&format!("max_schedules ({})", self.budget.max_schedules));
                break;
            }
            if let Some(t) = self.budget.max_time
                && self.started.elapsed() >= t
            {
                self.cut(&format!("max_time ({:.1}s)", t.as_secs_f64()));
                break;
            }
            let cached = self.cache.capacity() + self.paused.as_ref().map_or(0, |p| p.cache.capacity());
            if cached as u64 * BYTES_PER_CACHE_SLOT > self.budget.max_cache_bytes {
                let b = self.budget.max_cache_bytes;
                let size = if b >= 1 << 20 { format!("{} MiB", b >> 20) } else { format!("{} KiB", b >> 10) };
                self.cut(&format!("memory budget reached ({size} of cached states, {} states)", self.cache.len()));
                break;
            }
            if self.phase == Phase::Unbounded && !self.secured && self.half_budget_gone() {
                self.pause_unbounded();
            }
            self.step();
        }
        self.done
    }

    fn half_budget_gone(&self) -> bool {
        self.cert.schedules >= self.budget.max_schedules / 2
            || self.budget.max_time.is_some_and(|t| self.started.elapsed() >= t / 2)
    }

    /// Half the budget is gone and the unbounded search goes on: complete SECURED_BOUND first,
    /// so that a search the budget cuts still certifies it.
    fn pause_unbounded(&mut self) {
        self.secured = true;
        self.paused = Some(PausedDfs {
            prefix: self.prefix.take(),
            cache: std::mem::take(&mut self.cache),
            path_states: std::mem::take(&mut self.path_states),
            schedules_last_pass: self.cert.schedules_last_pass,
        });
        self.phase = Phase::Securing;
        self.restart_dfs(SECURED_BOUND);
    }

    fn record(&mut self, mut e: Execution) {
        let chosen: Vec<u32> = e.decisions.iter().map(|d| d.chosen).collect();
        self.schedule_hash = mix(self.schedule_hash, (&chosen, e.steps));
        self.cert.schedules += 1;
        self.cert.schedules_last_pass += 1;
        self.cert.steps += e.steps as u64;
        *self.cert.preemption_histogram.entry(e.preemptions).or_default() += 1;
        match e.end {
            RunEnd::Pruned => self.cert.pruned += 1,
            RunEnd::Cut => {
                self.cert.unfinished_runs += 1;
                self.cert.unfinished = self.cert.unfinished.take().or(e.unfinished.take());
            }
            _ => {}
        }
        // Every distinct pair: the object, and each side's thread, access and locks.
        for r in std::mem::take(&mut e.races) {
            let side = |a: &super::race::Access| format!("{}/{}/{}", a.tid, a.op, a.locks);
            let mut pair = [side(&r.first), side(&r.second)];
            pair.sort();
            let key = format!("{} {} {}", r.object, pair[0], pair[1]);
            let choices = chosen[..r.decisions.min(chosen.len())].to_vec();
            self.races.entry(key).or_insert_with(|| RaceWitness { race: r, choices });
        }
        for f in std::mem::take(&mut e.design_rules) {
            let entry = self.design.entry(f.rule.to_string()).or_insert((0, f.message.clone()));
            entry.0 += 1;
        }
        let hits = self.classify_livelocks(std::mem::take(&mut e.hits), &chosen);
        self.props.merge(&hits, &chosen);
        if matches!(self.strategy, Strategy::Choices { .. }) {
            self.results = e.results;
        }
    }

    /// A livelock hit gets its escape (escape.rs). Once a trap is found, a cycle is searched
    /// only if it would be the livelock property's new best counterexample.
    fn classify_livelocks(&mut self, hits: Vec<super::properties::Hit>, chosen: &[u32]) -> Vec<super::properties::Hit> {
        let better = |h: &super::properties::Hit| {
            self.props
                .found
                .get(&Property::Livelock)
                .is_none_or(|f| (h.preemptions, h.step) < (f.hit.preemptions, f.hit.step))
        };
        let search =
            !self.props.is_found(Property::Trap) || hits.iter().any(|h| h.property == Property::Livelock && better(h));
        let (scenario, busy) = (&self.scenario, &self.busy);
        let spent = &mut self.cert.escape_schedules;
        super::escape::classify(scenario, busy, hits, chosen, &mut self.escapes, search, spent)
    }

    fn step(&mut self) {
        match self.strategy.clone() {
            Strategy::Exhaustive { cache, .. } => self.step_exhaustive(cache),
            Strategy::Random { seed, runs } => {
                if self.run_index >= runs || !self.props.open() {
                    self.finish();
                    return;
                }
                let mut c = Random(Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_add(self.run_index)));
                self.run_index += 1;
                let e = run_once(&self.scenario, &self.busy, &mut c, self.opts(false, None));
                self.record(e);
            }
            Strategy::Pct { seed, depth, runs } => {
                if self.run_index >= runs || !self.props.open() {
                    self.finish();
                    return;
                }
                let tids: Vec<Tid> = (0..self.scenario.threads.len()).map(|i| self.scenario.tid(i)).collect();
                let mut c = Pct::new(seed.wrapping_add(self.run_index), &tids, depth, self.pct_k);
                self.run_index += 1;
                let e = run_once(&self.scenario, &self.busy, &mut c, self.opts(false, None));
                self.record(e);
            }
            Strategy::Choices { choices } => {
                let e = run_once(&self.scenario, &self.busy, &mut Prefix::new(choices), self.opts(false, None));
                self.record(e);
                self.finish();
            }
        }
    }

    /// The search ends: complete if some pass covered every schedule and nothing cut it. Each
    /// counterexample is then shortened where one changed choice gives a shorter one (not a
    /// caller's own choices). A search cut by a budget or Ctrl-C ends in `cut`, not here.
    fn finish(&mut self) {
        if !matches!(self.strategy, Strategy::Choices { .. }) {
            let found: Vec<Property> = self.props.found.keys().copied().collect();
            for p in found {
                self.shorten(p);
            }
        }
        self.cert.complete = self.space_covered && self.cert.cut_by.is_none() && self.cert.unfinished_runs == 0;
        self.cert.distinct_states = self.cert.distinct_states.max(self.cache.len() as u64);
        self.done = true;
    }

    /// One execution of the exhaustive search. Unbounded: one DFS with state caching; a
    /// violation then starts a bounded search below its preemption count, to find a
    /// counterexample with fewer preemptions. Bounded: iterative preemption bounding 0..=max; a
    /// bound whose DFS never had to skip a preemption is complete for every bound.
    fn step_exhaustive(&mut self, use_cache: bool) {
        let Some(prefix) = self.prefix.take() else {
            self.end_of_pass(false);
            return;
        };
        // Every asked property has a counterexample (minimising: every target has one within
        // this pass's bound, which has the fewest preemptions there are): the pass ends early.
        let found_all = match self.phase {
            Phase::Minimize => {
                self.targets.iter().all(|p| self.props.found.get(p).is_some_and(|f| f.hit.preemptions <= self.bound))
            }
            _ => !self.props.open(),
        };
        if found_all {
            self.cert.stopped_when_found = self.phase != Phase::Minimize;
            self.prefix = None;
            self.end_of_pass(true);
            return;
        }
        let mut chooser = Prefix::new(prefix);
        let bound = self.bound;
        let mut cache = std::mem::take(&mut self.cache);
        let mut opts = self.opts(false, use_cache.then_some(&mut cache));
        opts.key_preemptions = self.phase != Phase::Unbounded;
        // Every run of the depth-first search replays a prefix an earlier run checked.
        opts.trust_prefix = self.trust_prefix;
        let path_states = std::mem::take(&mut self.path_states);
        opts.path_states = &path_states;
        let mut e = run_once(&self.scenario, &self.busy, &mut chooser, opts);
        self.cache = cache;
        self.prefix = next_prefix(&e.decisions, bound, &mut self.bound_hit);
        // The next run replays the decisions before the one it changes, and the states there.
        self.path_states = path_states;
        self.path_states.append(&mut e.path_states);
        let kept = self.prefix.as_ref().map_or(0, |p| p.len());
        self.path_states.retain(|s| s.decisions < kept);
        self.record(e);
    }

    fn restart_dfs(&mut self, bound: u32) {
        self.cert.schedules_last_pass = 0;
        self.bound = bound;
        self.bound_hit = false;
        self.cache.clear();
        self.path_states.clear();
        self.prefix = Some(Vec::new());
    }

    /// A depth-first pass ended: `early` when every property it looked for was found before
    /// it covered its schedules.
    fn end_of_pass(&mut self, early: bool) {
        let clean = !early && self.cert.cut_by.is_none();
        // A bounded pass that never had to skip a preemption covered every schedule.
        if clean && (self.phase == Phase::Unbounded || !self.bound_hit) {
            self.space_covered = true;
        }
        if clean && self.phase != Phase::Unbounded {
            self.cert.completed_bound = Some(self.cert.completed_bound.map_or(self.bound, |b| b.max(self.bound)));
        }
        self.cert.distinct_states = self.cert.distinct_states.max(self.cache.len() as u64);
        match self.phase {
            _ if self.cert.cut_by.is_some() => self.finish(),
            Phase::Bounded { max, then_unbounded } => {
                if early || !self.bound_hit {
                    self.cert.bound = if self.bound_hit { Some(self.bound) } else { None };
                    self.minimise_or_finish();
                } else if self.bound < max {
                    self.restart_dfs(self.bound + 1);
                } else if then_unbounded {
                    self.phase = Phase::Unbounded;
                    self.restart_dfs(u32::MAX);
                } else {
                    self.cert.bound = Some(self.bound);
                    self.finish();
                }
            }
            Phase::Securing => {
                if early || !self.bound_hit {
                    self.minimise_or_finish();
                } else {
                    // The unbounded search goes on where it was.
                    let p = self.paused.take().expect("securing pauses the unbounded search");
                    self.phase = Phase::Unbounded;
                    self.bound = u32::MAX;
                    self.prefix = p.prefix;
                    self.cache = p.cache;
                    self.path_states = p.path_states;
                    self.cert.schedules_last_pass = p.schedules_last_pass;
                }
            }
            Phase::Unbounded => {
                self.cert.bound = None;
                self.minimise_or_finish();
            }
            Phase::Minimize => {
                self.minimise_or_finish();
            }
        }
    }

    /// Counterexamples found with more preemptions than the bounds searched to the end may have
    /// shorter ones: search the next bound for them, bound by bound, until each is known to
    /// have the fewest.
    fn minimise_or_finish(&mut self) {
        let next = self.cert.completed_bound.map_or(0, |b| b + 1);
        self.targets = self.props.found.iter().filter(|(_, f)| f.hit.preemptions > next).map(|(p, _)| *p).collect();
        if self.targets.is_empty() || matches!(self.strategy, Strategy::Exhaustive { bound: Some(_), .. }) {
            self.finish();
        } else {
            self.phase = Phase::Minimize;
            self.restart_dfs(next);
        }
    }

    /// Shorten `p`'s counterexample greedily: try each choice changed to a lower option, or the
    /// choices cut after it, and keep a run that breaks `p` at an earlier step with no more
    /// preemptions; repeat until no single change helps (`shortened`) or SHORTEN_RUNS runs.
    fn shorten(&mut self, p: Property) {
        let mut best = self.props.found[&p].clone();
        let mut runs = 0;
        let mut improved = true;
        while improved && runs < SHORTEN_RUNS {
            improved = false;
            'candidates: for i in (0..best.choices.len()).rev() {
                for alt in (0..best.choices[i]).map(Some).chain([None]) {
                    if runs >= SHORTEN_RUNS {
                        break 'candidates;
                    }
                    let mut choices = best.choices[..i].to_vec();
                    choices.extend(alt);
                    runs += 1;
                    let e = run_once(&self.scenario, &self.busy, &mut Prefix::new(choices), self.opts(false, None));
                    let chosen: Vec<u32> = e.decisions.iter().map(|d| d.chosen).collect();
                    let better = e.hits.iter().find(|h| {
                        // A cycle counts once the search of its continuations classified it.
                        let same = match p {
                            Property::Trap => h.property == Property::Livelock && self.is_trap(&h.violation),
                            Property::Livelock => {
                                h.property == p
                                    && matches!(&h.violation, Violation::Livelock { state, .. } if self.escapes.contains_key(state))
                            }
                            _ => h.property == p,
                        };
                        same && (h.preemptions, h.step) < (best.hit.preemptions, best.hit.step)
                            && h.preemptions <= best.hit.preemptions
                    });
                    if let Some(h) = better {
                        let hit = super::properties::Hit { property: p, ..h.clone() };
                        best.choices = chosen[..hit.decisions.min(chosen.len())].to_vec();
                        best.hit = hit;
                        improved = true;
                        break 'candidates;
                    }
                }
            }
        }
        best.shortened = !improved;
        if let Violation::Livelock { state, .. } = &best.hit.violation
            && let Some(escape) = self.escapes.get(state)
        {
            best.hit = livelock_hits(&best.hit, escape.clone())
                .pop()
                .map(|h| super::properties::Hit { property: p, ..h })
                .expect("one hit at least");
        }
        self.props.found.insert(p, best);
    }

    /// A livelock whose cycle state a search of its continuations found trapped.
    fn is_trap(&self, v: &Violation) -> bool {
        matches!(v, Violation::Livelock { state, .. } if matches!(self.escapes.get(state), Some(Escape::Trapped { .. })))
    }

    /// Whether `p` preemptions are known to be the fewest: every lower bound was searched.
    fn preemptions_minimal(&self, p: u32) -> bool {
        p == 0 || self.cert.completed_bound.is_some_and(|b| p <= b + 1)
    }

    pub fn report(&self) -> Report {
        let mut cert = self.cert.clone();
        cert.distinct_states = cert.distinct_states.max(self.cache.len() as u64);
        let sampled = !matches!(self.strategy, Strategy::Exhaustive { .. });
        let cached = matches!(self.strategy, Strategy::Exhaustive { cache: true, .. });
        let cov = Coverage {
            complete: cert.complete,
            up_to: if cert.unfinished_runs == 0 { cert.completed_bound } else { None },
            runs: cert.schedules,
            sampled,
            cached,
        };
        let counterexample = |p: Property| {
            self.props.found.get(&p).map(|f| Counterexample {
                property: p,
                code: f.hit.code(),
                violation: f.hit.violation.clone(),
                summary: f.hit.violation.summary(self.scenario.vm.vcpus),
                choices: f.choices.clone(),
                steps: f.hit.step,
                preemptions: f.hit.preemptions,
            })
        };
        let mut properties: Vec<PropertyReport> = self
            .props
            .results(cov, |p| self.preemptions_minimal(p))
            .into_iter()
            .map(|result| PropertyReport { counterexample: counterexample(result.property), result })
            .collect();
        if let Some(why) = &cert.unfinished {
            for r in &mut properties {
                if let super::properties::Status::NoneFound { why: w, .. } = &mut r.result.status
                    && w == "the search was cut"
                {
                    *w = format!("{} run(s) were cut by a budget, e.g. {why}", cert.unfinished_runs);
                }
            }
        }
        let worst = self.props.worst().map(|(p, _)| p);
        // A property asked for by name that the search could not rule out (a race under
        // caching) leaves the answer open, even after a complete search.
        let open = properties
            .iter()
            .any(|p| p.result.decides && matches!(p.result.status, super::properties::Status::NoneFound { .. }));
        Report {
            verdict: if worst.is_some() {
                "violated"
            } else if cert.complete && !open {
                "holds"
            } else {
                "cut"
            },
            worst,
            counterexample: worst.and_then(counterexample),
            properties,
            certificate: cert,
            design_rules: self.design.clone(),
            results: self.results.clone(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            schedule_hash: format!("{:016x}", self.schedule_hash),
            races: self.races.values().cloned().collect(),
            memory_model: "x86-TSO (plain aligned accesses are atomic and not reordered with each other; races are reported against the C language model)",
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }
}

/// The DFS successor of a run: change the deepest decision that has an untried option allowed
/// by the preemption bound. Sets `bound_hit` when the bound forbade an option.
pub(crate) fn next_prefix(decisions: &[Decision], bound: u32, bound_hit: &mut bool) -> Option<Vec<u32>> {
    let mut before = Vec::with_capacity(decisions.len());
    let mut p = 0;
    for d in decisions {
        before.push(p);
        p += d.preemption as u32;
    }
    for i in (0..decisions.len()).rev() {
        let d = decisions[i];
        if d.chosen + 1 >= d.n {
            continue;
        }
        let preempts = d.kind == ChoiceKind::Schedule && d.current_enabled;
        if preempts && before[i] + 1 > bound {
            *bound_hit = true;
            continue;
        }
        let mut prefix: Vec<u32> = decisions[..i].iter().map(|d| d.chosen).collect();
        prefix.push(d.chosen + 1);
        return Some(prefix);
    }
    None
}

/// Follows a token's choices exactly: an option out of range, or choices left when the run
/// ends, mean the token does not belong to this scenario. Past its choices it takes option 0,
/// as the search did after the step a counterexample shows.
struct Exact {
    choices: Vec<u32>,
    pos: usize,
    bad: Option<String>,
}

impl Chooser for Exact {
    fn choose(&mut self, _: ChoiceKind, n: u32, _: &[Tid], _: Tid) -> u32 {
        let c = self.choices.get(self.pos).copied();
        self.pos += 1;
        match c {
            Some(c) if c < n => c,
            Some(c) => {
                let at = self.pos - 1;
                self.bad.get_or_insert(format!("choice {at} is {c}, but that decision has {n} options"));
                0
            }
            None => 0,
        }
    }
    fn replaying(&self) -> bool {
        self.pos < self.choices.len()
    }
}

/// Run a token's `choices` once with tracing on: the counterexample's trace, and what the
/// threads got. A livelock's cycle is classified as a search classifies it (escape.rs), so a
/// trap replays as one.
pub fn replay(scenario: &Scenario, choices: &[u32]) -> CoreResult<Execution> {
    scenario.validate()?;
    let busy = scenario.busy_budget()?;
    let mut chooser = Exact { choices: choices.to_vec(), pos: 0, bad: None };
    let mut e = run_once(scenario, &busy, &mut chooser, RunOptions::checked(true));
    let refuse =
        |why: String| Err(crate::error::CoreError::Config(format!("this token does not fit its scenario: {why}")));
    if let Some(why) = chooser.bad {
        return refuse(why);
    }
    if chooser.pos < choices.len() {
        return refuse(format!("it has {} choices, and the run made only {} decisions", choices.len(), chooser.pos));
    }
    let chosen: Vec<u32> = e.decisions.iter().map(|d| d.chosen).collect();
    let hits = std::mem::take(&mut e.hits);
    e.hits = super::escape::classify(scenario, &busy, hits, &chosen, &mut Default::default(), true, &mut 0);
    Ok(e)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::abi::PG_LEVEL_4K;
    use crate::model::config::VmConfig;
    use crate::model::honor_policy::HonorStep::{self, *};
    use crate::program::scenario::{FaultBudget, Program, ProgramOp};

    pub fn seed_scenario(policy: &[HonorStep], alloc_failures: u32) -> Scenario {
        Scenario {
            name: "accept-vs-fault".into(),
            setup: vec![],
            vm: VmConfig {
                honor_policy: policy.to_vec(),
                retry: crate::model::config::RetryOptions {
                    event_after_retries: 1,
                    max_exits: 64,
                    ..Default::default()
                },
                ..Default::default()
            },
            threads: vec![
                Program { vcpu: Some(0), ops: vec![ProgramOp::Accept { gfn: 0x201, level: PG_LEVEL_4K }] },
                Program { vcpu: Some(1), ops: vec![ProgramOp::Access { gfn: 0x3ff }] },
            ],
            faults: FaultBudget { alloc_failures, ..Default::default() },
            rwlock: Default::default(),
            fairness: Default::default(),
            max_steps: 5000,
        }
    }

    fn check(s: Scenario, strategy: Strategy) -> Report {
        let mut search = Search::new(s, strategy, Budget { max_schedules: 2_000_000, ..Default::default() }).unwrap();
        while !search.run_for(Duration::from_secs(60)) {}
        search.report()
    }

    #[test]
    fn final_algorithm_holds_on_the_seed_scenario() {
        let r = check(seed_scenario(&HonorStep::FINAL, 1), Strategy::Exhaustive { bound: None, cache: true });
        eprintln!("{}", serde_json::to_string(&r.certificate).unwrap());
        assert_eq!(r.verdict, "holds", "{:?}", r.counterexample.map(|c| c.violation));
        assert!(r.certificate.complete);
    }

    /// Not re-checking a depth-first run's replayed prefix changes no verdict, counterexample
    /// or schedule count: every preset policy, with and without an allocation failure.
    #[test]
    fn trusting_the_replayed_prefix_changes_nothing() {
        use HonorStep::*;
        let policies: [&[HonorStep]; 4] = [
            &HonorStep::FINAL,
            &[PreCheck, ReadLock, SetInhibit, ReadUnlock, WriteLock, Split, WriteUnlock],
            &[PreCheck, WriteLock, SetInhibit, Split, WriteUnlock],
            &[PreCheck, ReadLock, SetInhibit, ReadUnlock],
        ];
        for policy in policies {
            for failures in [0, 1] {
                let run = |trust| {
                    let strategy = Strategy::Exhaustive { bound: None, cache: true };
                    let budget = Budget { max_schedules: 2_000_000, ..Default::default() };
                    let mut search = Search::new(seed_scenario(policy, failures), strategy, budget).unwrap();
                    search.trust_prefix = trust;
                    while !search.run_for(Duration::from_secs(60)) {}
                    let r = search.report();
                    let found: Vec<_> = r
                        .properties
                        .into_iter()
                        .filter_map(|p| p.counterexample)
                        .map(|c| (c.summary, c.choices))
                        .collect();
                    (r.verdict, found, r.certificate.schedules)
                };
                assert_eq!(run(true), run(false), "{policy:?}, {failures} failure(s)");
            }
        }
    }

    /// The incremental invariant checks find what checking the whole state after every step
    /// finds, on random schedules of every preset policy.
    #[test]
    fn incremental_checks_agree_with_whole_state_checks() {
        use crate::explore::run::{RunOptions, run_once};
        let policies: [&[HonorStep]; 5] = [
            &HonorStep::FINAL,
            &[PreCheck, ReadLock, SetInhibit, ReadUnlock],
            &[PreCheck, ReadLock, SetInhibit, ReadUnlock, WriteLock, Split, WriteUnlock],
            &[PreCheck, WriteLock, SetInhibit, Split, WriteUnlock],
            &[PreCheck, ReadLock, SetInhibit, Split, ReadUnlock],
        ];
        let (mut differ, mut found) = (0, 0);
        for (i, p) in policies.iter().enumerate() {
            let mut s = seed_scenario(p, 1);
            s.threads.push(Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] });
            s.vm.vcpus = 3;
            for seed in 0..150u64 {
                let run = |incremental| {
                    let mut c = Random(Xoshiro256PlusPlus::seed_from_u64(seed * 7 + i as u64));
                    let opts = RunOptions { races: false, incremental, ..RunOptions::checked(false) };
                    let e = run_once(&s, &Default::default(), &mut c, opts);
                    let mut hits: Vec<_> = e.hits.iter().map(|h| (h.property, h.code(), h.step)).collect();
                    hits.sort();
                    hits
                };
                let (a, b) = (run(true), run(false));
                found += !a.is_empty() as u32;
                if a != b {
                    differ += 1;
                    eprintln!("policy {i} seed {seed}: incremental {a:?}, whole {b:?}");
                }
            }
        }
        assert_eq!(differ, 0);
        assert!(found > 100, "the broken policies must break in many of these runs ({found})");
        eprintln!("{found} violating runs of 750, all alike");
    }

    /// A livelock found where a cycle returns to a state the execution passed on its replayed
    /// prefix (a cache hit, not a spin) is reported where a replay of its choices, which has no
    /// cache, reports it: the same violation after the same steps. On two-accepts (three vCPUs)
    /// the inhibit-only policy's livelock is found this way (docs/EXPLORER.md).
    #[test]
    fn livelock_counterexamples_replay_to_the_same_step() {
        for threads in [2, 3] {
            let mut s = seed_scenario(&[PreCheck, ReadLock, SetInhibit, ReadUnlock], 0);
            if threads == 3 {
                s.threads
                    .push(Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] });
                s.vm.vcpus = 3;
            }
            let r = check(s.clone(), Strategy::Exhaustive { bound: None, cache: true });
            let cx = r.properties[Property::Livelock as usize].counterexample.clone().expect("inhibit-only livelocks");
            let e = replay(&s, &cx.choices).unwrap();
            let hit = e.hits.iter().find(|h| h.property == Property::Livelock).expect("the replay livelocks");
            let message = |v: &Violation| match v {
                Violation::Livelock { message, .. } => message.clone(),
                v => panic!("{v:?}"),
            };
            assert_eq!((message(&hit.violation), hit.step), (message(&cx.violation), cx.steps), "{threads} threads");
        }
    }

    /// An unbounded search the budget cuts still certifies SECURED_BOUND: at half its budget it
    /// pauses, completes that bound, and goes on. Three vCPUs: bounds 0 and 1 take about 500
    /// executions, bound 2 about 9,700, the whole search about 45,000; a budget of 30,000 cuts
    /// it after bound 2 is done.
    #[test]
    fn a_cut_unbounded_search_certifies_the_secured_bound() {
        let mut s = seed_scenario(&HonorStep::FINAL, 0);
        s.threads.push(Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] });
        s.vm.vcpus = 3;
        let budget = Budget { max_schedules: 30_000, ..Default::default() };
        let mut search = Search::new(s, Strategy::Exhaustive { bound: None, cache: true }, budget).unwrap();
        while !search.run_for(Duration::from_secs(60)) {}
        let c = search.report().certificate;
        assert_eq!((c.complete, c.cut_by.as_deref()), (false, Some("max_schedules (30000)")));
        assert_eq!(c.completed_bound, Some(SECURED_BOUND));
    }

    /// Forgetting what a thread can no longer act on (its observations before a loop head, a
    /// fault's walk once its result is known, an honour step's once the next starts, a store's
    /// old value, the epoch it entered at, whether an allocation needed a decision) merges
    /// states whose futures are equal. It must not lose one: with movers off (which states they
    /// skip depends on the path), the states reached, histories left out, are the same set with
    /// forgetting and without, while forgetting needs fewer.
    #[test]
    fn forgetting_loses_no_reachable_state() {
        use crate::explore::run::soundness::{REACHED, REDUCTIONS, Reductions};
        let cases = [(2, 0, Some(2)), (2, 1, Some(2)), (3, 0, Some(1))];
        for (threads, failures, bound) in cases {
            let mut s = seed_scenario(&HonorStep::FINAL, failures);
            if threads == 3 {
                s.threads
                    .push(Program { vcpu: Some(2), ops: vec![ProgramOp::Accept { gfn: 0x300, level: PG_LEVEL_4K }] });
                s.vm.vcpus = 3;
            }
            let reached = |forget| {
                REDUCTIONS.set(Reductions { movers: false, forget });
                REACHED.set(Some(Default::default()));
                let r = check(s.clone(), Strategy::Exhaustive { bound, cache: true });
                REDUCTIONS.set(Reductions { movers: true, forget: true });
                // A bounded search that covered its bound is "cut" (not a proof for every schedule).
                let covered = r.certificate.complete || r.certificate.completed_bound == bound;
                assert_eq!((r.worst, covered), (None, true), "forget {forget}, bound {bound:?}");
                (REACHED.take().expect("set above"), r.certificate.distinct_states)
            };
            let ((with, with_states), (without, without_states)) = (reached(true), reached(false));
            eprintln!(
                "{threads} threads, {failures} failure(s), bound {bound:?}: {} states forgetting, {} not; {} without histories",
                with_states,
                without_states,
                without.len()
            );
            assert_eq!(with, without, "{threads} threads, {failures} failure(s)");
            assert!(with_states < without_states);
        }
    }

    /// A token's choices are followed exactly: an option out of range or a surplus choice is
    /// refused, and a replay that does not show what the token recorded is refused.
    #[test]
    fn a_replay_follows_its_choices_exactly_and_shows_what_its_token_recorded() {
        use crate::explore::token::{self, Expected};
        let s = seed_scenario(&[PreCheck, ReadLock, SetInhibit, ReadUnlock], 0);
        let r = check(s.clone(), Strategy::Exhaustive { bound: None, cache: true });
        let cx = r.counterexample.expect("inhibit-only is a trap");
        assert_eq!(cx.property, Property::Trap);
        let e = replay(&s, &cx.choices).unwrap();
        assert!(e.hits.iter().any(|h| h.property == Property::Trap && h.step == cx.steps));
        let err = |choices: &[u32]| replay(&s, choices).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&[7]).contains("choice 0 is 7, but that decision has 2 options"), "{}", err(&[7]));
        let surplus: Vec<u32> = cx.choices.iter().copied().chain([0; 500]).collect();
        assert!(err(&surplus).contains("and the run made only"), "{}", err(&surplus));
        let expect = |property: &str, step| Expected { property: property.into(), step };
        assert!(token::verify(&expect("trap", Some(cx.steps)), &e.hits).is_ok());
        let wrong = token::verify(&expect("deadlock", Some(3)), &e.hits).unwrap_err().to_string();
        assert!(wrong.contains("does not show what its token recorded (deadlock at step 3; it shows"), "{wrong}");
        assert!(wrong.contains(&format!("trap at step {}", cx.steps)), "{wrong}");
    }

    #[test]
    fn inhibit_without_split_is_violated() {
        let r = check(
            seed_scenario(&[PreCheck, ReadLock, SetInhibit, ReadUnlock], 0),
            Strategy::Exhaustive { bound: None, cache: true },
        );
        let cx = r.counterexample.expect("a counterexample");
        eprintln!("{:?} preemptions {} steps {}", cx.violation, cx.preemptions, cx.steps);
        assert_eq!(r.verdict, "violated");
    }
}
