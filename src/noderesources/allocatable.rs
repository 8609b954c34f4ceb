//! kubelet's node allocatable: what the scheduler may hand to pods is the capacity less
//! system-reserved, kube-reserved and the hard-eviction threshold (memory only: CPU has no
//! eviction signal).

use crate::agent::pressure::{Threshold, Thresholds};

use super::Reserved;

/// The memory the `memory.available` hard-eviction threshold keeps free on a node of
/// `capacity` bytes.
pub fn eviction_memory(thresholds: &Thresholds, capacity: u64) -> u64 {
    match thresholds.memory_available {
        Some(Threshold::Amount(bytes)) => bytes,
        Some(Threshold::Percent(p)) => (capacity as f64 * p / 100.0).ceil() as u64,
        None => 0,
    }
}

/// (cpu millicores, memory bytes) allocatable out of a capacity.
pub fn allocatable(
    cpu_millis: u64,
    memory_bytes: u64,
    reserved: &Reserved,
    thresholds: &Thresholds,
) -> (u64, u64) {
    (
        cpu_millis.saturating_sub(reserved.cpu_millis),
        memory_bytes
            .saturating_sub(reserved.memory_bytes)
            .saturating_sub(eviction_memory(thresholds, memory_bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_and_eviction_come_off() {
        let t = Thresholds::parse("memory.available<100Mi").unwrap();
        let r = Reserved {
            cpu_millis: 200,
            memory_bytes: 156 << 20,
        };
        assert_eq!(
            allocatable(1000, 1 << 30, &r, &t),
            (800, (1 << 30) - (256 << 20))
        );
        assert_eq!(
            allocatable(1000, 1 << 30, &Reserved::default(), &t),
            (1000, (1 << 30) - (100 << 20))
        );
        let t = Thresholds::parse("memory.available<10%").unwrap();
        assert_eq!(eviction_memory(&t, 1000), 100);
        assert_eq!(
            allocatable(100, 50, &r, &Thresholds::default()),
            (0, 0),
            "never below zero"
        );
    }
}
