//! TDG.MEM.PAGE.ACCEPT's outcome table: where the guest's walk to the requested level stops
//! (the entry's state, leaf or not, its position relative to the level) decides the outcome.
//! The table is the module's rule set; a user may override reachable cells (ModuleOptions).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use crate::abi::*;
use crate::error::{CoreResult, config_err};

/// The table with the user's overrides applied; an override of a cell the walk never ends in,
/// or to an outcome that is not one, is refused.
pub fn accept_outcomes(overrides: &[AcceptOverride]) -> CoreResult<Arc<BTreeMap<AcceptKey, AcceptOutcome>>> {
    static DEFAULT: LazyLock<Arc<BTreeMap<AcceptKey, AcceptOutcome>>> =
        LazyLock::new(|| Arc::new(accept_table().into_iter().map(|c| (c.key, c.outcome)).collect()));
    let mut accept_table = DEFAULT.clone();
    for o in overrides {
        let key = AcceptKey { state: o.state, leaf: o.leaf, position: o.position, level: o.level };
        match accept_table.get(&key) {
            None | Some(AcceptOutcome::Unreachable) | Some(AcceptOutcome::WalkContinues) => {
                return config_err(format!(
                    "accept override {key:?}: that cell is unreachable or not a walk outcome; only reachable cells of accept_table() can be overridden"
                ));
            }
            Some(_) if matches!(o.outcome, AcceptOutcome::Unreachable | AcceptOutcome::WalkContinues) => {
                return config_err(format!(
                    "accept override {key:?}: outcome must be one of success, already_accepted, page_size_mismatch, ept_violation"
                ));
            }
            Some(_) => {
                Arc::make_mut(&mut accept_table).insert(key, o.outcome);
            }
        }
    }
    Ok(accept_table)
}

/// Where the entry that ends an ACCEPT walk lies relative to the requested level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// The entry is at the requested level.
    At,
    /// The walk stopped at a larger level (a huge leaf, a hole, a blocked table).
    Above,
    /// The mapping lies below the requested level: the entry at the requested level is a
    /// non-leaf whose leafs are smaller.
    Below,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptOutcome {
    Success,
    AlreadyAccepted,
    PageSizeMismatch,
    /// An EPT-violation TD exit to KVM carrying {type ACCEPT, requested level}.
    EptViolation,
    /// The guest-side S-EPT lock was contended (TDX_OPERAND_BUSY); not a table cell.
    Busy,
    /// A non-leaf above the requested level: the walk goes on down.
    WalkContinues,
    /// The combination cannot occur.
    Unreachable,
}

impl Position {
    /// Where the walk ended, relative to the requested level, in words.
    pub fn words(self) -> &'static str {
        match self {
            Position::At => "at",
            Position::Above => "above",
            Position::Below => "below",
        }
    }
}

impl AcceptOutcome {
    pub fn name(self) -> &'static str {
        match self {
            AcceptOutcome::Success => "success",
            AcceptOutcome::AlreadyAccepted => "already_accepted",
            AcceptOutcome::PageSizeMismatch => "page_size_mismatch",
            AcceptOutcome::EptViolation => "ept_violation",
            AcceptOutcome::Busy => "busy",
            AcceptOutcome::WalkContinues => "walk_continues",
            AcceptOutcome::Unreachable => "unreachable",
        }
    }
    pub fn status(self) -> u64 {
        match self {
            AcceptOutcome::Success => TDX_SUCCESS,
            AcceptOutcome::AlreadyAccepted => TDX_PAGE_ALREADY_ACCEPTED,
            AcceptOutcome::PageSizeMismatch => TDX_PAGE_SIZE_MISMATCH,
            AcceptOutcome::Busy => TDX_OPERAND_BUSY,
            _ => ACCEPT_EXIT,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AcceptKey {
    pub state: SeptState,
    pub leaf: bool,
    pub position: Position,
    pub level: Level,
}

/// A user's replacement for one reachable cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptOverride {
    pub state: SeptState,
    pub leaf: bool,
    pub position: Position,
    pub level: Level,
    pub outcome: AcceptOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptCell {
    #[serde(flatten)]
    pub key: AcceptKey,
    pub outcome: AcceptOutcome,
    /// "sourced" (the module's documentation says so), "inferred" (our reading; configurable) or
    /// "structural" (cannot occur, or not a place where the walk stops).
    pub provenance: &'static str,
    pub why: &'static str,
}

/// The full TDG.MEM.PAGE.ACCEPT table: state x leaf/non-leaf x position x requested level.
pub fn accept_table() -> Vec<AcceptCell> {
    use Position::*;
    let mut cells = Vec::new();
    for level in [PG_LEVEL_4K, PG_LEVEL_2M] {
        for state in SeptState::ALL {
            for leaf in [true, false] {
                for position in [At, Above, Below] {
                    let (outcome, provenance, why) = accept_rule(state, leaf, position, level);
                    let key = AcceptKey { state, leaf, position, level };
                    cells.push(AcceptCell { key, outcome, provenance, why });
                }
            }
        }
    }
    cells
}

pub fn accept_rule(
    state: SeptState,
    leaf: bool,
    position: Position,
    level: Level,
) -> (AcceptOutcome, &'static str, &'static str) {
    use AcceptOutcome::*;
    use Position::*;
    use SeptState::*;
    const S: &str = "sourced";
    const I: &str = "inferred";
    const X: &str = "structural";
    if position == Below && level == PG_LEVEL_4K {
        return (Unreachable, X, "nothing maps below 4K");
    }
    if state == Free {
        return match (leaf, position) {
            (false, Above) => (EptViolation, S, "intermediate S-EPT structure missing: KVM maps, honouring the level"),
            (false, At) => (EptViolation, I, "nothing mapped at the requested level: KVM maps"),
            _ => (Unreachable, X, "a FREE entry is neither a leaf nor a table"),
        };
    }
    if !leaf {
        return match (state, position, level) {
            (_, _, l) if l == PG_LEVEL_4K && position == At => (Unreachable, X, "no table below 4K"),
            (Pending | PendingBlocked, _, _) => (Unreachable, X, "only leafs are PENDING"),
            (Mapped, Above, _) => (WalkContinues, X, "a present table above: the walk descends"),
            (Mapped, At, _) => (PageSizeMismatch, S, "a table at the requested level: KVM mapped smaller"),
            (Blocked, Above, _) => (EptViolation, I, "a blocked table stops the walk"),
            (Blocked, At, _) => (PageSizeMismatch, I, "a (blocked) table at the requested level"),
            (_, Below, _) => (Unreachable, X, "a table below is described by the leafs below"),
            _ => (Unreachable, X, "not a cell"),
        };
    }
    match (position, state) {
        (Below, _) => (PageSizeMismatch, S, "the walk stops at the table at the requested level: too-big ACCEPT"),
        (Above, Pending) => (EptViolation, S, "too-small ACCEPT against a PENDING huge leaf: KVM must split"),
        (Above, Mapped) => (AlreadyAccepted, S, "the huge leaf is already accepted"),
        (Above, Blocked) => (EptViolation, S, "a blocked huge leaf: EPT-violation exit"),
        (Above, PendingBlocked) => (EptViolation, I, "blocked like BLOCKED"),
        (At, Pending) => (Success, S, "PENDING -> MAPPED"),
        (At, Mapped) => (AlreadyAccepted, I, "same-level ACCEPT of an accepted page"),
        (At, Blocked | PendingBlocked) => (EptViolation, I, "a blocked leaf faults"),
        (_, Free) => (Unreachable, X, "handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_of_unreachable_cell_is_refused() {
        let o = AcceptOverride {
            state: SeptState::Free,
            leaf: true,
            position: Position::At,
            level: PG_LEVEL_4K,
            outcome: AcceptOutcome::Success,
        };
        assert!(accept_outcomes(&[o]).is_err());
    }
}
