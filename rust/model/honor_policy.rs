//! The honour policy as data: the steps tdx_honor_guest_accept_level() runs, in order, the one
//! lock discipline every policy keeps, and the lock each step runs under. The honour path
//! (honor.rs) and the explorer's movers read it from here; the validator refuses what breaks it.

use serde::{Deserialize, Serialize};

use crate::sync::Mode;

/// One step of the honour path. Its name (`name()`) is how policies spell it everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum HonorStep {
    /// hugepage_test_guest_inhibit(level + 1) with no lock held; if set, go to the fault.
    PreCheck,
    ReadLock,
    ReadUnlock,
    WriteLock,
    WriteUnlock,
    /// kvm_split_cross_boundary_leafs() on the accept granule, under whatever lock is held.
    Split,
    /// hugepage_set_guest_inhibit() for level + 1, and level + 2 for a 4K accept.
    SetInhibit,
}

impl HonorStep {
    pub const ALL: [HonorStep; 7] = [
        HonorStep::PreCheck,
        HonorStep::ReadLock,
        HonorStep::ReadUnlock,
        HonorStep::WriteLock,
        HonorStep::WriteUnlock,
        HonorStep::Split,
        HonorStep::SetInhibit,
    ];

    /// The final algorithm (lore aGSoDnODoG2/pbYn): check the flag with no lock; take the write
    /// lock; split the accept granule; set GUEST_INHIBIT; drop the lock.
    pub const FINAL: [HonorStep; 5] =
        [HonorStep::PreCheck, HonorStep::WriteLock, HonorStep::Split, HonorStep::SetInhibit, HonorStep::WriteUnlock];

    /// The read-inhibit preset: set the flag under the read lock, then split under the write lock.
    #[cfg(test)]
    pub const READ_INHIBIT: [HonorStep; 7] = [
        HonorStep::PreCheck,
        HonorStep::ReadLock,
        HonorStep::SetInhibit,
        HonorStep::ReadUnlock,
        HonorStep::WriteLock,
        HonorStep::Split,
        HonorStep::WriteUnlock,
    ];

    /// The step's name, as policies spell it.
    pub fn name(self) -> &'static str {
        match self {
            HonorStep::PreCheck => "pre_check",
            HonorStep::ReadLock => "read_lock",
            HonorStep::ReadUnlock => "read_unlock",
            HonorStep::WriteLock => "write_lock",
            HonorStep::WriteUnlock => "write_unlock",
            HonorStep::Split => "split",
            HonorStep::SetInhibit => "set_inhibit",
        }
    }

    /// The step named `name`; an unknown name is refused with the allowed ones.
    pub fn parse(name: &str) -> Result<HonorStep, String> {
        HonorStep::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            let allowed: Vec<&str> = HonorStep::ALL.iter().map(|s| s.name()).collect();
            format!("unknown value {name:?}: allowed are {}", allowed.join(", "))
        })
    }

    /// The lock held after this step, given the lock held before it; an error says which rule
    /// of the discipline the step breaks.
    fn next_lock(self, held: Option<Mode>) -> Result<Option<Mode>, String> {
        let name = self.name();
        let mode = |m: Mode| if m == Mode::Read { "read" } else { "write" };
        match (self, held) {
            (HonorStep::ReadLock | HonorStep::WriteLock, Some(m)) => {
                Err(format!("{name} while the {} lock is held (rwlock_t has no upgrade: unlock first)", mode(m)))
            }
            (HonorStep::ReadLock, None) => Ok(Some(Mode::Read)),
            (HonorStep::WriteLock, None) => Ok(Some(Mode::Write)),
            (HonorStep::ReadUnlock, Some(Mode::Read)) | (HonorStep::WriteUnlock, Some(Mode::Write)) => Ok(None),
            (HonorStep::ReadUnlock, _) => Err(format!("{name} without the read lock held")),
            (HonorStep::WriteUnlock, _) => Err(format!("{name} without the write lock held")),
            (HonorStep::Split, None) => Err("split needs mmu_lock held (read or write)".into()),
            (HonorStep::PreCheck, Some(_)) => Err("pre_check is the lockless check; it comes before any lock".into()),
            (_, h) => Ok(h),
        }
    }
}

impl TryFrom<String> for HonorStep {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HonorStep::parse(&s)
    }
}

impl From<HonorStep> for &'static str {
    fn from(s: HonorStep) -> &'static str {
        s.name()
    }
}

/// The one lock discipline every policy keeps, wherever it comes from (Python's `Policy`, a
/// `Vm`'s or a scenario's `honor_policy`, TOML, a token, a bench): at least one step; no lock
/// taken while one is held (rwlock_t is not recursive and has no upgrade); no unlock of a lock
/// not held in that mode; no split without mmu_lock; the lockless pre-check before any lock;
/// nothing held at the end (the path would release it, but a policy says what it means).
pub fn check_lock_discipline(steps: &[HonorStep]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("a policy needs at least one step".into());
    }
    let mut held = None;
    for (i, step) in steps.iter().enumerate() {
        held = step.next_lock(held).map_err(|e| format!("step {}: {e}", i + 1))?;
    }
    match held {
        Some(Mode::Read) => Err("the policy ends with the read lock held".into()),
        Some(Mode::Write) => Err("the policy ends with the write lock held".into()),
        None => Ok(()),
    }
}

/// Each step with the lock held while it runs, for a policy that keeps the discipline.
pub fn held_at(steps: &[HonorStep]) -> impl Iterator<Item = (HonorStep, Option<Mode>)> + '_ {
    steps.iter().scan(None, |held, &step| {
        let now = *held;
        *held = step.next_lock(now).unwrap_or(now);
        Some((step, now))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use HonorStep::*;

    #[test]
    fn each_step_runs_under_the_lock_the_steps_before_it_took() {
        let held: Vec<_> = held_at(&HonorStep::READ_INHIBIT).map(|(_, m)| m).collect();
        let (r, w) = (Some(Mode::Read), Some(Mode::Write));
        assert_eq!(held, [None, None, r, r, None, w, w]);
    }

    #[test]
    fn names_are_the_one_spelling_for_serde_and_users() {
        for step in HonorStep::ALL {
            assert_eq!(serde_json::to_string(&step).unwrap(), format!("{:?}", step.name()));
            assert_eq!(serde_json::from_str::<HonorStep>(&format!("{:?}", step.name())).unwrap(), step);
        }
        let e = serde_json::from_str::<Vec<HonorStep>>(r#"["split", "upgrade"]"#).unwrap_err().to_string();
        assert!(e.starts_with("unknown value \"upgrade\": allowed are pre_check, read_lock"), "{e}");
        assert_eq!(check_lock_discipline(&[PreCheck, ReadLock, Split, ReadUnlock]), Ok(()));
    }
}
