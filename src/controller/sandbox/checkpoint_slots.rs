//! How many checkpoint calls are in flight, in all and per namespace. A checkpoint call waits
//! on the tenant's pod for up to its timeout inside a reconcile worker; without a bound, one
//! tenant's slow (or hostile) supervisors could hold every worker. A reconcile that finds no
//! slot free asks again shortly, holding no worker meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most checkpoint calls one namespace has in flight.
pub const PER_NAMESPACE: usize = 2;
/// The most in all: at most half the reconcile workers, so that other work goes on.
pub const IN_ALL: usize = 8;

#[derive(Debug)]
pub struct CheckpointSlots {
    per_namespace: usize,
    in_all: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One checkpoint call's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<CheckpointSlots>,
    namespace: String,
}

impl CheckpointSlots {
    /// The bounds for an operator with `workers` reconcile workers: half of them in all (at
    /// most [`IN_ALL`]), half of that per namespace (at most [`PER_NAMESPACE`]), one at least.
    pub fn for_workers(workers: u16) -> Self {
        let in_all = (usize::from(workers) / 2).clamp(1, IN_ALL);
        Self::new((in_all / 2).clamp(1, PER_NAMESPACE), in_all)
    }

    pub fn new(per_namespace: usize, in_all: usize) -> Self {
        Self {
            per_namespace,
            in_all,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a call in `namespace`, if one is free.
    pub fn try_take(self: &Arc<Self>, namespace: &str) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = held.values().sum();
        let here = held.get(namespace).copied().unwrap_or(0);
        if total >= self.in_all || here >= self.per_namespace {
            return None;
        }
        held.insert(namespace.to_string(), here + 1);
        Some(Slot {
            slots: self.clone(),
            namespace: namespace.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_namespace_cannot_take_every_slot() {
        let slots = Arc::new(CheckpointSlots::new(2, 3));
        let a1 = slots.try_take("a").expect("a first");
        let _a2 = slots.try_take("a").expect("a second");
        assert!(slots.try_take("a").is_none(), "a is at its bound");
        let _b1 = slots.try_take("b").expect("b is not held up by a");
        assert!(slots.try_take("c").is_none(), "all slots are in use");
        drop(a1);
        assert!(
            slots.try_take("c").is_some(),
            "a slot given back is free again"
        );
    }

    #[test]
    fn the_bounds_leave_most_workers_free() {
        for (workers, per_namespace, in_all) in [(1, 1, 1), (4, 1, 2), (16, 2, 8), (32, 2, 8)] {
            let slots = CheckpointSlots::for_workers(workers);
            assert_eq!(
                (slots.per_namespace, slots.in_all),
                (per_namespace, in_all),
                "{workers} workers"
            );
        }
    }
}
