//! Resource quantities (`500m`, `1Gi`, `2e3`): parsing, comparison, and the canonical form the
//! API server writes back (`0.5` becomes `500m`, `1024Mi` becomes `1Gi`, a bare `1` becomes "1").

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// value = mantissa × 10^exponent, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
    pub format: Format,
}

pub const REGEX_MESSAGE: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Kubernetes' error for a quantity whose shape is right but whose suffix is unknown (`10Mm`).
pub const SUFFIX_MESSAGE: &str = "unable to parse quantity's suffix";

/// Kubernetes' error for a number it cannot hold; here, one beyond an i128 mantissa.
pub const NUMERIC_MESSAGE: &str = "unable to parse numeric part of quantity";

/// A quantity's text as Kubernetes' scanner (`parseQuantityString`) splits it: sign, whole
/// digits without leading zeros (`"0"` when none are left), fraction digits, suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned<'a> {
    pub negative: bool,
    pub num: &'a str,
    pub denom: &'a str,
    pub suffix: &'a str,
}

/// Splits `text` as Kubernetes does, refusing what it refuses with its message. The scanner
/// is lenient where Kubernetes' is: `1.G`, `.5` and even `.` and `+` (zero) pass.
pub fn scan(text: &str) -> Result<Scanned<'_>, &'static str> {
    if text.is_empty() {
        return Err(REGEX_MESSAGE);
    }
    let (negative, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let body = body.trim_start_matches('0');
    let digits_end = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, rest) = body.split_at(digits_end(body));
    let (denom, suffix) = match rest.strip_prefix('.') {
        Some(after) => after.split_at(digits_end(after)),
        None => ("", rest),
    };
    // The suffix: letters of `eEinumkKMGTP`, then an optionally signed exponent.
    let letters = suffix
        .find(|c: char| !"eEinumkKMGTP".contains(c))
        .unwrap_or(suffix.len());
    let exponent = suffix[letters..]
        .strip_prefix(['+', '-'])
        .unwrap_or(&suffix[letters..]);
    if !exponent.bytes().all(|b| b.is_ascii_digit()) {
        return Err(REGEX_MESSAGE);
    }
    Ok(Scanned {
        negative,
        num: if num.is_empty() { "0" } else { num },
        denom,
        suffix,
    })
}

/// What a suffix means to Kubernetes (`quantitySuffixer.interpret`): base (10 or 2), its
/// exponent, and the format it gives.
pub fn interpret_suffix(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = [
        ("n", -9),
        ("u", -6),
        ("m", -3),
        ("", 0),
        ("k", 3),
        ("M", 6),
        ("G", 9),
        ("T", 12),
        ("P", 15),
        ("E", 18),
    ];
    if let Some((_, e)) = decimal.iter().find(|(s, _)| *s == suffix) {
        return Some((10, *e, Format::DecimalSI));
    }
    let binary = [
        ("Ki", 10),
        ("Mi", 20),
        ("Gi", 30),
        ("Ti", 40),
        ("Pi", 50),
        ("Ei", 60),
    ];
    if let Some((_, e)) = binary.iter().find(|(s, _)| *s == suffix) {
        return Some((2, *e, Format::BinarySI));
    }
    let exponent = suffix.strip_prefix(['e', 'E'])?;
    let e: i64 = exponent.parse().ok()?;
    Some((10, i32::try_from(e).ok()?, Format::DecimalExponent))
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Quantity {
    pub fn parse(text: &str) -> Option<Quantity> {
        let s = text.trim();
        if s.is_empty() {
            return None;
        }
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{int_part}{frac_part}");
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut exponent = -(frac_part.len() as i32);
        let mut format = Format::DecimalSI;
        let mut binary_power: u32 = 0;
        match suffix {
            "" => {}
            "n" => exponent -= 9,
            "u" => exponent -= 6,
            "m" => exponent -= 3,
            "k" => exponent += 3,
            "M" => exponent += 6,
            "G" => exponent += 9,
            "T" => exponent += 12,
            "P" => exponent += 15,
            "E" => exponent += 18,
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                format = Format::BinarySI;
                binary_power = match suffix {
                    "Ki" => 1,
                    "Mi" => 2,
                    "Gi" => 3,
                    "Ti" => 4,
                    "Pi" => 5,
                    _ => 6,
                };
            }
            other if other.starts_with(['e', 'E']) => {
                let e: i32 = other[1..].parse().ok()?;
                if !(-100..=100).contains(&e) {
                    return None;
                }
                exponent += e;
                format = Format::DecimalExponent;
            }
            _ => return None,
        }
        if binary_power > 0 {
            mantissa = mantissa.checked_mul(1024i128.checked_pow(binary_power)?)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        Some(
            Quantity {
                mantissa,
                exponent,
                format,
            }
            .normalized(),
        )
    }

    /// `text` read exactly as Kubernetes' `ParseQuantity` reads it: no surrounding blanks, its
    /// errors, values below a nano rounded away from zero to one, binary ones capped at the
    /// largest int64.
    pub fn parse_exact(text: &str) -> Result<Quantity, &'static str> {
        let scanned = scan(text)?;
        let (_, _, format) = interpret_suffix(scanned.suffix).ok_or(SUFFIX_MESSAGE)?;
        // The scanner's parts, spelt so that `parse` takes them (`.` is `0.`).
        let sign = if scanned.negative { "-" } else { "" };
        let spelt = format!("{sign}{}.{}{}", scanned.num, scanned.denom, scanned.suffix);
        let mut q = Quantity::parse(&spelt).ok_or(NUMERIC_MESSAGE)?;
        if q.exponent < -9 {
            let magnitude = Quantity {
                mantissa: q.mantissa.abs(),
                ..q
            }
            .round_up(-9);
            q.mantissa = magnitude.mantissa * q.mantissa.signum();
            q.exponent = magnitude.exponent;
        }
        if format == Format::BinarySI
            && q.cmp_value(&Quantity::int(i64::MAX)).is_gt()
            && !q.is_negative()
        {
            q = Quantity::binary(i64::MAX);
        } else if format == Format::BinarySI && q.cmp_value(&Quantity::int(-i64::MAX)).is_lt() {
            q = Quantity::binary(-i64::MAX);
        }
        Ok(q)
    }

    /// -1, 0 or 1, as the value is negative, zero or positive.
    pub fn sign(&self) -> i64 {
        self.mantissa.signum() as i64
    }

    /// The value as a float, rounded once (Kubernetes' AsApproximateFloat64 may be an ulp
    /// off this); infinite beyond the range of a float.
    pub fn approximate_f64(&self) -> f64 {
        format!("{}e{}", self.mantissa, self.exponent)
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// Quantities may be sent as JSON numbers (`cpu: 1` in YAML).
    pub fn from_json(v: &Value) -> Option<Quantity> {
        match v {
            Value::String(s) => Quantity::parse(s),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    fn normalized(mut self) -> Self {
        if self.mantissa == 0 {
            self.exponent = 0;
            return self;
        }
        while self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.exponent += 1;
        }
        self
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// Rounds up to a multiple of 10^scale (Kubernetes rounds resource lists to milli units).
    pub fn round_up(mut self, scale: i32) -> Self {
        if self.exponent >= scale {
            return self;
        }
        let Some(div) = pow10((scale - self.exponent) as u32) else {
            // Far below the scale: the smallest positive unit, or zero.
            self.mantissa = self.mantissa.signum().max(0);
            self.exponent = scale;
            return self.normalized();
        };
        let q = self.mantissa.div_euclid(div);
        let r = self.mantissa.rem_euclid(div);
        self.mantissa = if r != 0 { q + 1 } else { q };
        self.exponent = scale;
        self.normalized()
    }

    /// `self` compared with `other`.
    pub fn cmp_value(&self, other: &Quantity) -> std::cmp::Ordering {
        let e = self.exponent.min(other.exponent);
        let scale = |q: &Quantity| -> Option<i128> {
            q.mantissa.checked_mul(pow10((q.exponent - e) as u32)?)
        };
        match (scale(self), scale(other)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Beyond i128: compare by magnitude of exponent, a good enough answer for limits.
            _ => (self.exponent + digits(self.mantissa))
                .cmp(&(other.exponent + digits(other.mantissa))),
        }
    }

    /// Kubernetes' canonical string for this quantity.
    pub fn canonical(&self) -> String {
        if self.mantissa == 0 {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySI {
            let small = self.cmp_value(&Quantity::int(1024)).is_lt()
                && self.cmp_value(&Quantity::int(-1024)).is_gt();
            if small || self.exponent < 0 {
                format = Format::DecimalSI;
            }
        }
        match format {
            Format::BinarySI => {
                let Some(mut value) =
                    pow10(self.exponent as u32).and_then(|p| self.mantissa.checked_mul(p))
                else {
                    return self.decimal(Format::DecimalSI);
                };
                let mut power = 0;
                while power < 6 && value % 1024 == 0 {
                    value /= 1024;
                    power += 1;
                }
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
                format!("{value}{suffix}")
            }
            other => self.decimal(other),
        }
    }

    fn decimal(&self, format: Format) -> String {
        // The exponent goes to the next multiple of 3 at or below it, so the mantissa stays whole.
        let mut exponent = self.exponent;
        let mut mantissa = self.mantissa;
        let rem = exponent.rem_euclid(3);
        if rem != 0 {
            mantissa = mantissa.saturating_mul(10i128.pow(rem as u32));
            exponent -= rem;
        }
        if format == Format::DecimalExponent {
            return if exponent == 0 {
                mantissa.to_string()
            } else {
                format!("{mantissa}e{exponent}")
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            e if e > 18 => {
                // Larger than exa: Kubernetes keeps the E suffix with a bigger mantissa.
                let extra = (e - 18) as u32;
                return format!("{}E", mantissa.saturating_mul(10i128.pow(extra)));
            }
            _ => {
                // Below nano: Kubernetes rounds up to nano units.
                let q = Quantity {
                    mantissa,
                    exponent,
                    format,
                }
                .round_up(-9);
                return q.decimal(format);
            }
        };
        format!("{mantissa}{suffix}")
    }

    /// The exact sum (saturating far beyond any real resource amount); the format of `self`
    /// is kept unless it is zero, as Kubernetes' Quantity.Add does.
    pub fn add(&self, other: &Quantity) -> Quantity {
        if self.is_zero() {
            return *other;
        }
        let e = self.exponent.min(other.exponent);
        let scale = |q: &Quantity| -> i128 {
            pow10((q.exponent - e) as u32)
                .and_then(|p| q.mantissa.checked_mul(p))
                .unwrap_or(i128::MAX / 4)
        };
        Quantity {
            mantissa: scale(self).saturating_add(scale(other)),
            exponent: e,
            format: self.format,
        }
        .normalized()
    }

    /// The exact difference, `self - other`, in `self`'s format (Quantity.Sub).
    pub fn sub(&self, other: &Quantity) -> Quantity {
        let negated = Quantity {
            mantissa: -other.mantissa,
            ..*other
        };
        if self.is_zero() {
            return Quantity {
                format: self.format,
                ..negated
            };
        }
        self.add(&negated)
    }

    /// Thousandths of the value, rounded up (Kubernetes' MilliValue).
    pub fn milli_value(&self) -> i128 {
        let q = self.round_up(-3);
        let shift = q.exponent + 3;
        pow10(shift.max(0) as u32)
            .and_then(|p| q.mantissa.checked_mul(p))
            .unwrap_or(i128::MAX)
    }

    /// `v` thousandths, as resource.NewMilliQuantity(v, DecimalSI).
    pub fn from_milli(v: i64) -> Quantity {
        Quantity {
            mantissa: v as i128,
            exponent: -3,
            format: Format::DecimalSI,
        }
        .normalized()
    }

    /// `v` billionths, as resource.NewScaledQuantity(v, Nano) (CPU rates in nanocores).
    pub fn from_nano(v: i64) -> Quantity {
        Quantity {
            mantissa: v as i128,
            exponent: -9,
            format: Format::DecimalSI,
        }
        .normalized()
    }

    /// `v` in binary-suffixed form, as resource.NewQuantity(v, BinarySI) (memory in bytes).
    pub fn binary(v: i64) -> Quantity {
        Quantity {
            mantissa: v as i128,
            exponent: 0,
            format: Format::BinarySI,
        }
        .normalized()
    }

    pub fn int(v: i64) -> Quantity {
        Quantity {
            mantissa: v as i128,
            exponent: 0,
            format: Format::DecimalSI,
        }
        .normalized()
    }
}

fn digits(mut n: i128) -> i32 {
    let mut d = 0;
    while n != 0 {
        n /= 10;
        d += 1;
    }
    d
}

/// Rewrites every value of a ResourceList (`{"cpu": "0.5"}`) in canonical form, rounded up to
/// milli units as Kubernetes' defaulting does. Unparseable values are left for validation.
pub fn canonicalize_list(list: &mut Value) {
    let Some(map) = list.as_object_mut() else {
        return;
    };
    for v in map.values_mut() {
        if let Some(q) = Quantity::from_json(v) {
            *v = Value::String(q.round_up(-3).canonical());
        }
    }
}

/// Canonical form of one quantity, without rounding.
pub fn canonicalize(v: &mut Value) {
    if let Some(q) = Quantity::from_json(v) {
        *v = Value::String(q.canonical());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s).unwrap().round_up(-3).canonical()
    }

    #[test]
    fn canonical_forms_match_kubernetes() {
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1"), "1");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("1500m"), "1500m");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1536Mi"), "1536Mi");
        assert_eq!(canon("0.5Gi"), "512Mi");
        assert_eq!(canon("512"), "512");
        assert_eq!(canon("1000"), "1k");
        assert_eq!(canon("128974848"), "128974848");
        assert_eq!(canon("129e6"), "129e6");
        assert_eq!(canon("129M"), "129M");
        assert_eq!(canon("0.0001"), "1m");
        assert_eq!(canon("100Mi"), "100Mi");
        assert_eq!(canon("1.5"), "1500m");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("10G"), "10G");
        assert!(Quantity::parse("abc").is_none());
        assert!(Quantity::parse("1Qi").is_none());
        assert!(Quantity::parse("1.2.3").is_none());
    }

    #[test]
    fn comparisons() {
        let a = Quantity::parse("500m").unwrap();
        let b = Quantity::parse("1").unwrap();
        assert!(a.cmp_value(&b).is_lt());
        let c = Quantity::parse("1Gi").unwrap();
        let d = Quantity::parse("1G").unwrap();
        assert!(c.cmp_value(&d).is_gt());
    }
}
