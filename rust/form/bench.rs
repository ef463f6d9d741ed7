//! A bench's options as the user gives them (`tdxcore.bench(...)`, `tdxcore bench`): the
//! workload by name, with the parameters each is calibrated with, the lock, the guest size, the
//! costs and the repeats, checked here and made into the native runtime's `RunConfig`.

use serde::Deserialize;

use crate::error::{CoreError, CoreResult};
use crate::native::RunConfig;
use crate::native::lock::LockKind;
use crate::native::workload::Workload;

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum WorkloadName {
    Boot,
    RandomMix,
    ConversionChurn,
    FaultStorm,
}

/// Every option is given: the defaults are the Python signature's (`tdxcore.bench`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchForm {
    workload: WorkloadName,
    threads: u16,
    lock: LockKind,
    gib: u64,
    seamcall_us: f64,
    kick_us: f64,
    repeat: u32,
    seed: u64,
    sequential: bool,
    /// Keep each thread's lock spans, for a timeline (`tdxcore bench --perfetto`).
    timeline: bool,
}

/// A bench checked: the run for every policy (whose steps the caller fills in) and how often.
#[derive(Debug, serde::Serialize)]
pub struct BenchPlan {
    pub run: RunConfig,
    pub repeat: u32,
}

/// What a native run of a guest of `gib` GiB needs, measured (peak RSS over the Python
/// process's own, every workload at 256 GiB): about 0.6 MiB per GiB; with room to spare.
const BYTES_BASE: u64 = 32 << 20;
const BYTES_PER_GIB: u64 = 1 << 20;

impl BenchForm {
    pub fn into_plan(self) -> CoreResult<BenchPlan> {
        let range = |path: &str, ok: bool, allowed: &str, value: String| {
            if ok {
                Ok(())
            } else {
                Err(CoreError::Field {
                    path: path.into(),
                    message: format!("{value} is out of range: allowed are {allowed}"),
                })
            }
        };
        range("threads", (1..=64).contains(&self.threads), "1 to 64", self.threads.to_string())?;
        range("gib", (1..=256).contains(&self.gib), "1 to 256", self.gib.to_string())?;
        range("repeat", (1..=1000).contains(&self.repeat), "1 to 1000", self.repeat.to_string())?;
        let ns = |path: &str, us: f64| -> CoreResult<u64> {
            range(path, us.is_finite() && (0.0..=1e6).contains(&us), "0 to 1000000 microseconds", us.to_string())?;
            Ok((us * 1000.0).round() as u64)
        };
        let (seamcall_ns, kick_ns) = (ns("seamcall_us", self.seamcall_us)?, ns("kick_us", self.kick_us)?);
        let (gib, vcpus) = (self.gib, self.threads);
        let workload = match self.workload {
            WorkloadName::Boot => Workload::Boot { gib, vcpus },
            WorkloadName::RandomMix => {
                Workload::RandomMix { gib, vcpus, accepts_per_vcpu: 20_000, percent_4k: 30, seed: self.seed }
            }
            WorkloadName::ConversionChurn => Workload::ConversionChurn { gib, vcpus, cycles: 200 },
            WorkloadName::FaultStorm => Workload::FaultStorm { vcpus, regions: 256 },
        };
        workload.plan()?; // the workload's own limits (a boot's firmware ranges need 4 GiB...)
        fits(gib, crate::explore::search::machine_memory_available())?;
        let run = RunConfig {
            workload,
            honor_policy: vec![],
            atomic_demote: false,
            lock: self.lock,
            seamcall_ns,
            kick_ns,
            sequential: self.sequential,
            timeline: self.timeline,
        };
        Ok(BenchPlan { run, repeat: self.repeat })
    }
}

/// Refuse up front a guest whose run would need more than half the memory `free`.
fn fits(gib: u64, free: u64) -> CoreResult<()> {
    let need = BYTES_BASE + gib * BYTES_PER_GIB;
    if need > free / 2 {
        return Err(CoreError::Resource(format!(
            "a {gib} GiB guest needs about {} MiB, and this machine has {} MiB available: a smaller gib",
            need >> 20,
            free >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_guest_too_large_for_the_memory_left_is_refused_naming_its_size() {
        let e = super::fits(256, 200 << 20).unwrap_err().to_string();
        assert_eq!(e, "a 256 GiB guest needs about 288 MiB, and this machine has 200 MiB available: a smaller gib");
        assert!(super::fits(4, 200 << 20).is_ok());
    }
}
