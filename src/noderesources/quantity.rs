//! Kubernetes quantities for node sizes: CPUs as `2`, `1.5` or `1500m`; memory as `4Gi`,
//! `512Mi`, `1G`, `1e9` or plain bytes. Exact integer arithmetic, so `1.1` CPUs is 1100m and
//! never 1099m.

/// Whole units and the decimal fraction (as digits) of a plain decimal number.
fn split_decimal(number: &str) -> Option<(u128, &str)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    Some((whole, fraction))
}

/// `number` × `scale`, which must come out whole (else the precision is too fine).
fn scaled(number: &str, scale: u128) -> Result<u128, &'static str> {
    let (whole, fraction) = split_decimal(number).ok_or("not a number")?;
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 18 {
        return Err("more precise than the unit allows");
    }
    let denominator = 10u128.pow(fraction.len() as u32);
    let numerator: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| "not a number")?
    };
    let fraction_scaled = numerator.checked_mul(scale).ok_or("too large")?;
    if fraction_scaled % denominator != 0 {
        return Err("more precise than the unit allows");
    }
    let value = whole
        .checked_mul(scale)
        .and_then(|v| v.checked_add(fraction_scaled / denominator))
        .ok_or("too large")?;
    Ok(value)
}

/// CPUs in millicores: `2` → 2000, `1.5` → 1500, `1500m` → 1500, `0.25` → 250.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = |why: &str| {
        format!(
            "{text:?} is not a CPU quantity ({why}); write whole or decimal CPUs (2, 1.5) or millicores (1500m)"
        )
    };
    let millis = match t.strip_suffix('m') {
        Some(m) => scaled(m, 1),
        None => scaled(t, 1000),
    }
    .map_err(bad)?;
    u64::try_from(millis).map_err(|_| bad("too large"))
}

const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL: [(&str, u32); 6] = [
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Memory in bytes: `4Gi`, `512Mi`, `1.5Gi`, `1G`, `1e9`, `1073741824`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = |why: &str| {
        format!(
            "{text:?} is not a memory quantity ({why}); write bytes with a suffix such as 512Mi, 4Gi or 2G"
        )
    };
    let result = if let Some((suffix, shift)) = BINARY.iter().find(|(s, _)| t.ends_with(s)) {
        scaled(&t[..t.len() - suffix.len()], 1u128 << shift)
    } else if let Some((suffix, exp)) = DECIMAL.iter().find(|(s, _)| t.ends_with(s)) {
        scaled(&t[..t.len() - suffix.len()], 10u128.pow(*exp))
    } else if let Some((mantissa, exp)) = t.split_once(['e', 'E']) {
        let exp: u32 = exp.parse().map_err(|_| bad("bad exponent"))?;
        if exp > 18 {
            return Err(bad("too large"));
        }
        scaled(mantissa, 10u128.pow(exp))
    } else if t.ends_with(|c: char| c.is_ascii_alphabetic()) {
        Err("unknown suffix")
    } else {
        // A plain number of bytes; a fraction of a byte is meaningless.
        scaled(t, 1)
    };
    let bytes = result.map_err(bad)?;
    u64::try_from(bytes).map_err(|_| bad("too large"))
}

/// CPUs as a person reads them: `2`, `1.5`, `0.25`.
pub fn format_cpus(millis: u64) -> String {
    let whole = millis / 1000;
    let frac = millis % 1000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Memory in the largest binary unit that divides it: `4Gi`, `1536Mi`, else bytes.
pub fn format_bytes(bytes: u64) -> String {
    for (suffix, shift) in BINARY.iter().rev() {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_in_every_spelling() {
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_cpu_millis("1.1"), Ok(1100));
        assert_eq!(parse_cpu_millis(".5"), Ok(500));
        assert_eq!(parse_cpu_millis("1500m"), Ok(1500));
        assert_eq!(parse_cpu_millis("0.001"), Ok(1));
        assert!(parse_cpu_millis("0.0005").is_err());
        assert!(parse_cpu_millis("1.5m").is_err());
        assert!(parse_cpu_millis("two").is_err());
        assert!(parse_cpu_millis("-1").is_err());
        assert!(parse_cpu_millis("").is_err());
        assert!(parse_cpu_millis("2Gi").is_err());
    }

    #[test]
    fn memory_in_every_spelling() {
        assert_eq!(parse_bytes("4Gi"), Ok(4 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("128k"), Ok(128_000));
        assert!(parse_bytes("1.5").is_err(), "a fraction of a byte");
        assert!(parse_bytes("4GB").is_err());
        assert!(parse_bytes("4 gigs").is_err());
        assert!(parse_bytes("-1Gi").is_err());
        assert!(parse_bytes("99999Ei").is_err());
    }

    #[test]
    fn formats_read_back() {
        assert_eq!(format_cpus(2000), "2");
        assert_eq!(format_cpus(1500), "1.5");
        assert_eq!(format_cpus(250), "0.25");
        assert_eq!(format_bytes(4 << 30), "4Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        for m in [1, 250, 1500, 2000] {
            assert_eq!(parse_cpu_millis(&format_cpus(m)), Ok(m));
        }
    }
}
