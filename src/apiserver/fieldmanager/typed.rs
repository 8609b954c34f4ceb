//! Walks over objects guided by the kind's schema, with structured-merge-diff's semantics: the
//! field set an applied configuration names, the comparison of two objects (added, modified and
//! removed fields), the merge of a configuration into a live object, and the removal of a set of
//! fields.
//!
//! A list is a map keyed by its `x-kubernetes-list-map-keys` (or, on older types, its patch merge
//! key), a set of scalars (`set`, or a merged list without a key), or atomic (everything else);
//! a struct or map is granular unless `x-kubernetes-map-type: atomic`. Atomic values are owned
//! and replaced whole. Without a schema, objects are granular and lists atomic.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::path::PathElement;
use super::set::FieldSet;
use crate::apiserver::schema::{FieldMeta, Schema, Shape};

/// A place in an object: its schema (none for undeclared, schema-less places) and the metadata
/// of the field that holds it (where list types live).
#[derive(Clone, Copy)]
pub struct Ty<'r> {
    schema: Option<Schema<'r>>,
    meta: FieldMeta<'r>,
}

/// How a place merges.
enum Kind<'r> {
    Scalar,
    /// Owned and replaced whole.
    Atomic,
    /// An associative list: keyed by `keys`, or a set of scalars when there are none.
    List(Vec<&'r str>),
    /// A struct or a granular map.
    Fields,
}

/// Kubernetes' schemas default these list-map keys, so an item that leaves them out is still
/// keyed by them (`k:{"containerPort":80,"protocol":"TCP"}`).
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
];

impl<'r> Ty<'r> {
    pub fn root(schema: Schema<'r>) -> Self {
        Ty {
            schema: Some(schema),
            meta: FieldMeta::none(),
        }
    }

    pub fn untyped() -> Self {
        Ty {
            schema: None,
            meta: FieldMeta::none(),
        }
    }

    pub fn schema(&self) -> Option<Schema<'r>> {
        self.schema
    }

    fn kind(&self, sample: Option<&Value>) -> Kind<'r> {
        let Some(schema) = self.schema else {
            return match sample {
                Some(Value::Object(_)) => Kind::Fields,
                Some(Value::Array(_)) => Kind::Atomic,
                _ => Kind::Scalar,
            };
        };
        let atomic_map =
            self.meta.map_type() == Some("atomic") || schema.map_type() == Some("atomic");
        match schema.shape() {
            Shape::Scalar => Kind::Scalar,
            // `x-kubernetes-preserve-unknown-fields` holds anything, merged as untyped values
            // are; other free-form values (RawExtension) are replaced whole.
            Shape::FreeForm if schema.preserves_unknown() => Ty::untyped().kind(sample),
            Shape::FreeForm => Kind::Atomic,
            Shape::Object | Shape::Map if atomic_map => Kind::Atomic,
            Shape::Object | Shape::Map => Kind::Fields,
            Shape::List => match self.meta.list_type() {
                Some("map") => Kind::List(self.meta.list_map_keys().collect()),
                Some("set") => Kind::List(Vec::new()),
                Some(_) => Kind::Atomic,
                None if self.meta.merges() => {
                    Kind::List(self.meta.merge_key().into_iter().collect())
                }
                None => Kind::Atomic,
            },
        }
    }

    /// The place of a struct field or map value.
    pub fn field(&self, name: &str) -> Ty<'r> {
        let Some(schema) = self.schema else {
            return Ty::untyped();
        };
        match schema.shape() {
            Shape::Object => match schema.field(name) {
                Some(f) => Ty {
                    schema: Some(f.schema),
                    meta: f.meta,
                },
                None => Ty::untyped(),
            },
            Shape::Map => Ty {
                schema: schema.values(),
                meta: FieldMeta::none(),
            },
            _ => Ty::untyped(),
        }
    }

    /// Whether `name` is a declared field of this struct (map keys and undeclared ones are not).
    pub fn declares(&self, name: &str) -> bool {
        self.schema
            .is_some_and(|s| s.shape() == Shape::Object && s.field(name).is_some())
    }

    pub fn list_item(&self) -> Ty<'r> {
        Ty {
            schema: self.schema.and_then(|s| s.items()),
            meta: FieldMeta::none(),
        }
    }

    /// The element that names `item` in this list, or None when the list cannot be treated as
    /// associative (an item without keys, an object in a set).
    fn item_pe(&self, keys: &[&str], item: &Value) -> Option<PathElement> {
        if keys.is_empty() {
            return match item {
                Value::Object(_) | Value::Array(_) | Value::Null => None,
                v => Some(PathElement::Value(v.clone())),
            };
        }
        let obj = item.as_object()?;
        let item_type = self.list_item().schema.and_then(|s| s.name());
        let mut fields: Vec<(String, Value)> = Vec::new();
        for key in keys {
            if let Some(v) = obj.get(*key) {
                fields.push((key.to_string(), v.clone()));
            } else if let Some((_, _, default)) = KEY_DEFAULTS
                .iter()
                .find(|(ty, k, _)| Some(*ty) == item_type && k == key)
            {
                fields.push((key.to_string(), Value::String(default.to_string())));
            }
        }
        if fields.is_empty() {
            return None;
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Some(PathElement::Key(fields))
    }

    /// Every item's element, or None if any item has none.
    fn item_pes(&self, keys: &[&str], items: &[Value]) -> Option<Vec<PathElement>> {
        items.iter().map(|i| self.item_pe(keys, i)).collect()
    }
}

fn is_empty_list(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn is_empty_map(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        _ => false,
    }
}

fn as_list(v: Option<&Value>) -> Option<&[Value]> {
    match v {
        None | Some(Value::Null) => Some(&[]),
        Some(Value::Array(a)) => Some(a),
        _ => None,
    }
}

fn as_map(v: Option<&Value>) -> Option<Option<&Map<String, Value>>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::Object(m)) => Some(Some(m)),
        _ => None,
    }
}

/// The children of a place being walked on both sides: for each element, the value on the left
/// and on the right. None when the place is a leaf (scalar, atomic, empty on both sides, or not
/// of its schema's shape).
type Children<'v, 'r> = Vec<(PathElement, Ty<'r>, Option<&'v Value>, Option<&'v Value>)>;

fn children<'v, 'r>(
    ty: Ty<'r>,
    lhs: Option<&'v Value>,
    rhs: Option<&'v Value>,
) -> Option<Children<'v, 'r>> {
    match ty.kind(rhs.or(lhs)) {
        Kind::Scalar | Kind::Atomic => None,
        Kind::List(keys) => {
            if is_empty_list(lhs) && is_empty_list(rhs) {
                return None;
            }
            let (l, r) = (as_list(lhs)?, as_list(rhs)?);
            let (lpes, rpes) = (ty.item_pes(&keys, l)?, ty.item_pes(&keys, r)?);
            let item = ty.list_item();
            let mut out: Children = Vec::new();
            let mut index: HashMap<PathElement, usize> = HashMap::new();
            for (pe, v) in lpes.into_iter().zip(l) {
                if !index.contains_key(&pe) {
                    index.insert(pe.clone(), out.len());
                    out.push((pe, item, Some(v), None));
                }
            }
            for (pe, v) in rpes.into_iter().zip(r) {
                match index.get(&pe) {
                    Some(&i) => {
                        if out[i].3.is_none() {
                            out[i].3 = Some(v);
                        }
                    }
                    None => {
                        index.insert(pe.clone(), out.len());
                        out.push((pe, item, None, Some(v)));
                    }
                }
            }
            Some(out)
        }
        Kind::Fields => {
            if is_empty_map(lhs) && is_empty_map(rhs) {
                return None;
            }
            let (l, r) = (as_map(lhs)?, as_map(rhs)?);
            let mut keys: Vec<&String> = l.into_iter().flat_map(|m| m.keys()).collect();
            keys.extend(r.into_iter().flat_map(|m| m.keys()));
            keys.sort();
            keys.dedup();
            Some(
                keys.into_iter()
                    .map(|k| {
                        (
                            PathElement::Field(k.clone()),
                            ty.field(k),
                            l.and_then(|m| m.get(k)),
                            r.and_then(|m| m.get(k)),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// The fields an applied configuration names: every scalar and atomic value, every list item,
/// every map entry, and every field given as null or `{}`.
pub fn to_field_set(ty: Ty<'_>, v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    field_set_walk(ty, v, &mut Vec::new(), &mut out);
    out
}

fn field_set_walk(ty: Ty<'_>, v: &Value, path: &mut Vec<PathElement>, out: &mut FieldSet) {
    match (ty.kind(Some(v)), v) {
        (Kind::List(keys), Value::Array(items)) => {
            let Some(pes) = ty.item_pes(&keys, items) else {
                out.insert(path);
                return;
            };
            let item = ty.list_item();
            let mut seen = HashSet::new();
            let mut dups = HashSet::new();
            for pe in &pes {
                if !seen.insert(pe.clone()) {
                    dups.insert(pe.clone());
                }
            }
            for (pe, child) in pes.into_iter().zip(items) {
                path.push(pe.clone());
                if !dups.contains(&pe) {
                    field_set_walk(item, child, path, out);
                }
                out.insert(path);
                path.pop();
            }
        }
        (Kind::Fields, Value::Object(map)) => {
            for (k, child) in map {
                path.push(PathElement::Field(k.clone()));
                field_set_walk(ty.field(k), child, path, out);
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !ty.declares(k) {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (Kind::List(_) | Kind::Fields, Value::Null) => {}
        _ => out.insert(path),
    }
}

/// What changed from `lhs` to `rhs`: leaves and items that appeared, leaves whose value changed,
/// and leaves and items that went away.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Added or modified: what a writer takes ownership of.
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

pub fn compare(ty: Ty<'_>, lhs: &Value, rhs: &Value) -> Comparison {
    let mut c = Comparison::default();
    compare_walk(ty, Some(lhs), Some(rhs), &mut Vec::new(), &mut c);
    c
}

fn compare_walk(
    ty: Ty<'_>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    let Some(kids) = children(ty, lhs, rhs) else {
        match (lhs, rhs) {
            (None, _) => c.added.insert(path),
            (_, None) => c.removed.insert(path),
            (Some(l), Some(r)) if l != r => c.modified.insert(path),
            _ => {}
        }
        return;
    };
    for (pe, child_ty, l, r) in kids {
        path.push(pe);
        compare_walk(child_ty, l, r, path, c);
        path.pop();
    }
    match (lhs, rhs) {
        (None, _) => c.added.insert(path),
        (_, None) => c.removed.insert(path),
        _ => {}
    }
}

/// The configuration `rhs` merged into `lhs`: values of `rhs` win, maps and associative lists
/// merge item by item, atomic values are replaced.
pub fn merge(ty: Ty<'_>, lhs: &Value, rhs: &Value) -> Value {
    merge_walk(ty, Some(lhs), Some(rhs)).unwrap_or(Value::Null)
}

fn merge_walk(ty: Ty<'_>, lhs: Option<&Value>, rhs: Option<&Value>) -> Option<Value> {
    let Some(kids) = children(ty, lhs, rhs) else {
        return rhs.or(lhs).cloned();
    };
    if let Kind::List(keys) = ty.kind(rhs.or(lhs)) {
        return merge_list(ty, &keys, lhs, rhs);
    }
    let mut out = Map::new();
    for (pe, child_ty, l, r) in kids {
        if let (PathElement::Field(k), Some(v)) = (pe, merge_walk(child_ty, l, r)) {
            out.insert(k, v);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// Items of both lists: the configuration's items in its order, with live items it does not
/// name kept where they were relative to the items around them.
fn merge_list(
    ty: Ty<'_>,
    keys: &[&str],
    lhs: Option<&Value>,
    rhs: Option<&Value>,
) -> Option<Value> {
    let l = as_list(lhs).unwrap_or(&[]);
    let r = as_list(rhs).unwrap_or(&[]);
    let lpes = ty.item_pes(keys, l)?;
    let rpes = ty.item_pes(keys, r)?;
    let item = ty.list_item();
    let mut lhs_of: HashMap<&PathElement, &Value> = HashMap::new();
    for (pe, v) in lpes.iter().zip(l) {
        lhs_of.entry(pe).or_insert(v);
    }
    let mut rhs_of: HashMap<&PathElement, &Value> = HashMap::new();
    for (pe, v) in rpes.iter().zip(r) {
        rhs_of.entry(pe).or_insert(v);
    }
    let mut shared = rpes.iter().filter(|pe| lhs_of.contains_key(pe));
    let mut next_shared = shared.next();
    let mut merged: HashSet<&PathElement> = HashSet::new();
    let mut out = Vec::new();
    let (mut li, mut ri) = (0, 0);
    while li < lpes.len() || ri < rpes.len() {
        let before = (li, ri);
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                merged.insert(pe);
                out.extend(merge_walk(
                    item,
                    lhs_of.get(pe).copied(),
                    rhs_of.get(pe).copied(),
                ));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if rhs_of.contains_key(pe) && next_shared.is_some_and(|s| s != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li];
            if !rhs_of.contains_key(pe) {
                out.extend(merge_walk(item, Some(&l[li]), None));
                li += 1;
                continue;
            } else if merged.contains(pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri];
            merged.insert(pe);
            out.extend(merge_walk(
                item,
                lhs_of.get(pe).copied(),
                rhs_of.get(pe).copied(),
            ));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
        if before == (li, ri) {
            li += 1;
        }
    }
    (!out.is_empty()).then_some(Value::Array(out))
}

/// `v` without the fields and items of `set` (a member goes with everything below it).
pub fn remove(ty: Ty<'_>, v: &Value, set: &FieldSet) -> Value {
    remove_walk(ty, v, set).unwrap_or(Value::Null)
}

fn remove_walk(ty: Ty<'_>, v: &Value, set: &FieldSet) -> Option<Value> {
    match (ty.kind(Some(v)), v) {
        (Kind::List(keys), Value::Array(items)) => {
            let item_ty = ty.list_item();
            let mut out = Vec::new();
            for item in items {
                let Some(pe) = ty.item_pe(&keys, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has_member(&pe) {
                    continue;
                }
                match set.with_prefix(&pe) {
                    Some(sub) => out.extend(remove_walk(item_ty, item, sub)),
                    None => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        (Kind::Fields, Value::Object(map)) => {
            let mut out = Map::new();
            for (k, child) in map {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                let kept = match set.with_prefix(&pe) {
                    Some(sub) => remove_walk(ty.field(k), child, sub),
                    None => Some(child.clone()),
                };
                if let Some(kept) = kept {
                    out.insert(k.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ => Some(v.clone()),
    }
}

/// `set` with every declared struct field that has owned children made a member too, which is
/// how pruning decides whether a whole field may go.
pub fn ensure_named(ty: Ty<'_>, set: &FieldSet) -> FieldSet {
    let mut out = set.clone();
    for (pe, kids, _) in set.entries() {
        if kids.is_empty() {
            continue;
        }
        let child_ty = match pe {
            PathElement::Field(name) => {
                if ty.declares(name) {
                    out.mark(pe);
                }
                Some(ty.field(name))
            }
            PathElement::Key(_) => Some(ty.list_item()),
            _ => None,
        };
        if let Some(child_ty) = child_ty {
            out.set_children(pe, ensure_named(child_ty, kids));
        }
    }
    out
}
