//! Quantities and durations spelled as Go's apimachinery serialises them, so clients that
//! compare text (and people reading `kubectl get --raw`) see what metrics-server would send.

use std::time::Duration;

/// A CPU rate in nanocores as a canonical decimal quantity: `1234567n`, `250m`, `2`.
pub fn nano_cores(n: u64) -> String {
    decimal(n, 0)
}

/// Bytes as a canonical binary quantity: `12345Ki`, `3Mi`; an amount no power of 1024
/// divides stays plain bytes, and one below 1024 is written decimally (`1k`), as Kubernetes
/// canonicalises binary quantities.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return decimal(n, 3);
    }
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let (mut value, mut i) = (n, 0);
    while value % 1024 == 0 && i + 1 < SUFFIXES.len() {
        value /= 1024;
        i += 1;
    }
    format!("{value}{}", SUFFIXES[i])
}

/// `n` × 10^(3·(first − 3)): first = 0 for nano units, 3 for plain units.
fn decimal(n: u64, first: usize) -> String {
    const SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    if n == 0 {
        return "0".to_string();
    }
    let (mut value, mut i) = (n, first);
    while value % 1000 == 0 && i + 1 < SUFFIXES.len() {
        value /= 1000;
        i += 1;
    }
    format!("{value}{}", SUFFIXES[i])
}

/// Go's `time.Duration.String()` to the millisecond: `10s`, `10.974s`, `1m30s`, `500ms`.
pub fn go_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, minutes) = (millis / 3_600_000, millis / 60_000 % 60);
    let (seconds, frac) = (millis / 1000 % 60, millis % 1000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&seconds.to_string());
    if frac > 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_canonical_decimal() {
        assert_eq!(nano_cores(0), "0");
        assert_eq!(nano_cores(1_234_567), "1234567n");
        assert_eq!(nano_cores(250_000_000), "250m");
        assert_eq!(nano_cores(1_500_000_000), "1500m");
        assert_eq!(nano_cores(2_000_000_000), "2");
        assert_eq!(nano_cores(3_000), "3u");
    }

    #[test]
    fn memory_is_canonical_binary() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(1000), "1k");
        assert_eq!(bytes(12_345 * 1024), "12345Ki");
        assert_eq!(bytes(3 << 20), "3Mi");
        assert_eq!(bytes(12_345_678), "12345678");
        assert_eq!(bytes(4 << 30), "4Gi");
    }

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(10_974)), "10.974s");
        assert_eq!(go_duration(Duration::from_millis(20_500)), "20.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
