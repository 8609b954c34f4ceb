//! Kubernetes' list library (`kubernetes.lists`): `isSorted()`, `sum()`, `min()`, `max()`,
//! `indexOf(x)` and `lastIndexOf(x)` on lists.
//!
//! Kubernetes declares these per element type, and its type checker refuses, say, the sum of a
//! list of strings before the rule runs. Rules here are not type checked, so the same limits
//! are enforced on the elements met at run time: an element of another type is a "no matching
//! overload" error. One leniency: a JSON `number` field holds `1` as an int and `1.5` as a
//! double, where Kubernetes sees two doubles, so a sum mixing them is a double.

use std::cmp::Ordering;

use cel::common::types::{CelBool, CelDouble, CelInt, CelUInt, DYN_TYPE, Kind, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::{fail, take};

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload(
        "isSorted",
        "list_is_sorted_bool",
        LIST_TYPE,
        vec![],
        is_sorted,
    )?;
    env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list_min", LIST_TYPE, vec![], min)?;
    env.add_member_overload("max", "list_max", LIST_TYPE, vec![], max)?;
    env.add_member_overload(
        "indexOf",
        "list_a_index_of_int",
        LIST_TYPE,
        vec![DYN_TYPE],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_a_last_index_of_int",
        LIST_TYPE,
        vec![DYN_TYPE],
        last_index_of,
    )?;
    Ok(())
}

/// The elements of `list`, borrowed.
fn elements<'a, 'v>(
    function: &str,
    list: &'a (dyn Val + 'v),
) -> Result<Vec<&'a (dyn Val + 'v)>, ExecutionError> {
    let iterable = list
        .as_iterable()
        .ok_or_else(|| no_overload(function, list))?;
    let mut items = iterable.iter();
    let mut out = Vec::new();
    while let Some(item) = items.next() {
        out.push(item);
    }
    Ok(out)
}

fn no_overload(function: &str, receiver: &dyn Val) -> ExecutionError {
    ExecutionError::no_such_member_overload(function, vec![receiver.get_type().name().to_owned()])
}

/// The element types Kubernetes declares `isSorted`, `min` and `max` for.
fn comparable(v: &dyn Val) -> bool {
    matches!(
        v.get_type().kind(),
        Kind::Int
            | Kind::UInt
            | Kind::Double
            | Kind::Boolean
            | Kind::Duration
            | Kind::Timestamp
            | Kind::String
            | Kind::Bytes
    )
}

/// `a` compared with `b`, both of a comparable type.
fn compare(function: &str, a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    for v in [a, b] {
        if !comparable(v) {
            return Err(no_overload(function, v));
        }
    }
    a.as_comparer()
        .ok_or_else(|| no_overload(function, a))?
        .compare(b)
}

/// True when no element is greater than the one after it.
fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take(args)?;
    let items = elements("isSorted", list.as_ref())?;
    if let [only] = items.as_slice()
        && !comparable(*only)
    {
        return Err(no_overload("isSorted", *only));
    }
    for pair in items.windows(2) {
        if compare("isSorted", pair[0], pair[1])? == Ordering::Greater {
            return Ok(CowVal::owned(CelBool::from(false)));
        }
    }
    Ok(CowVal::owned(CelBool::from(true)))
}

/// The sum of the elements: ints, uints, doubles or durations. An empty list sums to `0`
/// (Kubernetes gives the zero of the list's declared type; without types, an int).
fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take(args)?;
    let items = elements("sum", list.as_ref())?;
    let kinds: Vec<Kind> = items.iter().map(|v| v.get_type().kind()).collect();
    let numeric = |k: &Kind| matches!(k, Kind::Int | Kind::UInt | Kind::Double);
    if let Some(bad) = items
        .iter()
        .find(|v| !numeric(&v.get_type().kind()) && v.get_type().kind() != Kind::Duration)
    {
        return Err(no_overload("sum", *bad));
    }
    if kinds.iter().all(|k| *k == Kind::Int) {
        let mut total: i64 = 0;
        for v in &items {
            let n = v.downcast_ref::<CelInt>().map(|i| *i.inner()).unwrap_or(0);
            total = total
                .checked_add(n)
                .ok_or_else(|| fail("sum", "integer overflow"))?;
        }
        return Ok(CowVal::owned(CelInt::from(total)));
    }
    if kinds.iter().all(|k| *k == Kind::UInt) {
        let mut total: u64 = 0;
        for v in &items {
            let n = v.downcast_ref::<CelUInt>().map(|u| *u.inner()).unwrap_or(0);
            total = total
                .checked_add(n)
                .ok_or_else(|| fail("sum", "unsigned integer overflow"))?;
        }
        return Ok(CowVal::owned(CelUInt::from(total)));
    }
    if kinds.iter().all(numeric) {
        let mut total = 0.0;
        for v in &items {
            total += as_f64(*v);
        }
        return Ok(CowVal::owned(CelDouble::from(total)));
    }
    // Durations: added as the interpreter adds them, so an overflow is its error.
    if kinds.iter().any(|k| *k != Kind::Duration) {
        return Err(fail("sum", "list elements must have the same type"));
    }
    let mut total: Option<Box<dyn Val + 'v>> = None;
    for v in items {
        total = Some(match total {
            None => v.clone_as_boxed(),
            Some(acc) => {
                let adder = acc.as_adder().ok_or_else(|| no_overload("sum", v))?;
                adder.add(v)?.as_ref().clone_as_boxed()
            }
        });
    }
    Ok(match total {
        Some(t) => CowVal::Owned(t),
        None => CowVal::owned(CelInt::from(0)),
    })
}

fn as_f64(v: &dyn Val) -> f64 {
    if let Some(d) = v.downcast_ref::<CelDouble>() {
        *d.inner()
    } else if let Some(i) = v.downcast_ref::<CelInt>() {
        *i.inner() as f64
    } else if let Some(u) = v.downcast_ref::<CelUInt>() {
        *u.inner() as f64
    } else {
        0.0
    }
}

fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("min", args, Ordering::Greater)
}

fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("max", args, Ordering::Less)
}

/// The first element no other beats: the kept one is replaced by a later one only when it
/// compares as `replace_when` to it, so of equal elements the first wins, as in Kubernetes.
fn extreme<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    replace_when: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take(args)?;
    let items = elements(function, list.as_ref())?;
    let mut best: Option<&dyn Val> = None;
    for item in items {
        best = match best {
            None if !comparable(item) => return Err(no_overload(function, item)),
            None => Some(item),
            Some(b) if compare(function, b, item)? == replace_when => Some(item),
            keep => keep,
        };
    }
    match best {
        Some(b) => Ok(CowVal::Owned(b.clone_as_boxed())),
        None => Err(fail(function, format!("{function} called on empty list"))),
    }
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, x] = take(args)?;
    let items = elements("indexOf", list.as_ref())?;
    let at = items.iter().position(|v| v.equals(x.as_ref()));
    Ok(CowVal::owned(CelInt::from(index(at))))
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, x] = take(args)?;
    let items = elements("lastIndexOf", list.as_ref())?;
    let at = items.iter().rposition(|v| v.equals(x.as_ref()));
    Ok(CowVal::owned(CelInt::from(index(at))))
}

/// A position as CEL reports it: `-1` for none.
fn index(at: Option<usize>) -> i64 {
    at.and_then(|i| i64::try_from(i).ok()).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eval, eval_err};
    use cel::Value;

    #[test]
    fn is_sorted_compares_neighbours() {
        for (expr, want) in [
            ("[1, 2, 3].isSorted()", true),
            ("['a', 'b', 'b', 'c'].isSorted()", true),
            ("[2.0, 1.0].isSorted()", false),
            ("[1].isSorted()", true),
            ("[].isSorted()", true),
            ("[1u, 3u, 2u].isSorted()", false),
            ("[false, true].isSorted()", true),
        ] {
            assert_eq!(eval(expr), Value::Bool(want), "{expr}");
        }
        assert!(eval_err("[[1], [2]].isSorted()").contains("no matching overload"));
    }

    #[test]
    fn sum_adds_numbers_of_one_type() {
        assert_eq!(eval("[1, 3].sum()"), Value::Int(4));
        assert_eq!(eval("[1.0, 3.0].sum()"), Value::Float(4.0));
        assert_eq!(eval("[1u, 3u].sum()"), Value::UInt(4));
        assert_eq!(eval("[].sum()"), Value::Int(0));
        assert_eq!(eval("[1, 2.5].sum()"), Value::Float(3.5));
        assert_eq!(
            eval_err("[9223372036854775807, 1].sum()"),
            "integer overflow"
        );
        assert!(eval_err("['a', 'b'].sum()").contains("no matching overload"));
    }

    #[test]
    fn min_and_max_pick_the_first_extreme() {
        assert_eq!(eval("[1, 3].min()"), Value::Int(1));
        assert_eq!(eval("[1, 3].max()"), Value::Int(3));
        assert_eq!(eval("[3].min()"), Value::Int(3));
        assert_eq!(
            eval("['b', 'a', 'c'].max()"),
            Value::String("c".to_string().into())
        );
        assert_eq!(eval("[2.5, -1.0].min()"), Value::Float(-1.0));
        assert_eq!(eval("([0] + []).min()"), Value::Int(0));
        assert_eq!(eval_err("[].min()"), "min called on empty list");
        assert_eq!(eval_err("[].max()"), "max called on empty list");
        assert!(eval_err("[{'a': 1}].max()").contains("no matching overload"));
    }

    #[test]
    fn index_of_and_last_index_of_find_equal_elements() {
        assert_eq!(eval("[1, 2, 2, 3].indexOf(2)"), Value::Int(1));
        assert_eq!(eval("['a', 'b', 'b', 'c'].lastIndexOf('b')"), Value::Int(2));
        assert_eq!(eval("[1.0].indexOf(1.1)"), Value::Int(-1));
        assert_eq!(eval("[].indexOf('string')"), Value::Int(-1));
        assert_eq!(eval("[[1], [2]].indexOf([2])"), Value::Int(1));
        // The strings extension's indexOf on strings is untouched.
        assert_eq!(eval("'abcb'.lastIndexOf('b')"), Value::Int(3));
    }
}
