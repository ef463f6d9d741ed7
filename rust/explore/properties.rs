//! What a check answers: every property on its own, each with a class that says whether it
//! decides the verdict (harm) or is reported with a trace (contract). Step events in: run.rs
//! turns what a run finds into `Hit`s as it happens. Per-property state out: `Tracker` keeps,
//! across the runs of a search, each property's best counterexample, and `results` says what
//! the search shows about each one.
//!
//! Severity is the declaration order of `Property`, worst first.

use serde::Serialize;
use std::collections::BTreeMap;

use super::run::{Escape, Violation};
use crate::error::{CoreError, CoreResult};
use crate::sync::{Finding, FindingKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Property {
    Isolation,
    Deadlock,
    Bug,
    Trap,
    Warn,
    Livelock,
    Breach,
    InstallBreach,
    Window,
    Race,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Decides the verdict.
    Harm,
    /// Reported with its trace; decides only when asked for by name.
    Contract,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PropertySpec {
    pub property: Property,
    pub name: &'static str,
    pub class: Class,
    /// What must hold.
    pub statement: &'static str,
    /// The verdict-matrix code of a violation; `None` where the broken rule names it (I9, I1~).
    pub code: Option<&'static str>,
    /// The codes a violation can show, for a legend.
    pub codes: &'static str,
}

pub const PROPERTIES: [PropertySpec; 10] = [
    PropertySpec {
        property: Property::Isolation,
        name: "isolation",
        class: Class::Harm,
        statement: "memory isolation and safety: no leaf beyond its folio (I9), across an invalidation (I10), over a present table (I7), at 2M before RUNNABLE (I8) or over mixed attributes (I3 not caused by the flag); no ACCEPT succeeds at a size it is not mapped at (I11); the mirror and the S-EPT agree once every thread has stopped (stable I4)",
        code: None,
        codes: "I3, I4, I7, I8, I9, I10, I11",
    },
    PropertySpec {
        property: Property::Deadlock,
        name: "deadlock",
        class: Class::Harm,
        statement: "no state in which every unfinished thread is blocked (on mmu_lock, a kick or vCPU entry)",
        code: Some("DL"),
        codes: "DL",
    },
    PropertySpec {
        property: Property::Bug,
        name: "bug",
        class: Class::Harm,
        statement: "no KVM_BUG_ON / TDX_BUG_ON (the VM is marked bugged and killed), no release of a lock not held",
        code: Some("BUG"),
        codes: "BUG",
    },
    PropertySpec {
        property: Property::Trap,
        name: "trap",
        class: Class::Harm,
        statement: "from every reachable state, some continuation completes a guest operation",
        code: Some("TRAP"),
        codes: "TRAP",
    },
    PropertySpec {
        property: Property::Warn,
        name: "warn",
        class: Class::Harm,
        statement: "no WARN_ON",
        code: Some("WARN"),
        codes: "WARN",
    },
    PropertySpec {
        property: Property::Livelock,
        name: "livelock",
        class: Class::Harm,
        statement: "no cycle without progress that a weakly fair schedule can repeat for ever (the result says whether some schedule leaves it; one that no schedule leaves is a trap)",
        code: Some("LL"),
        codes: "LL",
    },
    PropertySpec {
        property: Property::Breach,
        name: "breach",
        class: Class::Contract,
        statement: "the inhibit contract holds once every thread has stopped: no huge leaf survives GUEST_INHIBIT (stable I1), and the flag is never cleared (I2)",
        code: None,
        codes: "I1!, I2!",
    },
    PropertySpec {
        property: Property::InstallBreach,
        name: "install-breach",
        class: Class::Contract,
        statement: "no huge leaf is installed while GUEST_INHIBIT is set at its level (I3 caused by the flag)",
        code: None,
        codes: "I3",
    },
    PropertySpec {
        property: Property::Window,
        name: "window",
        class: Class::Contract,
        statement: "no state with mmu_lock free of writers in which a huge leaf survives GUEST_INHIBIT or the mirror and the S-EPT disagree (I1, I4), even if repaired later",
        code: None,
        codes: "I1~, I4~",
    },
    PropertySpec {
        property: Property::Race,
        name: "race",
        class: Class::Contract,
        statement: "no pair of plain accesses (lpage_info, attributes) unordered by happens-before; the fix is READ_ONCE/WRITE_ONCE",
        code: Some("race"),
        codes: "race",
    },
];

impl Property {
    pub fn spec(self) -> &'static PropertySpec {
        &PROPERTIES[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(name: &str) -> CoreResult<Property> {
        PROPERTIES.iter().find(|p| p.name == name).map(|p| p.property).ok_or_else(|| {
            let allowed: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
            CoreError::Config(format!("unknown property {name:?}: allowed are {}", allowed.join(", ")))
        })
    }

    /// The property an event-time finding breaks (install, store, ACCEPT, BUG, WARN); design
    /// rules break none.
    pub fn of_finding(f: &Finding) -> Option<Property> {
        match f.kind {
            FindingKind::DesignRule => None,
            FindingKind::Bug => Some(Property::Bug),
            FindingKind::Warn => Some(Property::Warn),
            FindingKind::Contract if f.rule == "I3" => Some(Property::InstallBreach),
            FindingKind::Contract => Some(Property::Breach),
            FindingKind::Invariant => Some(Property::Isolation),
        }
    }

    /// The property a state invariant broken in a state breaks: `stable` when still broken
    /// once every thread has stopped.
    pub fn of_state(rule: &str, stable: bool) -> Property {
        match (rule, stable) {
            ("I1", true) => Property::Breach,
            ("I1" | "I4", false) => Property::Window,
            // The page statistics are the model's own bookkeeping.
            ("S1", _) => Property::Bug,
            _ => Property::Isolation,
        }
    }
}

/// One property broken in one run: what, where, and the choices that lead there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub property: Property,
    pub violation: Violation,
    /// The step at which it shows (a cycle: the step that closes it).
    pub step: u32,
    /// Preemptions before that step.
    pub preemptions: u32,
    /// How many of the run's decisions were made before that step: the choices that replay it.
    #[serde(skip)]
    pub decisions: usize,
}

impl Hit {
    /// The verdict-matrix code: the property's, or the rule with `!` (stable) or `~` (repaired
    /// later) for the rule-based ones.
    pub fn code(&self) -> String {
        if let Some(c) = self.property.spec().code {
            return c.into();
        }
        match &self.violation {
            Violation::Invariant { rule, stable: false, .. } => format!("{rule}~"),
            Violation::Invariant { rule, .. } if self.property == Property::Breach => format!("{rule}!"),
            Violation::Invariant { rule, .. } => rule.clone(),
            _ => self.property.name().into(),
        }
    }

    /// Which rule or kind of event: one hit of each per run is enough.
    fn what(&self) -> &str {
        match &self.violation {
            Violation::Invariant { rule, .. } | Violation::Bug { rule, .. } => rule,
            _ => "",
        }
    }
}

/// The hits of one run, at most one per property and rule (the first).
#[derive(Default)]
pub struct RunHits {
    pub hits: Vec<Hit>,
}

impl RunHits {
    pub fn add(&mut self, hit: Hit) {
        if !self.hits.iter().any(|h| h.property == hit.property && h.what() == hit.what()) {
            self.hits.push(hit);
        }
    }

    pub fn has(&self, property: Property) -> bool {
        self.hits.iter().any(|h| h.property == property)
    }
}

/// A property's best counterexample so far: fewest preemptions, then fewest steps.
#[derive(Clone, Debug)]
pub struct Found {
    pub hit: Hit,
    pub choices: Vec<u32>,
    /// Runs in which the property broke.
    pub runs: u64,
    /// The search looked for a shorter one (same property, no more preemptions) and found none.
    pub shortened: bool,
}

/// Which properties a search asks about, and what it found of each.
pub struct Tracker {
    /// Asked by name (they decide, contract ones too); empty: every property, harm decides.
    named: Vec<Property>,
    pub found: BTreeMap<Property, Found>,
}

impl Tracker {
    pub fn new(named: &[Property]) -> Tracker {
        let mut named = named.to_vec();
        named.sort();
        named.dedup();
        Tracker { named, found: BTreeMap::new() }
    }

    pub fn asked(&self, p: Property) -> bool {
        self.named.is_empty() || self.named.contains(&p)
    }

    pub fn decides(&self, p: Property) -> bool {
        p.spec().class == Class::Harm || self.named.contains(&p)
    }

    /// Some asked property has no counterexample yet: the search must go on.
    pub fn open(&self) -> bool {
        PROPERTIES.iter().any(|s| self.asked(s.property) && !self.found.contains_key(&s.property))
    }

    pub fn is_found(&self, p: Property) -> bool {
        self.found.contains_key(&p)
    }

    /// Merge one run's hits (`choices`: the run's decisions).
    pub fn merge(&mut self, hits: &[Hit], choices: &[u32]) {
        for h in hits {
            let candidate = || Found {
                hit: h.clone(),
                choices: choices[..h.decisions.min(choices.len())].to_vec(),
                runs: 0,
                shortened: false,
            };
            let f = self.found.entry(h.property).or_insert_with(candidate);
            f.runs += 1;
            if (h.preemptions, h.step) < (f.hit.preemptions, f.hit.step) {
                *f = Found { runs: f.runs, ..candidate() };
            }
        }
    }

    /// The worst deciding property broken.
    pub fn worst(&self) -> Option<(Property, &Found)> {
        self.found.iter().find(|(p, _)| self.decides(**p)).map(|(p, f)| (*p, f))
    }
}

/// What the search covered, for every property it did not break.
#[derive(Clone, Copy, Debug)]
pub struct Coverage {
    /// Every schedule was explored (no bound, not cut, no run cut by its step budget).
    pub complete: bool,
    /// Every schedule with up to this many preemptions was explored.
    pub up_to: Option<u32>,
    /// Executions run.
    pub runs: u64,
    /// Runs were sampled (random, PCT, a caller's choices), not enumerated.
    pub sampled: bool,
    /// States were cached (paths to a state differ in happens-before: see `results`).
    pub cached: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Complete search, no bound.
    Holds,
    /// Every schedule with up to `bound` preemptions.
    HoldsUpTo { bound: u32 },
    /// A cut or sampled search found none.
    NoneFound { runs: u64, why: String },
    Violated {
        code: String,
        runs: u64,
        /// No counterexample with fewer preemptions exists (every lower bound was searched).
        preemptions_minimal: bool,
        /// A search for a shorter one with no more preemptions found none (not a proof).
        shortened: bool,
    },
}

/// One property's answer.
#[derive(Clone, Debug, Serialize)]
pub struct PropertyResult {
    pub property: Property,
    pub class: Class,
    /// Whether it decides the verdict.
    pub decides: bool,
    #[serde(flatten)]
    pub status: Status,
}

impl Tracker {
    /// Every property's answer, worst first. `minimal(p)`: whether `p` preemptions are known to be
    /// the fewest (every lower bound was searched to the end).
    pub fn results(&self, cov: Coverage, minimal: impl Fn(u32) -> bool) -> Vec<PropertyResult> {
        PROPERTIES
            .iter()
            .map(|s| {
                let p = s.property;
                let status = match self.found.get(&p) {
                    Some(f) => Status::Violated {
                        code: f.hit.code(),
                        runs: f.runs,
                        preemptions_minimal: minimal(f.hit.preemptions),
                        shortened: f.shortened,
                    },
                    // Races depend on the path's happens-before, which a state key leaves out:
                    // a cached search may merge a racy path into a race-free one.
                    None if p == Property::Race && cov.cached && !cov.sampled => Status::NoneFound {
                        runs: cov.runs,
                        why: "a cached search cannot rule races out: state caching merges paths whose happens-before differs (cache=False searches without it, which only tiny scenarios allow)".into(),
                    },
                    None if !self.asked(p) => Status::NoneFound {
                        runs: cov.runs,
                        why: "not asked: the search stopped once every asked property was found".into(),
                    },
                    None if cov.complete => Status::Holds,
                    None => match cov.up_to {
                        Some(bound) if !cov.sampled => Status::HoldsUpTo { bound },
                        _ => Status::NoneFound {
                            runs: cov.runs,
                            why: if cov.sampled { "sampled runs".into() } else { "the search was cut".into() },
                        },
                    },
                };
                PropertyResult { property: p, class: s.class, decides: self.decides(p), status }
            })
            .collect()
    }
}

/// How a livelock's cycle is classified once the search from its state has run.
pub fn livelock_hits(hit: &Hit, escape: Escape) -> Vec<Hit> {
    let mut out = Vec::new();
    let mut h = hit.clone();
    if let Violation::Livelock { escape: e, .. } = &mut h.violation {
        *e = escape.clone();
    }
    if matches!(escape, Escape::Trapped { .. }) {
        out.push(Hit { property: Property::Trap, ..h.clone() });
    }
    out.push(h);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_severity_order_and_names_parse() {
        for (i, s) in PROPERTIES.iter().enumerate() {
            assert_eq!(s.property as usize, i, "{}", s.name);
            assert_eq!(Property::parse(s.name).unwrap(), s.property);
        }
        let e = Property::parse("livelocks").unwrap_err().to_string();
        assert!(e.contains("allowed are isolation, deadlock"), "{e}");
    }

    #[test]
    fn the_best_counterexample_has_fewest_preemptions_then_steps() {
        let hit = |p, step| Hit {
            property: Property::Window,
            violation: Violation::Invariant {
                rule: "I1".into(),
                message: String::new(),
                tid: None,
                step,
                stable: false,
            },
            step,
            preemptions: p,
            decisions: 1,
        };
        let mut t = Tracker::new(&[]);
        t.merge(&[hit(1, 10)], &[1, 2]);
        t.merge(&[hit(0, 50)], &[3, 4]);
        t.merge(&[hit(0, 60)], &[5, 6]);
        let f = &t.found[&Property::Window];
        assert_eq!((f.hit.preemptions, f.hit.step, f.choices.as_slice(), f.runs), (0, 50, &[3][..], 3));
        assert_eq!(f.hit.code(), "I1~");
        assert!(t.open(), "other properties are still open");
        assert!(t.worst().is_none(), "a window decides only when asked for");
        let t = Tracker::new(&[Property::Window]);
        assert!(t.decides(Property::Window) && t.open());
    }
}
