//! Turning the desired rules into one nf_tables transaction: everything on a full sync, only the
//! difference on an incremental one (changed chains flushed and rewritten, map elements added
//! and removed). Chains no longer wanted are flushed at once but deleted a second later, as
//! kube-proxy does: before Linux 6.2 a verdict-map element that pointed at a chain keeps it
//! busy for a moment after the element is gone.

use std::time::Instant;

use crate::nftables::{Batch, Element, ElementData, Family, Verdict, key, rule};

use super::ruleset::{self, CLUSTER_IPS, Desired, HAIRPIN, Rule, StaticPart, TABLE};

const FAMILY: Family = Family::Ip;
/// What the proxy knows is in the kernel.
pub type Applied = crate::nftables::resync::Applied<Desired>;

/// The whole table, made anew: the old one (if any) is deleted in the same transaction, so
/// there is never a moment without rules.
pub fn full(static_part: &StaticPart, desired: &Desired) -> Batch {
    let mut b = Batch::new();
    b.add_table(FAMILY, TABLE);
    b.delete_table(FAMILY, TABLE);
    b.add_table(FAMILY, TABLE);
    for (name, base, _) in &static_part.chains {
        b.add_chain(FAMILY, TABLE, name, base.as_ref());
    }
    for name in desired.chains.keys() {
        b.add_chain(FAMILY, TABLE, name, None);
    }
    for set in &static_part.sets {
        b.add_set(FAMILY, TABLE, set);
    }
    for (name, seconds) in &desired.affinity_sets {
        b.add_set(FAMILY, TABLE, &ruleset::affinity_set(name, *seconds));
    }
    for (name, endpoints) in &desired.endpoint_maps {
        b.add_set(FAMILY, TABLE, &ruleset::endpoint_map(name));
        add_endpoints(&mut b, name, endpoints.iter().enumerate());
    }
    for (name, _, rules) in &static_part.chains {
        for exprs in rules {
            b.add_rule(FAMILY, TABLE, name, exprs.clone());
        }
    }
    for (name, rules) in &desired.chains {
        add_rules(&mut b, name, rules);
    }
    for (map, elements) in &desired.maps {
        let elements: Vec<Element> = elements.iter().map(|(k, v)| map_element(k, v)).collect();
        if !elements.is_empty() {
            b.add_elements(FAMILY, TABLE, map, &elements);
        }
    }
    let ips: Vec<Element> = desired
        .cluster_ips
        .iter()
        .map(|ip| set_element(key::ipv4(*ip)))
        .collect();
    if !ips.is_empty() {
        b.add_elements(FAMILY, TABLE, CLUSTER_IPS, &ips);
    }
    let pairs: Vec<Element> = desired
        .hairpin
        .iter()
        .map(|ip| hairpin_element(*ip))
        .collect();
    if !pairs.is_empty() {
        b.add_elements(FAMILY, TABLE, HAIRPIN, &pairs);
    }
    b
}

/// The difference between what is applied and what is wanted. `applied.stale` is updated in
/// place as if the batch will succeed; on failure the caller falls back to a full sync.
pub fn incremental(applied: &mut Applied, desired: &Desired, now: Instant) -> Batch {
    let mut b = Batch::new();
    let old = &applied.state;

    // Chains whose deletion is due (and that nobody wants back).
    let due = applied.due(now, |name| desired.chains.contains_key(name));

    // New chains and sets first: rules and map elements refer to them.
    for name in desired.chains.keys() {
        if !old.chains.contains_key(name) && !applied.stale.contains_key(name) {
            b.add_chain(FAMILY, TABLE, name, None);
        }
    }
    for (name, seconds) in &desired.affinity_sets {
        if !old.affinity_sets.contains_key(name) {
            b.add_set(FAMILY, TABLE, &ruleset::affinity_set(name, *seconds));
        }
    }
    // Endpoint maps: made with their elements, or changed index by index.
    for (name, wanted) in &desired.endpoint_maps {
        match old.endpoint_maps.get(name) {
            None => {
                b.add_set(FAMILY, TABLE, &ruleset::endpoint_map(name));
                add_endpoints(&mut b, name, wanted.iter().enumerate());
            }
            Some(had) if had == wanted => {}
            Some(had) => {
                let gone: Vec<Element> = had
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| wanted.get(*i) != Some(*e))
                    .map(|(i, (ip, port))| endpoint_element(i, *ip, *port))
                    .collect();
                if !gone.is_empty() {
                    b.delete_elements(FAMILY, TABLE, name, &gone);
                }
                let new = wanted
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| had.get(*i) != Some(*e));
                add_endpoints(&mut b, name, new);
            }
        }
    }

    // Map elements that go away or change their verdict.
    for (map, wanted) in &desired.maps {
        let had = old.maps.get(map);
        let gone: Vec<Element> = had
            .into_iter()
            .flatten()
            .filter(|(k, v)| wanted.get(*k) != Some(*v))
            .map(|(k, v)| map_element(k, v))
            .collect();
        if !gone.is_empty() {
            b.delete_elements(FAMILY, TABLE, map, &gone);
        }
    }

    // Chains: rewritten when changed, flushed when no longer wanted.
    for (name, rules) in &desired.chains {
        match old.chains.get(name) {
            Some(r) if r == rules && !applied.stale.contains_key(name) => {}
            Some(_) => {
                b.flush_chain(FAMILY, TABLE, name);
                add_rules(&mut b, name, rules);
            }
            None if applied.stale.contains_key(name) => {
                // Flushed earlier, wanted again before it was deleted.
                b.flush_chain(FAMILY, TABLE, name);
                add_rules(&mut b, name, rules);
            }
            None => add_rules(&mut b, name, rules),
        }
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

    // Map elements that are new or changed.
    for (map, wanted) in &desired.maps {
        let had = old.maps.get(map);
        let new: Vec<Element> = wanted
            .iter()
            .filter(|(k, v)| had.and_then(|h| h.get(*k)) != Some(*v))
            .map(|(k, v)| map_element(k, v))
            .collect();
        if !new.is_empty() {
            b.add_elements(FAMILY, TABLE, map, &new);
        }
    }
    let gone: Vec<Element> = old
        .cluster_ips
        .difference(&desired.cluster_ips)
        .map(|ip| set_element(key::ipv4(*ip)))
        .collect();
    if !gone.is_empty() {
        b.delete_elements(FAMILY, TABLE, CLUSTER_IPS, &gone);
    }
    let new: Vec<Element> = desired
        .cluster_ips
        .difference(&old.cluster_ips)
        .map(|ip| set_element(key::ipv4(*ip)))
        .collect();
    if !new.is_empty() {
        b.add_elements(FAMILY, TABLE, CLUSTER_IPS, &new);
    }

    let gone: Vec<Element> = old
        .hairpin
        .difference(&desired.hairpin)
        .map(|ip| hairpin_element(*ip))
        .collect();
    if !gone.is_empty() {
        b.delete_elements(FAMILY, TABLE, HAIRPIN, &gone);
    }
    let new: Vec<Element> = desired
        .hairpin
        .difference(&old.hairpin)
        .map(|ip| hairpin_element(*ip))
        .collect();
    if !new.is_empty() {
        b.add_elements(FAMILY, TABLE, HAIRPIN, &new);
    }

    // Affinity sets of removed endpoints and endpoint maps of removed services: the rules
    // that used them were flushed above.
    for name in old.affinity_sets.keys() {
        if !desired.affinity_sets.contains_key(name) {
            b.delete_set(FAMILY, TABLE, name);
        }
    }
    for name in old.endpoint_maps.keys() {
        if !desired.endpoint_maps.contains_key(name) {
            b.delete_set(FAMILY, TABLE, name);
        }
    }
    for name in due {
        b.delete_chain(FAMILY, TABLE, &name);
        applied.stale.remove(&name);
    }
    b
}

fn add_rules(b: &mut Batch, chain: &str, rules: &[Rule]) {
    for r in rules {
        match r {
            Rule::Exprs(e) => b.add_rule(FAMILY, TABLE, chain, e.clone()),
            Rule::Numgen(targets) => {
                // One rule per target but the last, each taking 1/(targets left) of what
                // reaches it: uniform, and without the anonymous verdict map of
                // `numgen random mod N vmap {…}`, whose binding costs the kernel a walk of the
                // whole transaction (quadratic in a full sync of a thousand Services).
                let n = targets.len() as u32;
                for (i, target) in targets.iter().enumerate() {
                    let goto = rule::verdict(Verdict::Goto(target.clone()));
                    let left = n - i as u32;
                    let exprs = if left > 1 {
                        [rule::numgen_is(left, 0), goto].concat()
                    } else {
                        goto
                    };
                    b.add_rule(FAMILY, TABLE, chain, exprs);
                }
            }
        }
    }
}

fn add_endpoints<'a>(
    b: &mut Batch,
    map: &str,
    endpoints: impl Iterator<Item = (usize, &'a (std::net::Ipv4Addr, u16))>,
) {
    let elements: Vec<Element> = endpoints
        .map(|(i, (ip, port))| endpoint_element(i, *ip, *port))
        .collect();
    if !elements.is_empty() {
        b.add_elements(FAMILY, TABLE, map, &elements);
    }
}

fn endpoint_element(index: usize, ip: std::net::Ipv4Addr, port: u16) -> Element {
    let (key, value) = ruleset::endpoint_element(index, ip, port);
    Element {
        key,
        data: Some(ElementData::Value(value)),
        timeout: None,
    }
}

fn hairpin_element(ip: std::net::Ipv4Addr) -> Element {
    set_element([key::ipv4(ip), key::ipv4(ip)].concat())
}

fn map_element(key: &[u8], verdict: &Verdict) -> Element {
    Element {
        key: key.to_vec(),
        data: Some(ElementData::Verdict(verdict.clone())),
        timeout: None,
    }
}

fn set_element(key: Vec<u8>) -> Element {
    Element {
        key,
        data: None,
        timeout: None,
    }
}
