//! Guest frame numbers and page-table levels, with the kernel's names (arch/x86/include/asm/
//! kvm_host.h, pgtable_types.h).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A guest frame number (GPA >> 12).
pub type Gfn = u64;

/// A page-table level as the kernel numbers it: PG_LEVEL_4K = 1, PG_LEVEL_2M = 2, PG_LEVEL_1G = 3,
/// and 4 for the top of a 4-level EPT. An SPTE "at level L" maps KVM_PAGES_PER_HPAGE(L) pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Level(pub u8);

pub const PG_LEVEL_4K: Level = Level(1);
pub const PG_LEVEL_2M: Level = Level(2);
pub const PG_LEVEL_1G: Level = Level(3);
/// The root level of a 4-level EPT.
pub const ROOT_LEVEL: Level = Level(4);
/// TDX maps private memory at 2M at most; the 1G level exists in lpage_info only.
pub const TDX_MAX_MAPPING_LEVEL: Level = PG_LEVEL_2M;
/// Gfns a 4-level EPT can map (48-bit GPA).
pub const GFN_LIMIT: Gfn = 1 << 36;

impl Level {
    /// KVM_HPAGE_GFN_SHIFT(level)
    pub const fn gfn_shift(self) -> u32 {
        9 * (self.0 as u32 - 1)
    }
    /// KVM_PAGES_PER_HPAGE(level)
    pub const fn pages(self) -> u64 {
        1 << self.gfn_shift()
    }
    /// First gfn of the level-sized region containing `gfn` (gfn_round_for_level()).
    pub const fn round(self, gfn: Gfn) -> Gfn {
        gfn & !(self.pages() - 1)
    }
    pub const fn down(self) -> Level {
        Level(self.0 - 1)
    }
    pub const fn up(self) -> Level {
        Level(self.0 + 1)
    }
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "4K",
            2 => "2M",
            3 => "1G",
            4 => "512G",
            _ => "?",
        }
    }
    /// Parse a user-facing level: "4K", "2M", "1G" (any case).
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.to_ascii_uppercase().as_str() {
            "4K" => Ok(PG_LEVEL_4K),
            "2M" => Ok(PG_LEVEL_2M),
            "1G" => Ok(PG_LEVEL_1G),
            _ => Err(format!("unknown level {s:?}: allowed levels are \"4K\", \"2M\", \"1G\"")),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Level {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Level::parse(&s)
    }
}

impl From<Level> for String {
    fn from(l: Level) -> String {
        l.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_geometry() {
        assert_eq!(PG_LEVEL_4K.pages(), 1);
        assert_eq!(PG_LEVEL_2M.pages(), 512);
        assert_eq!(PG_LEVEL_1G.pages(), 512 * 512);
        assert_eq!(PG_LEVEL_2M.round(0x9ff), 0x800);
        assert_eq!(Level::parse("2m"), Ok(PG_LEVEL_2M));
        assert!(Level::parse("3M").unwrap_err().contains("allowed levels"));
    }
}
