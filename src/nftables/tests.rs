//! Unit tests of the encoder against nft's own bytes.
//!
//! FIXTURE is what `nft --debug=mnl -f fx.nft` (nftables 1.0.6, in `unshare -n`) sent for this
//! file, message by message, without the batch markers (its messages' bodies after the nlmsghdr:
//! nfgenmsg, then attributes):
//!
//! table ip kcluster {
//!   map service-ips {
//!     type ipv4_addr . inet_proto . inet_service : verdict
//!   }
//!   set affinity {
//!     type ipv4_addr
//!     flags dynamic,timeout
//!     timeout 3h
//!   }
//!   chain nat-prerouting {
//!     type nat hook prerouting priority -100; policy accept;
//!     ip daddr . meta l4proto . th dport vmap @service-ips
//!   }
//!   chain filter-input {
//!     type filter hook input priority 0; policy drop;
//!     ct state new fib daddr type local ip daddr . meta l4proto . th dport vmap @service-ips
//!   }
//!   chain svc {
//!     ip daddr 10.96.0.10 ip saddr != 10.16.0.0/12 jump mark-for-masq
//!     ip saddr @affinity goto ep1
//!     numgen random mod 2 vmap { 0 : goto ep1, 1 : goto ep2 }
//!   }
//!   chain ep1 {
//!     ip saddr 10.0.0.1 jump mark-for-masq
//!     update @affinity { ip saddr }
//!     meta l4proto tcp dnat to 10.0.0.1:80
//!   }
//!   chain ep2 {
//!     update @affinity { ip saddr timeout 10s }
//!   }
//!   chain mark-for-masq {
//!     meta mark set meta mark or 0x4000
//!   }
//!   chain masquerading {
//!     meta mark and 0x4000 == 0 return
//!     meta mark set meta mark xor 0x4000
//!     masquerade fully-random
//!   }
//!   chain misc {
//!     fib saddr type local ip daddr != 127.0.0.0/8 th dport 53 ip daddr @affinity counter accept
//!     ip saddr 10.0.0.3 drop
//!     reject
//!   }
//! }
//! add element ip kcluster service-ips { 10.96.0.10 . tcp . 80 : goto svc }
//! add element ip kcluster affinity { 10.9.9.9 timeout 30s }
//! delete element ip kcluster service-ips { 10.96.0.10 . tcp . 80 }
//! flush chain ip kcluster misc
//! delete chain ip kcluster misc
//! flush set ip kcluster affinity
//! delete set ip kcluster affinity
//! delete table ip kcluster
//!
//! The comparison is attribute by attribute, after three normalizations that do not change what
//! the kernel does: nft's NFTA_*_USERDATA (its own notes for `nft list`) is dropped; attributes
//! of one nest are compared sorted by type (nft's order is libnftnl's, not the kernel's concern);
//! a bitwise NFTA_BITWISE_OP of 0 (NFT_BITWISE_BOOL, the kernel's default), which nft sends for
//! some statements and not for others, counts as absent. Where nothing differs, bytes are equal.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::netlink::{self, Attr};
use super::rule::*;
use super::*;

const NEWTABLE: u16 = 0;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const DELCHAIN: u16 = 5;
const NEWRULE: u16 = 6;
const DELRULE: u16 = 8;
const NEWSET: u16 = 9;
const DELSET: u16 = 11;
const NEWSETELEM: u16 = 12;
const DELSETELEM: u16 = 14;

#[rustfmt::skip]
const FIXTURE: &[(u16, &str)] = &[
    // NEWTABLE
    (NEWTABLE, "020000000d0001006b636c7573746572000000000800020000000000"),
    // NEWCHAIN
    (NEWCHAIN, concat!(
        "020000000d0001006b636c757374657200000000130003006e61742d707265726f7574696e670000080007006e617400",
        "080005000000000114000480080001000000000008000200ffffff9c",
    )),
    // NEWCHAIN
    (NEWCHAIN, concat!(
        "020000000d0001006b636c7573746572000000001100030066696c7465722d696e707574000000000b00070066696c74",
        "6572000008000500000000001400048008000100000000010800020000000000",
    )),
    // NEWCHAIN
    (NEWCHAIN, "020000000d0001006b636c7573746572000000000800030073766300"),
    // NEWCHAIN
    (NEWCHAIN, "020000000d0001006b636c7573746572000000000800030065703100"),
    // NEWCHAIN
    (NEWCHAIN, "020000000d0001006b636c7573746572000000000800030065703200"),
    // NEWCHAIN
    (NEWCHAIN, "020000000d0001006b636c757374657200000000120003006d61726b2d666f722d6d617371000000"),
    // NEWCHAIN
    (NEWCHAIN, "020000000d0001006b636c757374657200000000110003006d6173717565726164696e6700000000"),
    // NEWCHAIN
    (NEWCHAIN, "020000000d0001006b636c757374657200000000090003006d69736300000000"),
    // NEWSET
    (NEWSET, concat!(
        "020000000d0001006b636c75737465720000000010000200736572766963652d69707300080003000000000808000400",
        "0000730d080005000000000c08000600ffffff00080007000000000008000a000000000120000d000004000000000104",
        "00000000030800040d0000000100060400000000",
    )),
    // NEWSET
    (NEWSET, concat!(
        "020000000d0001006b636c7573746572000000000d000200616666696e69747900000000080003000000003008000400",
        "00000007080005000000000408000a00000000020c000b000000000000a4cb800a000d000004020000000000",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000130002006e61742d707265726f7574696e670000cc00048034000180",
        "0c0001007061796c6f616400240002800800010000000001080002000000000108000300000000100800040000000004",
        "24000180090001006d657461000000001400028008000200000000100800010000000009340001800c0001007061796c",
        "6f61640024000280080001000000000a0800020000000002080003000000000208000400000000023c0001800b000100",
        "6c6f6f6b757000002c0002800800020000000001080003000000000010000100736572766963652d6970730008000400",
        "00000001",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c7573746572000000001100020066696c7465722d696e70757400000000b001048020000180",
        "07000100637400001400028008000200000000000800010000000001440001800c000100626974776973650034000280",
        "0800010000000001080002000000000108000300000000040c00048008000100080000000c0005800800010000000000",
        "2c00018008000100636d700020000280080001000000000108000200000000010c000380080001000000000028000180",
        "08000100666962001c0002800800030000000002080002000000000308000100000000012c00018008000100636d7000",
        "20000280080001000000000108000200000000000c0003800800010002000000340001800c0001007061796c6f616400",
        "24000280080001000000000108000200000000010800030000000010080004000000000424000180090001006d657461",
        "000000001400028008000200000000100800010000000009340001800c0001007061796c6f6164002400028008000100",
        "0000000a0800020000000002080003000000000208000400000000023c0001800b0001006c6f6f6b757000002c000280",
        "0800020000000001080003000000000010000100736572766963652d697073000800040000000001",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c75737465720000000008000200737663004c010480340001800c0001007061796c6f616400",
        "2400028008000100000000010800020000000001080003000000001008000400000000042c00018008000100636d7000",
        "20000280080001000000000108000200000000000c000380080001000a60000a340001800c0001007061796c6f616400",
        "2400028008000100000000010800020000000001080003000000000c0800040000000004440001800c00010062697477",
        "69736500340002800800010000000001080002000000000108000300000000040c00048008000100fff000000c000580",
        "08000100000000002c00018008000100636d700020000280080001000000000108000200000000010c00038008000100",
        "0a100000440001800e000100696d6d656469617465000000300002800800010000000000240002802000028008000100",
        "fffffffd120002006d61726b2d666f722d6d617371000000",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c7573746572000000000800020073766300a4000480340001800c0001007061796c6f616400",
        "2400028008000100000000010800020000000001080003000000000c0800040000000004340001800b0001006c6f6f6b",
        "757000002400028008000200000000010d000100616666696e697479000000000800040000000002380001800e000100",
        "696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffc0800020065703100",
    )),
    // NEWSET
    (NEWSET, concat!(
        "020000000d0001006b636c7573746572000000000c0002005f5f6d6170256400080003000000000b0800040000000004",
        "080005000000000408000600ffffff00080007000000000008000a00000000030c000980080001000000000220000d00",
        "00040100000001040000000004080004010000000100060400000000",
    )),
    // NEWSETELEM
    (NEWSETELEM, concat!(
        "020000000d0001006b636c7573746572000000000c0002005f5f6d617025640008000400000000035400038028000180",
        "0c0001800800010000000000180002801400028008000100fffffffc0800020065703100280002800c00018008000100",
        "01000000180002801400028008000100fffffffc0800020065703200",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000080002007376630070000480340001800b0001006e756d67656e0000",
        "240002800800010000000001080002000000000208000300000000010800040000000000380001800b0001006c6f6f6b",
        "7570000028000280080002000000000108000300000000000c0001005f5f6d61702564000800040000000003",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c7573746572000000000800020065703100a8000480340001800c0001007061796c6f616400",
        "2400028008000100000000010800020000000001080003000000000c08000400000000042c00018008000100636d7000",
        "20000280080001000000000108000200000000000c000380080001000a000001440001800e000100696d6d6564696174",
        "65000000300002800800010000000000240002802000028008000100fffffffd120002006d61726b2d666f722d6d6173",
        "71000000",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000080002006570310074000480340001800c0001007061796c6f616400",
        "2400028008000100000000010800020000000001080003000000000c08000400000000043c0001800b00010064796e73",
        "657400002c000280080004000000000108000300000000010d000100616666696e697479000000000800020000000002",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c7573746572000000000800020065703100e400048024000180090001006d65746100000000",
        "14000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200",
        "000000000c00038005000100060000002c0001800e000100696d6d656469617465000000180002800800010000000001",
        "0c000280080001000a0000012c0001800e000100696d6d6564696174650000001800028008000100000000020c000280",
        "060001000050000038000180080001006e6174002c000280080001000000000108000200000000020800030000000001",
        "08000500000000020800070000000002",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000080002006570320080000480340001800c0001007061796c6f616400",
        "2400028008000100000000010800020000000001080003000000000c0800040000000004480001800b00010064796e73",
        "6574000038000280080004000000000108000300000000010c00060000000000000027100d000100616666696e697479",
        "000000000800020000000002",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000120002006d61726b2d666f722d6d6173710000009800048024000180",
        "090001006d6574610000000014000280080002000000000308000100000000014c0001800c0001006269747769736500",
        "3c00028008000100000000010800020000000001080006000000000008000300000000040c00048008000100ffbfffff",
        "0c000580080001000040000024000180090001006d657461000000001400028008000200000000030800030000000001",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000110002006d6173717565726164696e6700000000d000048024000180",
        "090001006d6574610000000014000280080002000000000308000100000000014c0001800c0001006269747769736500",
        "3c00028008000100000000010800020000000001080006000000000008000300000000040c0004800800010000400000",
        "0c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000000c000380",
        "0800010000000000300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c000280",
        "08000100fffffffb",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000110002006d6173717565726164696e67000000009800048024000180",
        "090001006d6574610000000014000280080002000000000308000100000000014c0001800c0001006269747769736500",
        "3c00028008000100000000010800020000000001080006000000000008000300000000040c00048008000100ffffffff",
        "0c000580080001000040000024000180090001006d657461000000001400028008000200000000030800030000000001",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000110002006d6173717565726164696e6700000000200004801c000180",
        "090001006d617371000000000c0002800800010000000010",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000090002006d69736300000000c4010480280001800800010066696200",
        "1c0002800800030000000001080002000000000308000100000000012c00018008000100636d70002000028008000100",
        "0000000108000200000000000c0003800800010002000000340001800c0001007061796c6f6164002400028008000100",
        "000000010800020000000001080003000000001008000400000000012c00018008000100636d70002000028008000100",
        "0000000108000200000000010c000380050001007f000000340001800c0001007061796c6f6164002400028008000100",
        "000000010800020000000002080003000000000208000400000000022c00018008000100636d70002000028008000100",
        "0000000108000200000000000c0003800600010000350000340001800c0001007061796c6f6164002400028008000100",
        "00000001080002000000000108000300000000100800040000000004340001800b0001006c6f6f6b7570000024000280",
        "08000200000000010d000100616666696e697479000000000800040000000002140001800c000100636f756e74657200",
        "04000280300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c00028008000100",
        "00000001",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000090002006d6973630000000094000480340001800c0001007061796c",
        "6f6164002400028008000100000000010800020000000001080003000000000c08000400000000042c00018008000100",
        "636d700020000280080001000000000108000200000000000c000380080001000a000003300001800e000100696d6d65",
        "64696174650000001c0002800800010000000000100002800c0002800800010000000000",
    )),
    // NEWRULE
    (NEWRULE, concat!(
        "020000000d0001006b636c757374657200000000090002006d6973630000000028000480240001800b00010072656a65",
        "637400001400028008000100000000000500020003000000",
    )),
    // NEWSETELEM
    (NEWSETELEM, concat!(
        "020000000d0001006b636c75737465720000000010000200736572766963652d69707300080004000000000134000380",
        "3000018014000180100001000a60000a0600000000500000180002801400028008000100fffffffc0800020073766300",
    )),
    // NEWSETELEM
    (NEWSETELEM, concat!(
        "020000000d0001006b636c7573746572000000000d000200616666696e69747900000000080004000000000220000380",
        "1c0001800c00040000000000000075300c000180080001000a090909",
    )),
    // DELSETELEM
    (DELSETELEM, concat!(
        "020000000d0001006b636c75737465720000000010000200736572766963652d697073001c0003801800018014000180",
        "100001000a60000a0600000000500000",
    )),
    // DELRULE
    (DELRULE, "020000000d0001006b636c757374657200000000090002006d69736300000000"),
    // DELCHAIN
    (DELCHAIN, "020000000d0001006b636c757374657200000000090003006d69736300000000"),
    // DELSETELEM
    (DELSETELEM, "020000000d000200616666696e697479000000000d0001006b636c757374657200000000"),
    // DELSET
    (DELSET, "020000000d0001006b636c7573746572000000000d000200616666696e69747900000000"),
    // DELTABLE
    (DELTABLE, "020000000d0001006b636c757374657200000000"),
];

const T: &str = "kcluster";
const F: Family = Family::Ip;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// fx.nft, built with this module's API in the order nft sends it.
fn fixture_batch() -> Batch {
    let mut b = Batch::new();
    b.add_table(F, T);
    let nat_pre = BaseChain {
        kind: ChainType::Nat,
        hook: Hook::Prerouting,
        priority: -100,
        policy: Policy::Accept,
    };
    b.add_chain(F, T, "nat-prerouting", Some(&nat_pre));
    let filter_in = BaseChain {
        kind: ChainType::Filter,
        hook: Hook::Input,
        priority: 0,
        policy: Policy::Drop,
    };
    b.add_chain(F, T, "filter-input", Some(&filter_in));
    for c in ["svc", "ep1", "ep2", "mark-for-masq", "masquerading", "misc"] {
        b.add_chain(F, T, c, None);
    }
    b.add_set(
        F,
        T,
        &Set {
            name: "service-ips".into(),
            key: vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
            data: Some(vec![DataType::Verdict]),
            flags: SetFlags::default(),
            timeout: None,
        },
    );
    b.add_set(
        F,
        T,
        &Set {
            name: "affinity".into(),
            key: vec![DataType::Ipv4Addr],
            data: None,
            flags: SetFlags {
                timeout: true,
                dynamic: true,
                ..Default::default()
            },
            timeout: Some(Duration::from_secs(3 * 3600)),
        },
    );
    // ip daddr . meta l4proto . th dport vmap @service-ips
    b.add_rule(
        F,
        T,
        "nat-prerouting",
        vmap_daddr_proto_dport("service-ips"),
    );
    // ct state new fib daddr type local ip daddr . meta l4proto . th dport vmap @service-ips
    b.add_rule(
        F,
        T,
        "filter-input",
        [
            ct_state_new(),
            fib_daddr_type_local(false),
            vmap_daddr_proto_dport("service-ips"),
        ]
        .concat(),
    );
    // ip daddr 10.96.0.10 ip saddr != 10.16.0.0/12 jump mark-for-masq
    b.add_rule(
        F,
        T,
        "svc",
        [
            ip_daddr_eq(ip("10.96.0.10")),
            ip_saddr_in(ip("10.16.0.0"), 12, true),
            verdict(Verdict::Jump("mark-for-masq".into())),
        ]
        .concat(),
    );
    // ip saddr @affinity goto ep1
    b.add_rule(
        F,
        T,
        "svc",
        [
            lookup_saddr("affinity"),
            verdict(Verdict::Goto("ep1".into())),
        ]
        .concat(),
    );
    // numgen random mod 2 vmap { 0 : goto ep1, 1 : goto ep2 }
    let elements: Vec<Element> = ["ep1", "ep2"]
        .iter()
        .enumerate()
        .map(|(i, c)| Element {
            key: key::u32_host(i as u32),
            data: Some(ElementData::Verdict(Verdict::Goto(c.to_string()))),
            timeout: None,
        })
        .collect();
    let map = b.add_anonymous_map(F, T, DataType::Integer, DataType::Verdict, &elements);
    b.add_rule(F, T, "svc", numgen_vmap(&map, 2));
    // ip saddr 10.0.0.1 jump mark-for-masq
    b.add_rule(
        F,
        T,
        "ep1",
        [
            ip_saddr_eq(ip("10.0.0.1")),
            verdict(Verdict::Jump("mark-for-masq".into())),
        ]
        .concat(),
    );
    // update @affinity { ip saddr }
    b.add_rule(F, T, "ep1", dynset_update_saddr("affinity", None));
    // meta l4proto tcp dnat to 10.0.0.1:80
    b.add_rule(
        F,
        T,
        "ep1",
        [l4proto_eq(6), dnat(ip("10.0.0.1"), 80)].concat(),
    );
    // update @affinity { ip saddr timeout 10s }
    b.add_rule(
        F,
        T,
        "ep2",
        dynset_update_saddr("affinity", Some(Duration::from_secs(10))),
    );
    // meta mark set meta mark or 0x4000
    b.add_rule(F, T, "mark-for-masq", mark_set_or(0x4000));
    // meta mark and 0x4000 == 0 return
    b.add_rule(
        F,
        T,
        "masquerading",
        [mark_and_is_zero(0x4000), verdict(Verdict::Return)].concat(),
    );
    // meta mark set meta mark xor 0x4000
    b.add_rule(F, T, "masquerading", mark_set_xor(0x4000));
    // masquerade fully-random
    b.add_rule(F, T, "masquerading", masquerade(true));
    // fib saddr type local ip daddr != 127.0.0.0/8 th dport 53 ip daddr @affinity counter accept
    b.add_rule(
        F,
        T,
        "misc",
        [
            fib_saddr_type_local(),
            ip_daddr_in(ip("127.0.0.0"), 8, true),
            th_dport_eq(53),
            lookup_daddr("affinity"),
            counter(),
            verdict(Verdict::Accept),
        ]
        .concat(),
    );
    // ip saddr 10.0.0.3 drop
    b.add_rule(
        F,
        T,
        "misc",
        [ip_saddr_eq(ip("10.0.0.3")), verdict(Verdict::Drop)].concat(),
    );
    // reject
    b.add_rule(F, T, "misc", reject_icmp_port_unreachable());
    let svc_key = [key::ipv4(ip("10.96.0.10")), key::proto(6), key::port(80)].concat();
    b.add_elements(
        F,
        T,
        "service-ips",
        &[Element {
            key: svc_key.clone(),
            data: Some(ElementData::Verdict(Verdict::Goto("svc".into()))),
            timeout: None,
        }],
    );
    b.add_elements(
        F,
        T,
        "affinity",
        &[Element {
            key: key::ipv4(ip("10.9.9.9")),
            data: None,
            timeout: Some(Duration::from_secs(30)),
        }],
    );
    b.delete_elements(
        F,
        T,
        "service-ips",
        &[Element {
            key: svc_key,
            data: None,
            timeout: None,
        }],
    );
    b.flush_chain(F, T, "misc");
    b.delete_chain(F, T, "misc");
    b.flush_set(F, T, "affinity");
    b.delete_set(F, T, "affinity");
    b.delete_table(F, T);
    b
}

/// An attribute tree, normalized for comparison (see the module doc).
#[derive(Debug, PartialEq)]
enum Node {
    Leaf(u16, Vec<u8>),
    Nest(u16, Vec<Node>),
}

fn tree(buf: &[u8]) -> Vec<Node> {
    let attrs: Vec<Attr> = netlink::attrs(buf).collect();
    let is_bitwise = attrs
        .iter()
        .any(|a| a.ty == 1 && !a.nested && a.data == b"bitwise\0");
    let mut nodes: Vec<Node> = attrs
        .iter()
        .map(|a| {
            if a.nested {
                let mut children = tree(a.data);
                if is_bitwise && a.ty == 2 {
                    // NFTA_BITWISE_OP = NFT_BITWISE_BOOL is the default.
                    children.retain(|c| *c != Node::Leaf(6, vec![0, 0, 0, 0]));
                }
                Node::Nest(a.ty, children)
            } else {
                Node::Leaf(a.ty, a.data.to_vec())
            }
        })
        .collect();
    nodes.sort_by_key(|n| match n {
        Node::Leaf(t, _) | Node::Nest(t, _) => *t,
    });
    nodes
}

fn normalized(ty: u16, body: &[u8]) -> (Vec<u8>, Vec<Node>) {
    let mut attrs = tree(&body[4..]);
    // NFTA_SET_USERDATA, NFTA_RULE_USERDATA: nft's own notes.
    let userdata = match ty {
        NEWSET => Some(13),
        NEWRULE => Some(7),
        _ => None,
    };
    attrs.retain(|n| !matches!(n, Node::Leaf(t, _) if Some(*t) == userdata));
    (body[..4].to_vec(), attrs)
}

/// The batch's messages as (NFT_MSG_*, body after the nlmsghdr), markers left out.
fn bodies(b: &Batch) -> Vec<(u16, u16, Vec<u8>)> {
    let data = b.encode(100);
    let msgs = netlink::messages(&data);
    assert_eq!(msgs.len(), b.len() + 2);
    msgs[1..msgs.len() - 1]
        .iter()
        .map(|m| (m.ty & 0xff, m.flags, m.payload.to_vec()))
        .collect()
}

#[test]
fn batch_matches_nft() {
    let b = fixture_batch();
    let ours = bodies(&b);
    assert_eq!(ours.len(), FIXTURE.len(), "message count");
    let mut exact = 0;
    for (i, ((ty, _, body), (want_ty, want_hex))) in ours.iter().zip(FIXTURE).enumerate() {
        let want = hex::decode(want_hex).unwrap();
        assert_eq!(ty, want_ty, "message {i} ({}): type", b.msgs[i].what);
        assert_eq!(
            normalized(*ty, body),
            normalized(*want_ty, &want),
            "message {i} ({}):\n ours {}\n nft  {}",
            b.msgs[i].what,
            hex::encode(body),
            want_hex
        );
        if body == &want {
            exact += 1;
        }
    }
    // Most messages are byte for byte nft's: only userdata and the bitwise op differ.
    assert!(
        exact >= FIXTURE.len() / 2,
        "only {exact} of {} messages equal nft's bytes",
        FIXTURE.len()
    );
}

#[test]
fn batch_framing() {
    let mut b = Batch::new();
    b.add_table(F, T);
    b.add_rule(F, T, "c", verdict(Verdict::Accept));
    b.delete_chain(F, T, "c");
    let data = b.encode(7);
    let msgs = netlink::messages(&data);
    assert_eq!(msgs.len(), 5);
    // BATCH_BEGIN / END: nfgenmsg family AF_UNSPEC, res_id NFNL_SUBSYS_NFTABLES (big-endian).
    for (m, ty, seq) in [(&msgs[0], 16, 7), (&msgs[4], 17, 11)] {
        assert_eq!((m.ty, m.flags, m.seq), (ty, netlink::NLM_F_REQUEST, seq));
        assert_eq!(m.payload, &[0, 0, 0, 10]);
    }
    let req_ack = netlink::NLM_F_REQUEST | netlink::NLM_F_ACK;
    assert_eq!(
        (msgs[1].ty, msgs[1].flags, msgs[1].seq),
        (0x0a00, req_ack | netlink::NLM_F_CREATE, 8)
    );
    assert_eq!(
        (msgs[2].ty, msgs[2].flags, msgs[2].seq),
        (
            0x0a06,
            req_ack | netlink::NLM_F_CREATE | netlink::NLM_F_APPEND,
            9
        )
    );
    assert_eq!(
        (msgs[3].ty, msgs[3].flags, msgs[3].seq),
        (0x0a05, req_ack, 10)
    );
    // nfgenmsg of the changes: the table's family (NFPROTO_IPV4).
    assert_eq!(&msgs[1].payload[..4], &[2, 0, 0, 0]);
    assert_eq!(b.msgs[1].what, "add rule #1 to chain c (immediate)");
}

#[test]
fn big_element_lists_are_split_below_the_attribute_limit() {
    let mut b = Batch::new();
    let elements: Vec<Element> = (0..20_000u32)
        .map(|i| Element {
            key: [
                key::ipv4(Ipv4Addr::from(0x0a00_0000 + i)),
                key::proto(6),
                key::port(80),
            ]
            .concat(),
            data: Some(ElementData::Verdict(Verdict::Goto(format!("svc-{i}")))),
            timeout: None,
        })
        .collect();
    b.add_elements(F, T, "service-ips", &elements);
    assert!(b.len() > 1, "20,000 elements in {} message(s)", b.len());
    let mut n = 0;
    for (_, _, body) in bodies(&b) {
        assert!(body.len() < 65_535, "a message of {} bytes", body.len());
        let list = netlink::attrs(&body[4..]).find(|a| a.ty == 3).unwrap();
        n += list.attrs().count();
    }
    assert_eq!(n, 20_000);
}

#[test]
fn set_keys_and_interval_concatenations() {
    let mut b = Batch::new();
    // A one-part inet_service key is 2 bytes; key::port's padding is cut off.
    b.add_set(
        F,
        T,
        &Set {
            name: "ports".into(),
            key: vec![DataType::InetService],
            data: None,
            flags: Default::default(),
            timeout: None,
        },
    );
    b.add_elements(
        F,
        T,
        "ports",
        &[Element {
            key: key::port(53),
            data: None,
            timeout: None,
        }],
    );
    let m = bodies(&b);
    let key_len = netlink::attrs(&m[0].2[4..])
        .find(|a| a.ty == 5)
        .unwrap()
        .be32();
    assert_eq!(key_len, Some(2));
    let elements = netlink::attrs(&m[1].2[4..]).find(|a| a.ty == 3).unwrap();
    let elem = elements.attrs().next().unwrap();
    let key = elem.attrs().find(|a| a.ty == 1).unwrap();
    assert_eq!(key.attrs().next().unwrap().data, &[0, 53]);
    // nft's bytes for `map iv { type ipv4_addr . inet_proto . inet_service : verdict; flags
    // interval; }` in table ip t (b.nft): flags MAP|INTERVAL|CONCAT, NFTA_SET_DESC_CONCAT 4, 1, 2.
    #[rustfmt::skip]
    let nft = hex::decode(concat!(
        "0200000006000100740000000700020069760000080003000000008c080004000000730d080005000000000c08000600",
        "ffffff00080007000000000008000a00000000022c000980280002800c00018008000100000000040c00018008000100",
        "000000010c000180080001000000000220000d00000400000000010400000000030800040d0000000100060400000000",
    )).unwrap();
    // nft's set id was 2 (a set before it in its batch).
    let mut t = Batch::new();
    t.add_set(
        F,
        "t",
        &Set {
            name: "x".into(),
            ..b_iv()
        },
    );
    t.add_set(F, "t", &b_iv());
    let ours = bodies(&t);
    assert_eq!(normalized(NEWSET, &ours[1].2), normalized(NEWSET, &nft));
}

fn b_iv() -> Set {
    Set {
        name: "iv".into(),
        key: vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
        data: Some(vec![DataType::Verdict]),
        flags: SetFlags {
            interval: true,
            ..Default::default()
        },
        timeout: None,
    }
}
