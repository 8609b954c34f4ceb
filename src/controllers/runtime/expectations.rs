//! Controller expectations, as kube-controller-manager keeps them: after a controller creates N
//! pods (or deletes some named ones) it does not act on that owner again until its informer has
//! seen those creations and deletions, so a slow watch never makes it create twice. Expectations
//! expire after five minutes in case an event was missed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ObjKey;

const TTL: Duration = Duration::from_secs(5 * 60);

struct Expected {
    adds: i64,
    deletes: HashSet<ObjKey>,
    since: Instant,
}

#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<ObjKey, Expected>>,
}

impl Expectations {
    /// True when the owner may be synced: nothing pending, pending too long, or never recorded.
    pub fn satisfied(&self, owner: &ObjKey) -> bool {
        let Ok(map) = self.map.lock() else {
            return true;
        };
        match map.get(owner) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.since.elapsed() > TTL,
        }
    }

    pub fn expect_creations(&self, owner: &ObjKey, n: usize) {
        self.expect(owner, n, [])
    }

    pub fn expect_deletions(&self, owner: &ObjKey, pods: impl IntoIterator<Item = ObjKey>) {
        self.expect(owner, 0, pods)
    }

    /// Creations and deletions started together (a DaemonSet replacing pods on some nodes
    /// while placing new ones on others).
    pub fn expect(&self, owner: &ObjKey, adds: usize, pods: impl IntoIterator<Item = ObjKey>) {
        if let Ok(mut map) = self.map.lock() {
            map.insert(
                owner.clone(),
                Expected {
                    adds: adds as i64,
                    deletes: pods.into_iter().collect(),
                    since: Instant::now(),
                },
            );
        }
    }

    pub fn creation_observed(&self, owner: &ObjKey) {
        if let Ok(mut map) = self.map.lock()
            && let Some(e) = map.get_mut(owner)
        {
            e.adds -= 1;
        }
    }

    pub fn deletion_observed(&self, owner: &ObjKey, pod: &ObjKey) {
        if let Ok(mut map) = self.map.lock()
            && let Some(e) = map.get_mut(owner)
        {
            e.deletes.remove(pod);
        }
    }

    pub fn forget(&self, owner: &ObjKey) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_creations_and_deletions_block_until_observed() {
        let e = Expectations::default();
        let rs = ObjKey::new("ns", "rs");
        assert!(e.satisfied(&rs));
        e.expect_creations(&rs, 2);
        assert!(!e.satisfied(&rs));
        e.creation_observed(&rs);
        assert!(!e.satisfied(&rs));
        e.creation_observed(&rs);
        assert!(e.satisfied(&rs));
        let p = ObjKey::new("ns", "p");
        e.expect_deletions(&rs, [p.clone()]);
        assert!(!e.satisfied(&rs));
        e.deletion_observed(&rs, &ObjKey::new("ns", "other"));
        assert!(!e.satisfied(&rs));
        e.deletion_observed(&rs, &p);
        assert!(e.satisfied(&rs));
    }
}
