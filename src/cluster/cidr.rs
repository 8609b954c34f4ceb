//! IPv4 CIDR blocks for the pod and service subnets: parsing with messages that help fix the
//! config, overlap checks, and picking addresses and per-node blocks out of a range.

// The pod CIDR allocator and service IP assignment will use the helpers; until then only the
// config validation and tests do.
#![allow(dead_code)]

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A network block such as `10.244.0.0/16`. Always normalized: no bits set after the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("\"{0}\" has no prefix length; write it as address/length, e.g. 10.244.0.0/16")]
    MissingPrefix(String),
    #[error("\"{0}\" is not an IPv4 address (IPv6 subnets are not supported)")]
    BadAddress(String),
    #[error("prefix length \"{0}\" must be a whole number from 0 to 32")]
    BadPrefix(String),
    #[error(
        "\"{input}\" has address bits set past the /{prefix_len} prefix; did you mean {network}?"
    )]
    HostBitsSet {
        input: String,
        prefix_len: u8,
        network: Ipv4Cidr,
    },
}

impl Ipv4Cidr {
    /// Refuses an address with bits set past the prefix rather than silently masking them:
    /// `10.244.1.0/16` is more likely a typo for `/24` than a way to write `10.244.0.0/16`.
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError::BadPrefix(prefix_len.to_string()));
        }
        let network = Ipv4Addr::from(u32::from(address) & mask(prefix_len));
        if network != address {
            return Err(CidrError::HostBitsSet {
                input: format!("{address}/{prefix_len}"),
                prefix_len,
                network: Self {
                    network,
                    prefix_len,
                },
            });
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Number of addresses in the block, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    fn last(&self) -> u32 {
        u32::from(self.network) | !mask(self.prefix_len)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// Aligned blocks either nest or are disjoint, so overlap means one holds the other's start.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The `n`th address of the block, counting the network address as 0 (so `nth(1)` of
    /// 10.96.0.0/16 is 10.96.0.1, the kubernetes service), or None past the end.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let ip = u32::from(self.network).checked_add(n)?;
        (ip <= self.last()).then(|| Ipv4Addr::from(ip))
    }

    /// The `index`th block of length `prefix_len` inside this one (a node's pod range out of
    /// the cluster's), or None if it is shorter than this block or past its end.
    pub fn subnet(&self, prefix_len: u8, index: u32) -> Option<Ipv4Cidr> {
        if prefix_len < self.prefix_len || prefix_len > 32 {
            return None;
        }
        let count_bits = u32::from(prefix_len - self.prefix_len);
        if count_bits < 32 && u64::from(index) >= 1u64 << count_bits {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix_len));
        let start = u64::from(u32::from(self.network)) + u64::from(index) * step;
        let network = Ipv4Addr::from(u32::try_from(start).ok()?);
        Some(Ipv4Cidr {
            network,
            prefix_len,
        })
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix(s.to_owned()))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| CidrError::BadAddress(address.to_owned()))?;
        // u8::from_str would take "+16"; only plain digits are a prefix length.
        let prefix_len = Some(prefix)
            .filter(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|&p| p <= 32)
            .ok_or_else(|| CidrError::BadPrefix(prefix.to_owned()))?;
        Self::new(address, prefix_len).map_err(|e| match e {
            CidrError::HostBitsSet {
                prefix_len,
                network,
                ..
            } => CidrError::HostBitsSet {
                input: s.to_owned(),
                prefix_len,
                network,
            },
            other => other,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Parsing inside the visitor, not after deserializing a String, makes serde_yaml
        // report the error at this field ("networking.podSubnet") instead of its parent.
        struct CidrVisitor;

        impl de::Visitor<'_> for CidrVisitor {
            type Value = Ipv4Cidr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 CIDR such as 10.244.0.0/16")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Ipv4Cidr, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CidrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        match s.parse() {
            Ok(c) => c,
            Err(e) => panic!("test CIDR {s}: {e}"),
        }
    }

    #[test]
    fn parses_and_displays() {
        let c = cidr("10.244.0.0/16");
        assert_eq!(c.network(), Ipv4Addr::new(10, 244, 0, 0));
        assert_eq!(c.prefix_len(), 16);
        assert_eq!(c.size(), 65536);
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert_eq!(cidr("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(cidr("192.168.1.7/32").size(), 1);
    }

    #[test]
    fn rejects_malformed_input_with_a_useful_message() {
        let err = |s: &str| match s.parse::<Ipv4Cidr>() {
            Ok(c) => panic!("{s} parsed as {c}"),
            Err(e) => e.to_string(),
        };
        assert!(err("10.244.0.0").contains("no prefix length"));
        assert!(err("10.244.0/16").contains("not an IPv4 address"));
        assert!(err("fd00::/8").contains("not an IPv4 address"));
        assert!(err("10.0.0.0/33").contains("0 to 32"));
        assert!(err("10.0.0.0/+8").contains("0 to 32"));
        assert!(err("10.0.0.0/").contains("0 to 32"));
        assert!(err("10.244.1.0/16").contains("did you mean 10.244.0.0/16?"));
    }

    #[test]
    fn contains_and_overlaps() {
        let pods = cidr("10.244.0.0/16");
        assert!(pods.contains(Ipv4Addr::new(10, 244, 255, 255)));
        assert!(!pods.contains(Ipv4Addr::new(10, 245, 0, 0)));
        assert!(pods.overlaps(&cidr("10.244.3.0/24")));
        assert!(cidr("10.244.3.0/24").overlaps(&pods));
        assert!(pods.overlaps(&cidr("10.0.0.0/8")));
        assert!(!pods.overlaps(&cidr("10.96.0.0/16")));
        assert!(cidr("0.0.0.0/0").overlaps(&pods));
    }

    #[test]
    fn nth_and_subnet_stay_inside_the_block() {
        let services = cidr("10.96.0.0/16");
        assert_eq!(services.nth(1), Some(Ipv4Addr::new(10, 96, 0, 1)));
        assert_eq!(services.nth(10), Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(services.nth(65535), Some(Ipv4Addr::new(10, 96, 255, 255)));
        assert_eq!(services.nth(65536), None);
        assert_eq!(cidr("255.255.255.255/32").nth(1), None);

        let pods = cidr("10.244.0.0/16");
        assert_eq!(pods.subnet(24, 0), Some(cidr("10.244.0.0/24")));
        assert_eq!(pods.subnet(24, 3), Some(cidr("10.244.3.0/24")));
        assert_eq!(pods.subnet(24, 255), Some(cidr("10.244.255.0/24")));
        assert_eq!(pods.subnet(24, 256), None);
        assert_eq!(pods.subnet(8, 0), None);
        assert_eq!(pods.subnet(33, 0), None);
        assert_eq!(
            cidr("0.0.0.0/0").subnet(32, u32::MAX),
            Some(cidr("255.255.255.255/32"))
        );
    }

    #[test]
    fn serializes_as_its_string() -> anyhow::Result<()> {
        let c = cidr("10.96.0.0/12");
        assert_eq!(serde_json::to_string(&c)?, "\"10.96.0.0/12\"");
        assert_eq!(serde_json::from_str::<Ipv4Cidr>("\"10.96.0.0/12\"")?, c);
        assert!(serde_json::from_str::<Ipv4Cidr>("\"10.96.0.1/12\"").is_err());
        Ok(())
    }
}
