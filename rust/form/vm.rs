//! A VM's options as the user writes them (`Vm(vcpus=4)`, a `[vm]` table): flat and each
//! optional, laid over a base configuration (`VmConfig::default()` for a `Vm`, the explorer's
//! for a scenario). What the options mean, and their checks, are the model's (`Vm::new`).

use serde::de::{self, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

use crate::abi::Gfn;
use crate::error::{CoreError, CoreResult};
use crate::model::accept::AcceptOverride;
use crate::model::config::{FolioRange, MemslotConfig, SplitAlloc, TdState, VmConfig};
use crate::model::honor_policy::HonorStep;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmForm {
    memslots: Option<Vec<MemslotForm>>,
    vcpus: Option<u16>,
    td_state: Option<TdState>,
    shared: Option<Vec<(Gfn, Gfn)>>,
    folio_order: Option<u8>,
    /// `[start, end, order]` triples.
    folio_orders: Option<Vec<(Gfn, Gfn, u8)>>,
    atomic_demote: Option<bool>,
    accept_overrides: Option<Vec<AcceptOverride>>,
    honor_policy: Option<Vec<HonorStep>>,
    split_alloc: Option<SplitAlloc>,
    reenter_on_retry: Option<bool>,
    end_vcpu_on_error: Option<bool>,
    event_after_retries: Option<u32>,
    event_at_any_retry: Option<bool>,
    max_exits: Option<u32>,
}

impl VmForm {
    /// The options laid over `base`. Ranges that need the whole configuration are `Vm::new`'s.
    pub fn over(self, base: VmConfig) -> CoreResult<VmConfig> {
        let mut c = base;
        if let Some(m) = self.memslots {
            c.memslots = m.into_iter().map(|m| m.0).collect();
        }
        set(&mut c.vcpus, self.vcpus);
        set(&mut c.td_state, self.td_state);
        set(&mut c.shared, self.shared);
        set(&mut c.folio_order, self.folio_order);
        if let Some(f) = self.folio_orders {
            c.folio_orders = f.into_iter().map(|(start, end, order)| FolioRange { start, end, order }).collect();
        }
        set(&mut c.module.atomic_demote, self.atomic_demote);
        set(&mut c.module.accept_overrides, self.accept_overrides);
        set(&mut c.honor_policy, self.honor_policy);
        set(&mut c.split_alloc, self.split_alloc);
        set(&mut c.retry.reenter_on_retry, self.reenter_on_retry);
        set(&mut c.retry.end_vcpu_on_error, self.end_vcpu_on_error);
        set(&mut c.retry.event_after_retries, self.event_after_retries);
        set(&mut c.retry.event_at_any_retry, self.event_at_any_retry);
        set(&mut c.retry.max_exits, self.max_exits);
        if c.retry.max_exits == 0 {
            return Err(CoreError::Field { path: "max_exits".into(), message: "must be at least 1".into() });
        }
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// A memslot: `[base_gfn, npages]`, `[base_gfn, npages, ugfn]` or a table with those keys.
#[derive(Debug)]
struct MemslotForm(MemslotConfig);

impl<'de> Deserialize<'de> for MemslotForm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MemslotForm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a memslot: [base_gfn, npages], [base_gfn, npages, ugfn] or a table with those keys")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MemslotForm, A::Error> {
                let base_gfn = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let npages = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let ugfn = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(MemslotForm(MemslotConfig { base_gfn, npages, ugfn }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MemslotForm, A::Error> {
                MemslotConfig::deserialize(MapAccessDeserializer::new(map)).map(MemslotForm)
            }
        }
        d.deserialize_any(V)
    }
}
