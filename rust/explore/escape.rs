//! Whether some schedule leaves a livelock's cycle. The cycle closed at a state S in which each
//! spinning thread is stuck in one operation. Every continuation from S is searched, depth
//! first over the decisions after S's prefix, for one that completes a stuck operation. State
//! caching is sound here: the question is reachability, and a cached state's continuations
//! were searched when it was first reached. A thread whose operation no continuation completes
//! is trapped, and S is a trap. Continuations are the explorer's schedules: the scenario's
//! fairness applies to them as to every run.

use std::collections::{BTreeMap, HashMap};

use super::properties::{Hit, livelock_hits};
use super::run::{Escape, Goal, RunEnd, RunOptions, StateCache, Violation, run_once};
use super::search::{Prefix, next_prefix};
use crate::abi::Seamcall;
use crate::program::scenario::Scenario;
use crate::sync::Tid;

/// At most this many runs search the continuations of one cycle.
pub const ESCAPE_RUNS: u64 = 20_000;

/// Each livelock hit of a run (`chosen`: its choices) with its escape; one that no schedule
/// leaves is a trap hit too. `known` holds the cycles classified before, by the state they close
/// at; an unknown one is searched if `search`; `spent` counts the runs.
pub fn classify(
    scenario: &Scenario,
    busy: &BTreeMap<Seamcall, u32>,
    hits: Vec<Hit>,
    chosen: &[u32],
    known: &mut HashMap<u64, Escape>,
    search: bool,
    spent: &mut u64,
) -> Vec<Hit> {
    let mut out = Vec::with_capacity(hits.len());
    for h in hits {
        let Violation::Livelock { stuck, state, .. } = &h.violation else {
            out.push(h);
            continue;
        };
        let escape = if let Some(e) = known.get(state) {
            e.clone()
        } else if !search {
            Escape::Unknown { why: "not searched: a trap was found already".into() }
        } else {
            let before = &chosen[..h.decisions.min(chosen.len())];
            let e = escape(scenario, busy, before, h.step, stuck, ESCAPE_RUNS);
            *spent += match &e {
                Escape::Leaves { schedules } | Escape::Trapped { schedules, .. } => *schedules,
                Escape::Unknown { .. } => ESCAPE_RUNS,
            };
            known.insert(*state, e.clone());
            e
        };
        out.extend(livelock_hits(&h, escape));
    }
    out
}

/// Search the continuations of `prefix` (the choices that reach S after `from_step` steps) for
/// ones that complete each of the `stuck` operations, in at most `max_runs` runs.
pub fn escape(
    scenario: &Scenario,
    busy: &BTreeMap<Seamcall, u32>,
    prefix: &[u32],
    from_step: u32,
    stuck: &[(Tid, usize)],
    max_runs: u64,
) -> Escape {
    let goal = Goal { from_step, ops: stuck.to_vec() };
    let all = stuck.iter().fold(0u64, |m, &(t, _)| m | 1 << t);
    let mut escaped = 0u64;
    let mut cache = StateCache::default();
    let mut next = Some(prefix.to_vec());
    let mut runs = 0u64;
    let mut cut = None;
    while let Some(choices) = next.take() {
        if runs >= max_runs {
            cut = Some(format!("the search of its continuations was cut after {runs} runs"));
            break;
        }
        let opts = RunOptions {
            check_every_step: false,
            cache: Some(&mut cache),
            races: false,
            goal: Some(&goal),
            ..RunOptions::checked(false)
        };
        let e = run_once(scenario, busy, &mut Prefix::new(choices), opts);
        runs += 1;
        escaped |= e.progressed;
        if escaped == all {
            return Escape::Leaves { schedules: runs };
        }
        if e.end == RunEnd::Cut {
            // What follows a cut run was not searched.
            cut.get_or_insert(format!("a continuation was cut: {}", e.unfinished.unwrap_or_default()));
        }
        next = next_prefix(&e.decisions, u32::MAX, &mut false).filter(|p| p.len() > prefix.len());
    }
    match cut {
        Some(why) => Escape::Unknown { why },
        None => Escape::Trapped {
            threads: stuck.iter().map(|&(t, _)| t).filter(|t| escaped & 1 << t == 0).collect(),
            schedules: runs,
        },
    }
}
