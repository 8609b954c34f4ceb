//! Kubernetes' quantity library (`kubernetes.quantity`): `quantity(s)`, `isQuantity(s)`, and a
//! quantity's `sign()`, `isInteger()`, `asInteger()`, `asApproximateFloat()`, `add()`, `sub()`,
//! `isLessThan()`, `isGreaterThan()` and `compareTo()`; quantities are equal by value
//! (`quantity('1k') == quantity('1000')`).
//!
//! Values are the API server's own exact quantities ([`Quantity::parse_exact`] reads them as
//! Kubernetes' `ParseQuantity` does). One thing more is kept: whether Go would hold the value
//! as a small int64 amount (`value × 10^scale`) or as a big decimal, because `isInteger()`
//! and `asInteger()` answer from that, not from the value: Kubernetes says `1000m` and `1.0`
//! are not integers (a negative scale), nor is `1.5Gi` (a big decimal) though it is whole.

use std::cmp::Ordering;
use std::sync::LazyLock;

use cel::common::types::{CelBool, CelDouble, CelInt, CelString, Type};
use cel::common::value::{StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::fail;
use crate::apiserver::kinds::quantity::{Quantity, interpret_suffix, scan};

static QUANTITY_TYPE: LazyLock<Type> =
    LazyLock::new(|| Type::new_opaque_type("kubernetes.Quantity"));

/// Go's `int64Amount`: `value × 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Amount {
    value: i64,
    scale: i32,
}

impl Amount {
    /// The amount Go's `ParseQuantity` keeps for `text` when its fast path takes it.
    fn parsed(text: &str) -> Option<Amount> {
        if text == "0" {
            return Some(Amount { value: 0, scale: 0 });
        }
        let s = scan(text).ok()?;
        let (base, exponent, _) = interpret_suffix(s.suffix)?;
        // Go's estimate of whether the digits fit an int64, per kind of suffix.
        let digits = (s.num.len() + s.denom.len()) as i32;
        let (scale, multiplier, precision) = match base {
            10 => (exponent, 1i64, 18 - digits),
            _ if s.denom.is_empty() => (
                0,
                1i64.checked_shl(u32::try_from(exponent).ok()?)?,
                15 - s.num.len() as i32 - exponent * 3 / 10 - 1,
            ),
            _ => return None,
        };
        let scale = scale - s.denom.len() as i32;
        if precision < 0 || scale < -9 {
            return None;
        }
        let value: i64 = format!("{}{}", s.num, s.denom).parse().ok()?;
        let value = value.checked_mul(multiplier)?;
        Some(Amount {
            value: if s.negative { -value } else { value },
            scale,
        })
    }

    /// `value × 10^by`, if it fits.
    fn scaled_up(value: i64, by: i32) -> Option<i64> {
        if value == 0 {
            return Some(0);
        }
        value.checked_mul(10i64.checked_pow(u32::try_from(by).ok()?)?)
    }

    /// Go's `int64Amount.Add`: at the smaller scale, unless a side is zero; none on overflow.
    fn add(self, other: Amount) -> Option<Amount> {
        if other.value == 0 {
            return Some(self);
        }
        if self.value == 0 {
            return Some(other);
        }
        let scale = self.scale.min(other.scale);
        let a = Amount::scaled_up(self.value, self.scale - scale)?;
        let b = Amount::scaled_up(other.value, other.scale - scale)?;
        Some(Amount {
            value: a.checked_add(b)?,
            scale,
        })
    }

    /// Go's `int64Amount.AsInt64`: only at a scale of zero or more.
    fn as_i64(self) -> Option<i64> {
        if self.scale < 0 {
            return None;
        }
        Amount::scaled_up(self.value, self.scale)
    }
}

/// A quantity as a CEL value.
#[derive(Debug, Clone)]
pub struct CelQuantity {
    value: Quantity,
    /// Go's int64 form of the value, `None` when Go holds a big decimal.
    amount: Option<Amount>,
}

impl CelQuantity {
    fn parse(text: &str) -> Result<CelQuantity, &'static str> {
        Ok(CelQuantity {
            value: Quantity::parse_exact(text)?,
            amount: Amount::parsed(text),
        })
    }

    fn int(n: i64) -> CelQuantity {
        CelQuantity {
            value: Quantity::int(n),
            amount: Some(Amount { value: n, scale: 0 }),
        }
    }

    fn plus(&self, other: &CelQuantity) -> CelQuantity {
        CelQuantity {
            value: self.value.add(&other.value),
            amount: self.amount.zip(other.amount).and_then(|(a, b)| a.add(b)),
        }
    }

    fn minus(&self, other: &CelQuantity) -> CelQuantity {
        let negated = other.amount.and_then(|b| {
            Some(Amount {
                value: b.value.checked_neg()?,
                scale: b.scale,
            })
        });
        CelQuantity {
            value: self.value.sub(&other.value),
            amount: self.amount.zip(negated).and_then(|(a, b)| a.add(b)),
        }
    }

    fn cmp(&self, other: &CelQuantity) -> Ordering {
        self.value.cmp_value(&other.value)
    }
}

impl Val for CelQuantity {
    fn get_type(&self) -> &Type {
        &QUANTITY_TYPE
    }

    fn cel_type() -> &'static Type {
        &QUANTITY_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other
            .downcast_ref::<CelQuantity>()
            .is_some_and(|o| self.cmp(o) == Ordering::Equal)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StaticVal for CelQuantity {}

pub fn library(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(QUANTITY_TYPE.to_owned())?;
    cel::add_overload!(
        env,
        fn to_quantity: (CelString) -> Result<CelQuantity>,
        name = "quantity",
        id = "string_to_quantity"
    )?;
    cel::add_overload!(env, fn is_quantity: (CelString) -> CelBool, id = "is_quantity_string")?;
    // Kubernetes declares `sign` as a global function; rules call it as a method too.
    cel::add_overload!(env, fn sign: (CelQuantity) -> CelInt, id = "quantity_sign")?;
    cel::add_member_overload!(env, fn sign: (CelQuantity) -> CelInt, id = "quantity_sign_member")?;
    cel::add_member_overload!(env, fn is_integer: (CelQuantity) -> CelBool, id = "quantity_is_integer")?;
    cel::add_member_overload!(
        env,
        fn as_integer: (CelQuantity) -> Result<CelInt>,
        id = "quantity_get_int"
    )?;
    cel::add_member_overload!(
        env,
        fn as_approximate_float: (CelQuantity) -> CelDouble,
        id = "quantity_get_float"
    )?;
    cel::add_member_overload!(
        env,
        fn add: (CelQuantity, CelQuantity) -> CelQuantity,
        id = "quantity_add"
    )?;
    cel::add_member_overload!(
        env,
        fn add_int: (CelQuantity, CelInt) -> CelQuantity,
        name = "add",
        id = "quantity_add_int"
    )?;
    cel::add_member_overload!(
        env,
        fn sub: (CelQuantity, CelQuantity) -> CelQuantity,
        id = "quantity_sub"
    )?;
    cel::add_member_overload!(
        env,
        fn sub_int: (CelQuantity, CelInt) -> CelQuantity,
        name = "sub",
        id = "quantity_sub_int"
    )?;
    cel::add_member_overload!(
        env,
        fn is_less_than: (CelQuantity, CelQuantity) -> CelBool,
        id = "quantity_is_less_than"
    )?;
    cel::add_member_overload!(
        env,
        fn is_greater_than: (CelQuantity, CelQuantity) -> CelBool,
        id = "quantity_is_greater_than"
    )?;
    cel::add_member_overload!(
        env,
        fn compare_to: (CelQuantity, CelQuantity) -> CelInt,
        id = "quantity_compare_to"
    )?;
    Ok(())
}

fn to_quantity(s: &CelString<'_>) -> Result<CelQuantity, ExecutionError> {
    CelQuantity::parse(s.inner()).map_err(|e| fail("quantity", e))
}

fn is_quantity(s: &CelString<'_>) -> CelBool {
    CelBool::from(CelQuantity::parse(s.inner()).is_ok())
}

fn sign(q: &CelQuantity) -> CelInt {
    CelInt::from(q.value.sign())
}

fn is_integer(q: &CelQuantity) -> CelBool {
    CelBool::from(q.amount.and_then(Amount::as_i64).is_some())
}

fn as_integer(q: &CelQuantity) -> Result<CelInt, ExecutionError> {
    q.amount
        .and_then(Amount::as_i64)
        .map(CelInt::from)
        .ok_or_else(|| fail("asInteger", "cannot convert value to integer"))
}

/// Go multiplies the int64 form by a power of ten; a big decimal is converted exactly.
fn as_approximate_float(q: &CelQuantity) -> CelDouble {
    let f = match q.amount {
        Some(Amount { value, scale: 0 }) => value as f64,
        Some(Amount { value, scale }) => {
            let power: f64 = format!("1e{scale}").parse().unwrap_or(f64::NAN);
            value as f64 * power
        }
        None => q.value.approximate_f64(),
    };
    CelDouble::from(f)
}

fn add(q: &CelQuantity, other: &CelQuantity) -> CelQuantity {
    q.plus(other)
}

fn add_int(q: &CelQuantity, n: &CelInt) -> CelQuantity {
    q.plus(&CelQuantity::int(*n.inner()))
}

fn sub(q: &CelQuantity, other: &CelQuantity) -> CelQuantity {
    q.minus(other)
}

fn sub_int(q: &CelQuantity, n: &CelInt) -> CelQuantity {
    q.minus(&CelQuantity::int(*n.inner()))
}

fn is_less_than(q: &CelQuantity, other: &CelQuantity) -> CelBool {
    CelBool::from(q.cmp(other) == Ordering::Less)
}

fn is_greater_than(q: &CelQuantity, other: &CelQuantity) -> CelBool {
    CelBool::from(q.cmp(other) == Ordering::Greater)
}

fn compare_to(q: &CelQuantity, other: &CelQuantity) -> CelInt {
    CelInt::from(match q.cmp(other) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eval, eval_err};
    use cel::Value;

    fn assert_true(expr: &str) {
        assert_eq!(eval(expr), Value::Bool(true), "{expr}");
    }

    #[test]
    fn parsing_follows_kubernetes() {
        for ok in [
            "20", "20M", "20Mi", "1.3G", "10000k", ".5", "1.G", "-1e3", "1E3", "0",
        ] {
            assert_true(&format!("isQuantity('{ok}')"));
        }
        for bad in ["20Mo", "10Mm", "200K", "Three", "1,3G", " 1", "1 ", ""] {
            assert_eq!(
                eval(&format!("isQuantity('{bad}')")),
                Value::Bool(false),
                "{bad}"
            );
        }
        assert!(
            eval_err("quantity('10Mo')")
                .starts_with("quantities must match the regular expression '^([+-]?[0-9.]+)")
        );
        assert_eq!(
            eval_err("quantity('10Mm')"),
            "unable to parse quantity's suffix"
        );
    }

    #[test]
    fn equality_and_comparison_are_by_value() {
        for expr in [
            "quantity('200M') == quantity('200M')",
            "quantity('200M') == quantity('0.2G') && quantity('0.2G') == quantity('200M')",
            "quantity('2M') == quantity('0.002G') && quantity('2000k') == quantity('2M')",
            "quantity('200M') != quantity('0.3G')",
            "quantity('50M').isLessThan(quantity('50Mi'))",
            "!quantity('100M').isLessThan(quantity('50M'))",
            "quantity('50Mi').isGreaterThan(quantity('50M'))",
            "!quantity('50M').isGreaterThan(quantity('100M'))",
            "quantity('200M').compareTo(quantity('0.2G')) == 0",
            "quantity('50M').compareTo(quantity('50Mi')) == -1",
            "quantity('50Mi').compareTo(quantity('50M')) == 1",
            // Below a nano, Kubernetes rounds up to one.
            "quantity('0.0000000001') == quantity('1n')",
            "quantity('-0.0000000001') == quantity('-1n')",
        ] {
            assert_true(expr);
        }
    }

    #[test]
    fn arithmetic() {
        for expr in [
            "quantity('50k').add(quantity('20')) == quantity('50.02k')",
            "!quantity('50k').add(20).isLessThan(quantity('50020'))",
            "quantity('50k').sub(quantity('20')) == quantity('49.98k')",
            "quantity('50k').sub(20) == quantity('49980')",
            "quantity('50k').add(20).sub(quantity('100k')).asInteger() == -49980",
            "quantity('50k').add(20).sub(quantity('100k')).sub(-50000).asInteger() == 20",
            "quantity('1').sign() == 1 && quantity('-1m').sign() == -1 && sign(quantity('0')) == 0",
        ] {
            assert_true(expr);
        }
    }

    #[test]
    fn integers_as_go_holds_them() {
        assert_eq!(eval("quantity('50k').asInteger()"), Value::Int(50000));
        assert_eq!(
            eval("quantity('50000000G').asInteger()"),
            Value::Int(50_000_000_000_000_000)
        );
        assert_eq!(eval("quantity('2Ki').asInteger()"), Value::Int(2048));
        for (text, integer) in [
            ("50", true),
            ("50k", true),
            ("-7", true),
            ("9999999999999999999999999999999999999G", false),
            // A negative scale, or a big decimal: not integers to Kubernetes.
            ("1000m", false),
            ("1.0", false),
            ("1.5Gi", false),
            ("0.5", false),
        ] {
            assert_eq!(
                eval(&format!("quantity('{text}').isInteger()")),
                Value::Bool(integer),
                "{text}"
            );
        }
        assert_eq!(
            eval_err("quantity('9999999999999999999999999999999999999G').asInteger()"),
            "cannot convert value to integer"
        );
        // Sums stay int64 amounts at the smaller scale, as in Go.
        assert_eq!(
            eval("quantity('1.5').add(quantity('0.5')).isInteger()"),
            Value::Bool(false)
        );
        assert_eq!(
            eval("quantity('1k').add(quantity('2')).asInteger()"),
            Value::Int(1002)
        );
    }

    #[test]
    fn floats() {
        assert_eq!(
            eval("quantity('50.703k').asApproximateFloat()"),
            Value::Float(50703.0)
        );
        assert_eq!(
            eval("quantity('50k').sub(20000).asApproximateFloat()"),
            Value::Float(30000.0)
        );
        assert_eq!(
            eval("quantity('1.5Gi').asApproximateFloat()"),
            Value::Float(1610612736.0)
        );
        assert_eq!(
            eval("quantity('100m').asApproximateFloat()"),
            Value::Float(0.1)
        );
    }
}
