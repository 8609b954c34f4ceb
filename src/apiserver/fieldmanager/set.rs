//! Field sets: the paths one manager owns, as a trie. A node can be a member itself (the field or
//! item is owned), have children (something inside it is owned), or both, which FieldsV1 writes
//! as a `".": {}` entry beside the children.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::path::{ParseError, PathElement};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    nodes: BTreeMap<PathElement, Node>,
}

/// Invariant: a node is a member or has children; empty nodes are never kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

impl Node {
    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds one path; its parents are not members unless added themselves. The empty path (the
    /// whole object) is never owned.
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    /// Whether `pe` itself is a member at this level.
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.nodes.get(pe).is_some_and(|n| n.member)
    }

    /// The paths below `pe`, with `pe` taken off.
    pub fn with_prefix(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.nodes
            .get(pe)
            .map(|n| &n.children)
            .filter(|c| !c.is_empty())
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        for (pe, theirs) in &other.nodes {
            let node = self.nodes.entry(pe.clone()).or_default();
            node.member |= theirs.member;
            node.children.union_with(&theirs.children);
        }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, mine) in &self.nodes {
            if let Some(theirs) = other.nodes.get(pe) {
                let node = Node {
                    member: mine.member && theirs.member,
                    children: mine.children.intersection(&theirs.children),
                };
                if !node.is_empty() {
                    out.nodes.insert(pe.clone(), node);
                }
            }
        }
        out
    }

    /// Members of `self` that are not members of `other`: removing a parent does not remove its
    /// children, and removing a child leaves its parent.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, mine) in &self.nodes {
            let node = match other.nodes.get(pe) {
                Some(theirs) => Node {
                    member: mine.member && !theirs.member,
                    children: mine.children.difference(&theirs.children),
                },
                None => mine.clone(),
            };
            if !node.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    /// Like `difference`, but a member of `other` also takes away everything below it.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, mine) in &self.nodes {
            let node = match other.nodes.get(pe) {
                Some(theirs) if theirs.member => continue,
                Some(theirs) => Node {
                    member: mine.member,
                    children: mine.children.recursive_difference(&theirs.children),
                },
                None => mine.clone(),
            };
            if !node.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    /// Only the paths under `pe`, kept with their prefix.
    pub fn only(&self, pe: &PathElement) -> FieldSet {
        let mut out = FieldSet::new();
        if let Some(node) = self.nodes.get(pe) {
            out.nodes.insert(pe.clone(), node.clone());
        }
        out
    }

    /// Every member path, depth first: a level's members before what lies below it, as
    /// Kubernetes lists conflicts.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (pe, node) in &self.nodes {
            if node.member {
                let mut path = prefix.clone();
                path.push(pe.clone());
                out.push(path);
            }
        }
        for (pe, node) in &self.nodes {
            if !node.children.is_empty() {
                prefix.push(pe.clone());
                node.children.collect(prefix, out);
                prefix.pop();
            }
        }
    }

    /// The (element, child set, member) triples at this level, for walks that need the schema.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&PathElement, &FieldSet, bool)> {
        self.nodes.iter().map(|(pe, n)| (pe, &n.children, n.member))
    }

    /// Marks `pe` a member at this level.
    pub(super) fn mark(&mut self, pe: &PathElement) {
        self.nodes.entry(pe.clone()).or_default().member = true;
    }

    /// Replaces the children of `pe` (dropping the node if it ends up empty).
    pub(super) fn set_children(&mut self, pe: &PathElement, children: FieldSet) {
        let node = self.nodes.entry(pe.clone()).or_default();
        node.children = children;
        if node.is_empty() {
            self.nodes.remove(pe);
        }
    }

    /// The FieldsV1 form: `{"f:spec": {"f:replicas": {}}, "f:metadata": {"f:labels": {".": {}, …}}}`.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (pe, node) in &self.nodes {
            let mut inner = match node.children.to_fields_v1() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if node.member && !inner.is_empty() {
                inner.insert(".".into(), json!({}));
            }
            map.insert(pe.to_key(), Value::Object(inner));
        }
        Value::Object(map)
    }

    /// Reads FieldsV1. Unknown key kinds are skipped, as Kubernetes skips them; anything else
    /// that is not a path element is an error.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let map = match v {
            Value::Object(map) => map,
            Value::Null => return Ok(FieldSet::new()),
            other => return Err(format!("fieldsV1 must be an object, not {other}")),
        };
        let mut out = FieldSet::new();
        for (key, inner) in map {
            if key == "." {
                continue;
            }
            let pe = match PathElement::parse_key(key) {
                Ok(pe) => pe,
                Err(ParseError::Unknown) => continue,
                Err(ParseError::Bad(e)) => return Err(e),
            };
            let inner_map = match inner {
                Value::Object(m) => m,
                other => return Err(format!("{key}: expected an object, not {other}")),
            };
            let children = FieldSet::from_fields_v1(inner)?;
            // An entry with nothing below it, or with ".", is owned itself.
            let member = children.is_empty() || inner_map.contains_key(".");
            let node = Node { member, children };
            if !node.is_empty() {
                out.nodes.insert(pe, node);
            }
        }
        Ok(out)
    }
}
