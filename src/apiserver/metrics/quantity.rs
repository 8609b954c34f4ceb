//! Quantities and durations spelled as Go's apimachinery serialises them, so clients that
//! compare text (and people reading `kubectl get --raw`) see what metrics-server would send.

use std::time::Duration;

use crate::apiserver::kinds::quantity::Quantity;

/// A CPU rate in nanocores as a canonical decimal quantity: `1234567n`, `250m`, `2`.
pub fn nano_cores(n: u64) -> String {
    Quantity::from_nano(i64::try_from(n).unwrap_or(i64::MAX)).canonical()
}

/// Bytes as a canonical binary quantity: `12345Ki`, `3Mi`; an amount no power of 1024
/// divides stays plain bytes, and one below 1024 is written decimally (`1k`), as Kubernetes
/// canonicalises binary quantities.
pub fn bytes(n: u64) -> String {
    Quantity::binary(i64::try_from(n).unwrap_or(i64::MAX)).canonical()
}

/// Go's `time.Duration.String()` to the millisecond: `10s`, `10.974s`, `1m30s`, `500ms`.
pub fn go_duration(d: Duration) -> String {
    crate::apiserver::schema::gofmt::duration_millis(d)
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
