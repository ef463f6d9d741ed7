//! How a traced value reads in a report: the SPTE, lpage_info word, memory attributes or S-EPT
//! walk result a step loaded or stored, in the kernel's words. One home, for every renderer.

use super::attributes::KVM_MEMORY_ATTRIBUTE_PRIVATE;
use super::lpage_info::{KVM_LPAGE_GUEST_INHIBIT_FLAG, KVM_LPAGE_MIXED_FLAG};
use super::spte;
use crate::abi::{Level, PG_LEVEL_4K, SeptState};

/// What a guest access's S-EPT walk found, as its trace step records it: 0 for no leaf, else 1 +
/// the leaf state's index in `SeptState::ALL`.
pub fn sept_walk_code(state: Option<SeptState>) -> u64 {
    state.map_or(0, |s| 1 + SeptState::ALL.iter().position(|&x| x == s).unwrap_or(0) as u64)
}

/// disallow_lpage as flags and count: "0", "GUEST_INHIBIT", "MIXED|GUEST_INHIBIT|1".
pub fn lpage_info_text(word: u32) -> String {
    let flags = [(KVM_LPAGE_MIXED_FLAG, "MIXED"), (KVM_LPAGE_GUEST_INHIBIT_FLAG, "GUEST_INHIBIT")];
    let mut parts: Vec<String> = flags.iter().filter(|(bit, _)| word & bit != 0).map(|(_, n)| n.to_string()).collect();
    let count = word & (KVM_LPAGE_GUEST_INHIBIT_FLAG - 1);
    if count != 0 || parts.is_empty() {
        parts.push(count.to_string());
    }
    parts.join("|")
}

/// A value a step read or wrote on `obj` (the object's kind as traces name it: "spte",
/// "lpage_info", "attributes", "sept", ...), at `level` where the object has one.
pub fn value_text(obj: &str, value: u64, level: Option<Level>) -> String {
    match obj {
        "spte" => spte::trace_text(value, level.unwrap_or(PG_LEVEL_4K)),
        "lpage_info" => lpage_info_text(value as u32),
        "attributes" if value as u8 & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0 => "private".into(),
        "attributes" => "shared".into(),
        "sept" => match value {
            0 => "no leaf".into(),
            v => SeptState::ALL.get(v as usize - 1).map_or_else(|| v.to_string(), |s| s.name().into()),
        },
        _ if value > 9 => format!("{value:#x}"),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_the_kernel_names_them() {
        assert_eq!(lpage_info_text(0), "0");
        assert_eq!(lpage_info_text(KVM_LPAGE_GUEST_INHIBIT_FLAG | 1), "GUEST_INHIBIT|1");
        assert_eq!(lpage_info_text(KVM_LPAGE_MIXED_FLAG), "MIXED");
        assert_eq!(value_text("sept", sept_walk_code(Some(SeptState::Pending)), None), "PENDING");
        assert_eq!(value_text("sept", sept_walk_code(None), None), "no leaf");
        assert_eq!(value_text("attributes", KVM_MEMORY_ATTRIBUTE_PRIVATE as u64, None), "private");
        assert_eq!(value_text("invalidate_seq", 12, None), "0xc");
    }
}
