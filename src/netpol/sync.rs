//! One nf_tables transaction per sync: the whole table at start (the old one deleted in the same
//! transaction), afterwards only the difference — set elements added and removed, chains of
//! changed policies flushed and rewritten. Chains no longer wanted are flushed at once and
//! deleted a second later, as the service proxy does.

use std::time::Instant;

use crate::nftables::{Batch, Element, Family};

use super::ruleset::{self, Desired, TABLE};

const FAMILY: Family = Family::Ip;
pub type Applied = crate::nftables::resync::Applied<Desired>;

/// What a sync changed, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub messages: usize,
    pub elements_added: usize,
    pub elements_removed: usize,
    pub chains_written: usize,
}

pub fn full(desired: &Desired) -> (Batch, Stats) {
    let mut b = Batch::new();
    let mut stats = Stats::default();
    b.add_table(FAMILY, TABLE);
    b.delete_table(FAMILY, TABLE);
    b.add_table(FAMILY, TABLE);
    for (name, (kind, elements)) in &desired.sets {
        b.add_set(FAMILY, TABLE, &kind.set(name));
        stats.elements_added += add(&mut b, name, elements.iter());
    }
    for name in desired.chains.keys() {
        b.add_chain(FAMILY, TABLE, name, None);
    }
    for (name, rules) in &desired.chains {
        for r in rules {
            b.add_rule(FAMILY, TABLE, name, r.clone());
        }
        stats.chains_written += 1;
    }
    // The hooks last: by now every chain and set they reach is complete.
    for (name, base, rules) in ruleset::base_chains() {
        b.add_chain(FAMILY, TABLE, &name, Some(&base));
        for r in rules {
            b.add_rule(FAMILY, TABLE, &name, r);
        }
    }
    stats.messages = b.len();
    (b, stats)
}

/// The difference between what is applied and what is wanted; `applied.stale` is updated as if
/// the batch will succeed (on failure the caller goes back to a full sync).
pub fn incremental(applied: &mut Applied, desired: &Desired, now: Instant) -> (Batch, Stats) {
    let mut b = Batch::new();
    let mut stats = Stats::default();
    let old = &applied.state;
    let due = applied.due(now, |name| desired.chains.contains_key(name));

    // New sets (with their elements) and chains first: rules refer to them.
    for (name, (kind, elements)) in &desired.sets {
        match old.sets.get(name) {
            Some((k, _)) if k == kind => {}
            Some(_) => {
                // Same name, other key type: cannot happen with today's names; rebuild it.
                b.flush_set(FAMILY, TABLE, name);
                stats.elements_added += add(&mut b, name, elements.iter());
            }
            None => {
                b.add_set(FAMILY, TABLE, &kind.set(name));
                stats.elements_added += add(&mut b, name, elements.iter());
            }
        }
    }
    for name in desired.chains.keys() {
        if !old.chains.contains_key(name) && !applied.stale.contains_key(name) {
            b.add_chain(FAMILY, TABLE, name, None);
        }
    }
    // Elements of sets both sides have.
    for (name, (kind, wanted)) in &desired.sets {
        let Some((k, had)) = old.sets.get(name) else {
            continue;
        };
        if k != kind {
            continue;
        }
        let gone: Vec<Element> = had.difference(wanted).map(|e| element(e)).collect();
        if !gone.is_empty() {
            stats.elements_removed += gone.len();
            b.delete_elements(FAMILY, TABLE, name, &gone);
        }
        stats.elements_added += add(&mut b, name, wanted.difference(had));
    }
    // Chains: rewritten when changed, flushed when no longer wanted.
    for (name, rules) in &desired.chains {
        let unchanged = old.chains.get(name) == Some(rules) && !applied.stale.contains_key(name);
        if unchanged {
            continue;
        }
        if old.chains.contains_key(name) || applied.stale.contains_key(name) {
            b.flush_chain(FAMILY, TABLE, name);
        }
        for r in rules {
            b.add_rule(FAMILY, TABLE, name, r.clone());
        }
        stats.chains_written += 1;
    }
    for name in old.chains.keys() {
        if !desired.chains.contains_key(name) {
            b.flush_chain(FAMILY, TABLE, name);
            applied.stale.insert(name.clone(), now);
        }
    }
    for name in desired.chains.keys() {
        applied.stale.remove(name);
    }
    // Sets nobody uses any more: the rules that looked them up were flushed above.
    for name in old.sets.keys() {
        if !desired.sets.contains_key(name) {
            b.delete_set(FAMILY, TABLE, name);
        }
    }
    for name in due {
        b.delete_chain(FAMILY, TABLE, &name);
        applied.stale.remove(&name);
    }
    stats.messages = b.len();
    (b, stats)
}

fn element(key: &[u8]) -> Element {
    Element {
        key: key.to_vec(),
        data: None,
        timeout: None,
    }
}

fn add<'a>(b: &mut Batch, set: &str, keys: impl Iterator<Item = &'a Vec<u8>>) -> usize {
    let elements: Vec<Element> = keys.map(|k| element(k)).collect();
    if !elements.is_empty() {
        b.add_elements(FAMILY, TABLE, set, &elements);
    }
    elements.len()
}
