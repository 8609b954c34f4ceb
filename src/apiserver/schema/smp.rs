//! Strategic merge patch, with Kubernetes' semantics: maps merge recursively and `null` deletes;
//! lists whose field has patch strategy `merge` merge by their merge key (lists of objects) or
//! as sets (lists of scalars), other lists are replaced whole; the directives `$patch`,
//! `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` steer it.
//! kubectl apply, edit, set, rollout and patch compute their patches for exactly these rules.
//!
//! Ordering follows Kubernetes: `$setElementOrder` first, then the patch's own order, then the
//! live object's; elements only in the patch come before the live ones they are not ordered
//! against (a container added by `kubectl patch` lands first).

use serde_json::{Map, Value};

use super::gofmt;
use super::registry::{Field, FieldMeta, Schema, Shape};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_FROM: &str = "$deleteFromPrimitiveList";

/// Why a patch could not be applied, by the status Kubernetes answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmpError {
    /// 400: the patch is malformed in a way Kubernetes names.
    BadRequest(String),
    /// 422: lists of lists, or a patch that contradicts its `$retainKeys`.
    Unprocessable(String),
    /// Anything else, which Kubernetes answers with a 500 carrying the message.
    Other(String),
}

fn bad_arg(expected: &str, actual: &Value) -> SmpError {
    SmpError::Other(format!(
        "expected a {expected}, but received a {}",
        go_type(actual)
    ))
}

/// How Go's fmt names a JSON value's type, for messages that match kube-apiserver's.
pub(crate) fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> SmpError {
    SmpError::Other(format!(
        "map: {} does not contain declared merge key: {key}",
        gofmt::value(&Value::Object(map.clone()))
    ))
}

/// Applies `patch` to `original`; `schema` is the kind's root schema.
pub fn apply(schema: Schema<'_>, original: &Value, patch: &Value) -> Result<Value, SmpError> {
    let Value::Object(patch) = patch else {
        return Err(SmpError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(patch)
        )));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch.clone(), Some(schema)).map(Value::Object)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The schema and metadata of `key` inside a value of `schema`: a struct's field, or a map's
/// values (which have no patch metadata of their own).
fn child<'r>(schema: Option<Schema<'r>>, key: &str) -> (Option<Schema<'r>>, FieldMeta<'r>) {
    match schema {
        Some(s) if s.shape() == Shape::Object => match s.field(key) {
            Some(Field { schema, meta }) => (Some(schema), meta),
            None => (None, FieldMeta::none()),
        },
        Some(s) if s.shape() == Shape::Map => (s.values(), FieldMeta::none()),
        _ => (None, FieldMeta::none()),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<Schema<'_>>,
) -> Result<Map<String, Value>, SmpError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                Ok(clean_map(patch))
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(SmpError::Other(format!(
                "unknown patch type: {} in map: {}",
                gofmt::value(directive),
                gofmt::value(&Value::Object(patch.clone()))
            ))),
        };
    }

    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        let Value::Array(keep) = retain else {
            return Err(SmpError::BadRequest(
                "invalid patch format of retainKeys".into(),
            ));
        };
        let kept = |k: &str| keep.iter().any(|v| v.as_str() == Some(k));
        // Every field the patch sets must be retained, or the patch contradicts itself.
        for (k, v) in &patch {
            if v.is_null() || k.starts_with(DELETE_FROM) || k.starts_with(SET_ORDER) {
                continue;
            }
            if !kept(k) {
                return Err(SmpError::BadRequest(
                    "invalid patch format of retainKeys".into(),
                ));
            }
        }
        original.retain(|k, _| kept(k));
    }

    apply_element_orders(&mut original, &mut patch, schema)?;

    for (key, patch_value) in patch {
        let (field, is_delete_list) = match key.strip_prefix(DELETE_FROM) {
            Some(rest) => match rest.strip_prefix('/') {
                Some(field) => (field.to_string(), true),
                None => {
                    return Err(SmpError::BadRequest(
                        "invalid patch format of primitive list".into(),
                    ));
                }
            },
            None => (key, false),
        };
        if patch_value.is_null() {
            original.remove(&field);
            continue;
        }
        let (sub_schema, meta) = child(schema, &field);
        let Some(current) = original.get_mut(&field) else {
            if !is_delete_list {
                set_clean(&mut original, field, patch_value);
            }
            continue;
        };
        match (current, patch_value) {
            (Value::Object(current), Value::Object(patch_map)) => {
                let merged = if meta.replaces() {
                    clean_map(patch_map)
                } else {
                    merge_map(std::mem::take(current), patch_map, sub_schema)?
                };
                *current = merged;
            }
            (Value::Array(current), Value::Array(patch_list)) => {
                let merged = merge_list_field(
                    std::mem::take(current),
                    patch_list,
                    sub_schema,
                    meta,
                    is_delete_list,
                )?;
                *current = merged;
            }
            (_, patch_value) => {
                if !is_delete_list {
                    set_clean(&mut original, field, patch_value);
                }
            }
        }
    }
    Ok(original)
}

/// `$setElementOrder/<list>`: merges the list the patch carries for that field (if any) and then
/// orders the result: the directive's order, then the live order for elements it does not name.
fn apply_element_orders(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Option<Schema<'_>>,
) -> Result<(), SmpError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order) = patch.remove(&key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg("[]interface {}", &order));
        };
        let Some(field) = key
            .strip_prefix(SET_ORDER)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string)
        else {
            return Err(SmpError::BadRequest(
                "invalid patch format of setElementOrder list".into(),
            ));
        };
        let original_list = match original.get(&field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(bad_arg("[]interface {}", other)),
        };
        let patch_list = match patch.get(&field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(bad_arg("[]interface {}", other)),
        };
        let (sub_schema, meta) = child(schema, &field);
        let merge_key = meta.merge_key();
        validate_order(patch_list.as_deref().unwrap_or_default(), &order, merge_key)?;
        let merged = match (&original_list, patch_list) {
            (Some(live), None) => live.clone(),
            (None, Some(list)) => clean_list(list),
            (Some(live), Some(list)) => {
                merge_list_field(live.clone(), list, sub_schema, meta, false)?
            }
            (None, None) => continue,
        };
        let live = original_list.unwrap_or_default();
        let patch_items = patch.get(&field).and_then(Value::as_array);
        let kind = element_kind(&[&live, patch_items.map(Vec::as_slice).unwrap_or_default()])?;
        let (named, server_only) = partition(merged, &order, merge_key, kind)?;
        let ordered = normalize(named, server_only, &order, &live, merge_key, kind)?;
        original.insert(field.clone(), Value::Array(ordered));
        patch.remove(&field);
    }
    Ok(())
}

/// Kubernetes checks that the patch list names its elements in the same relative order as the
/// `$setElementOrder` list does.
fn validate_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), SmpError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = match merge_key {
        Some(_) => {
            let mut kept = Vec::new();
            for item in patch_list {
                let Value::Object(map) = item else {
                    return Err(bad_arg("map[string]interface {}", item));
                };
                if map.get(DIRECTIVE).and_then(Value::as_str) != Some("delete") {
                    kept.push(item);
                }
            }
            kept
        }
        None => patch_list.iter().collect(),
    };
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if items[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if same_element(items[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(SmpError::Other(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
            gofmt::value(&Value::Array(patch_list.to_vec())),
            gofmt::value(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn same_element(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool, SmpError> {
    let Some(key) = merge_key else {
        return Ok(left == right);
    };
    let (Value::Object(l), Value::Object(r)) = (left, right) else {
        return Err(bad_arg(
            "map[string]interface {}",
            if left.is_object() { right } else { left },
        ));
    };
    let lv = l.get(key).ok_or_else(|| no_merge_key(l, key))?;
    let rv = r.get(key).ok_or_else(|| no_merge_key(r, key))?;
    Ok(lv == rv)
}

fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    item_schema: Option<Schema<'_>>,
    meta: FieldMeta<'_>,
    is_delete_list: bool,
) -> Result<Vec<Value>, SmpError> {
    if meta.merges() || is_delete_list {
        let items = item_schema.and_then(|s| s.items());
        merge_list(original, patch, items, meta.merge_key(), is_delete_list)
    } else {
        Ok(clean_list(patch))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Scalar,
}

/// The common element type of lists, as Kubernetes requires for merging them.
fn element_kind(lists: &[&[Value]]) -> Result<Kind, SmpError> {
    let mut first: Option<&Value> = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        match first {
            None => {
                if item.is_array() {
                    return Err(SmpError::Unprocessable(
                        "lists of lists are not supported".into(),
                    ));
                }
                first = Some(item);
            }
            Some(f) if go_type(f) != go_type(item) => {
                let all: Vec<Value> = lists.iter().map(|l| Value::Array(l.to_vec())).collect();
                return Err(SmpError::Other(format!(
                    "list element types are not identical: {}",
                    gofmt::value(&Value::Array(all))
                )));
            }
            Some(_) => {}
        }
    }
    match first {
        Some(Value::Object(_)) => Ok(Kind::Map),
        Some(_) => Ok(Kind::Scalar),
        None => Err(SmpError::Other(
            "no elements in any of the given slices".into(),
        )),
    }
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    item_schema: Option<Schema<'_>>,
    merge_key: Option<&str>,
    is_delete_list: bool,
) -> Result<Vec<Value>, SmpError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_kind(&[&original, &patch])?;
    let (original, patch, merged) = match kind {
        Kind::Scalar => {
            if is_delete_list {
                return Ok(original
                    .into_iter()
                    .filter(|v| !patch.contains(v))
                    .collect());
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            (original, patch, merged)
        }
        Kind::Map => {
            let Some(key) = merge_key else {
                let name = item_schema.and_then(|s| s.name()).unwrap_or("Struct");
                return Err(SmpError::Other(format!(
                    "cannot merge lists without merge key for {name}"
                )));
            };
            let (original, patch) = apply_list_directives(original, patch, key)?;
            let merged = merge_by_key(original.clone(), &patch, key, item_schema)?;
            (original, patch, merged)
        }
    };
    let (named, server_only) = partition(merged, &patch, merge_key, kind)?;
    normalize(named, server_only, &patch, &original, merge_key, kind)
}

/// `$patch` elements of a list of objects: `delete` removes the live elements with that merge key,
/// `replace` makes the rest of the patch the whole list.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = &item else {
            return Err(bad_arg("map[string]interface {}", &item));
        };
        match map.get(DIRECTIVE) {
            None => plain.push(item),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                    original.retain(|o| o.get(key) != Some(value));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(SmpError::Other(
                        "merging lists cannot yet be specified in the patch".into(),
                    ));
                }
                _ => {
                    return Err(SmpError::Other(format!(
                        "unknown patch type: {} in map: {}",
                        gofmt::value(d),
                        gofmt::value(&item)
                    )));
                }
            },
        }
    }
    if replace {
        Ok((clean_list(plain), Vec::new()))
    } else {
        Ok((original, plain))
    }
}

fn merge_by_key(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    item_schema: Option<Schema<'_>>,
) -> Result<Vec<Value>, SmpError> {
    for item in patch {
        let Value::Object(map) = item else {
            return Err(bad_arg("map[string]interface {}", item));
        };
        let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
        let mut found = None;
        for (i, live) in original.iter().enumerate() {
            let Value::Object(live) = live else {
                return Err(SmpError::Other(format!("value for key {i} is not a map")));
            };
            if live.get(key) == Some(value) {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let live = match std::mem::take(&mut original[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                original[i] = Value::Object(merge_map(live, map.clone(), item_schema)?);
            }
            None => {
                if let Some(clean) = clean(item.clone()) {
                    original.push(clean);
                }
            }
        }
    }
    Ok(original)
}

/// Splits `merged` into the elements `by` names and the rest, keeping their order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut named = Vec::new();
    let mut rest = Vec::new();
    for item in merged {
        let present = match (kind, merge_key) {
            (Kind::Map, Some(key)) => {
                let Value::Object(map) = &item else {
                    return Err(bad_arg("map[string]interface {}", &item));
                };
                let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                by.iter().any(|b| b.get(key) == Some(value))
            }
            _ => by.contains(&item),
        };
        if present {
            named.push(item);
        } else {
            rest.push(item);
        }
    }
    Ok((named, rest))
}

fn position(list: &[Value], item: &Value, merge_key: Option<&str>, kind: Kind) -> Option<usize> {
    match (kind, merge_key) {
        (Kind::Map, Some(key)) => {
            let value = item.get(key);
            list.iter().position(|v| v.get(key) == value)
        }
        _ => list.iter().position(|v| v == item),
    }
}

/// Orders the patch's elements by `patch_order` and the live-only ones by `live_order`, then
/// interleaves them: a live-only element goes before a patch element only when the live object
/// has both and it came first there.
fn normalize(
    mut named: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    live_order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, SmpError> {
    if let (Kind::Map, Some(key)) = (kind, merge_key) {
        let all = named.iter().chain(server_only.iter());
        for item in all.chain(patch_order).chain(live_order) {
            match item {
                Value::Object(map) if !map.contains_key(key) => {
                    return Err(no_merge_key(map, key));
                }
                Value::Object(_) => {}
                other => return Err(bad_arg("map[string]interface {}", other)),
            }
        }
    }
    let rank = |order: &[Value], item: &Value| {
        position(order, item, merge_key, kind).unwrap_or(usize::MAX)
    };
    named.sort_by_key(|item| rank(patch_order, item));
    server_only.sort_by_key(|item| rank(live_order, item));

    let mut out = Vec::with_capacity(named.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = named.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    position(live_order, l, merge_key, kind),
                    position(live_order, r, merge_key, kind),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// What a patch value becomes where nothing is merged into it: nulls dropped (they mean "delete",
/// and there is nothing to delete), directives gone, maps marked `$patch` removed whole.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(clean_map(map)))
        }
        Value::Array(items) => Some(Value::Array(clean_list(items))),
        Value::Null => None,
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, _)| !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .filter(|v| !v.is_null())
        .filter_map(clean)
        .collect()
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ORDER)
        || key.starts_with(DELETE_FROM)
}

fn set_clean(map: &mut Map<String, Value>, key: String, value: Value) {
    match clean(value) {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}
