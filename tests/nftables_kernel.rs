//! The nf_tables encoder against the real kernel: each test runs on a thread of its own that
//! moved into a fresh network namespace (`unshare(CLONE_NEWNET)`; needs root, as CI has), applies
//! batches with `Conn` and reads the result back with the `nft` binary (.ci/run installs
//! nftables). Also ctnetlink's stale-UDP cleanup, on entries made by DNATing over loopback.

#![allow(dead_code)]

#[path = "../src/conntrack/mod.rs"]
mod conntrack;
#[path = "../src/nftables/mod.rs"]
mod nftables;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use nftables::rule::*;
use nftables::*;

const T: &str = "kcluster";
const F: Family = Family::Ip;
const MASQ_BIT: u32 = 0x4000;

use nftables::testing::in_netns;

fn nft_list() -> String {
    nftables::testing::nft_list("ip", T)
}

fn assert_has(listing: &str, lines: &[&str]) {
    for l in lines {
        assert!(
            listing.lines().any(|x| x.trim() == *l),
            "missing `{l}` in:\n{listing}"
        );
    }
}

fn assert_lacks(listing: &str, lines: &[&str]) {
    for l in lines {
        assert!(
            !listing.lines().any(|x| x.trim() == *l),
            "unexpected `{l}` in:\n{listing}"
        );
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn base(kind: ChainType, hook: Hook, priority: i32) -> BaseChain {
    BaseChain {
        kind,
        hook,
        priority,
        policy: Policy::Accept,
    }
}

fn svc_key(addr: &str, proto: u8, port: u16) -> Vec<u8> {
    [key::ipv4(ip(addr)), key::proto(proto), key::port(port)].concat()
}

fn goto(k: Vec<u8>, chain: &str) -> Element {
    Element {
        key: k,
        data: Some(ElementData::Verdict(Verdict::Goto(chain.into()))),
        timeout: None,
    }
}

fn vmap_set(name: &str) -> Set {
    Set {
        name: name.into(),
        key: vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
        data: Some(vec![DataType::Verdict]),
        flags: SetFlags::default(),
        timeout: None,
    }
}

fn endpoint(b: &mut Batch, chain: &str, addr: &str, port: u16) {
    let affinity = format!("affinity-{chain}");
    b.add_chain(F, T, chain, None);
    b.add_set(
        F,
        T,
        &Set {
            name: affinity.clone(),
            key: vec![DataType::Ipv4Addr],
            data: None,
            flags: SetFlags {
                dynamic: true,
                timeout: true,
                ..Default::default()
            },
            timeout: Some(Duration::from_secs(10800)),
        },
    );
    b.add_rule(
        F,
        T,
        chain,
        [
            ip_saddr_eq(ip(addr)),
            verdict(Verdict::Jump("mark-for-masquerade".into())),
        ]
        .concat(),
    );
    b.add_rule(F, T, chain, dynset_update_saddr(&affinity, None));
    b.add_rule(F, T, chain, [l4proto_eq(6), dnat(ip(addr), port)].concat());
}

/// The service chain: masquerade off-cluster sources, stick to an endpoint a client had, else
/// pick one at random.
fn service(b: &mut Batch, chain: &str, vip: &str, endpoints: &[&str]) {
    b.add_chain(F, T, chain, None);
    b.add_rule(
        F,
        T,
        chain,
        [
            ip_daddr_eq(ip(vip)),
            ip_saddr_in(ip("10.244.0.0"), 16, true),
            verdict(Verdict::Jump("mark-for-masquerade".into())),
        ]
        .concat(),
    );
    for ep in endpoints {
        b.add_rule(
            F,
            T,
            chain,
            [
                lookup_saddr(&format!("affinity-{ep}")),
                verdict(Verdict::Goto(ep.to_string())),
            ]
            .concat(),
        );
    }
    let elements: Vec<Element> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| Element {
            key: key::u32_host(i as u32),
            data: Some(ElementData::Verdict(Verdict::Goto(ep.to_string()))),
            timeout: None,
        })
        .collect();
    let map = b.add_anonymous_map(F, T, DataType::Integer, DataType::Verdict, &elements);
    b.add_rule(F, T, chain, numgen_vmap(&map, endpoints.len() as u32));
}

/// kube-proxy's nftables-mode ruleset, cut down to one service with two endpoints and one
/// service without endpoints.
fn full_sync() -> Batch {
    let mut b = Batch::new();
    b.add_table(F, T);
    b.add_chain(
        F,
        T,
        "nat-prerouting",
        Some(&base(ChainType::Nat, Hook::Prerouting, -100)),
    );
    b.add_chain(
        F,
        T,
        "nat-output",
        Some(&base(ChainType::Nat, Hook::Output, -100)),
    );
    b.add_chain(
        F,
        T,
        "nat-postrouting",
        Some(&base(ChainType::Nat, Hook::Postrouting, 100)),
    );
    b.add_chain(
        F,
        T,
        "filter-input",
        Some(&base(ChainType::Filter, Hook::Input, 0)),
    );
    b.add_chain(
        F,
        T,
        "filter-forward",
        Some(&base(ChainType::Filter, Hook::Forward, 0)),
    );
    b.add_chain(
        F,
        T,
        "filter-output",
        Some(&base(ChainType::Filter, Hook::Output, 0)),
    );
    for c in [
        "services",
        "masquerading",
        "mark-for-masquerade",
        "reject-chain",
        "filter-services",
    ] {
        b.add_chain(F, T, c, None);
    }
    b.add_set(F, T, &vmap_set("service-ips"));
    b.add_set(F, T, &vmap_set("no-endpoint-services"));
    b.add_set(
        F,
        T,
        &Set {
            name: "cluster-ips".into(),
            key: vec![DataType::Ipv4Addr],
            data: None,
            flags: SetFlags::default(),
            timeout: None,
        },
    );
    b.add_rule(
        F,
        T,
        "nat-prerouting",
        verdict(Verdict::Jump("services".into())),
    );
    b.add_rule(
        F,
        T,
        "nat-output",
        verdict(Verdict::Jump("services".into())),
    );
    b.add_rule(
        F,
        T,
        "nat-postrouting",
        verdict(Verdict::Jump("masquerading".into())),
    );
    for c in ["filter-input", "filter-forward", "filter-output"] {
        b.add_rule(
            F,
            T,
            c,
            [
                ct_state_new(),
                verdict(Verdict::Jump("filter-services".into())),
            ]
            .concat(),
        );
    }
    b.add_rule(
        F,
        T,
        "filter-services",
        vmap_daddr_proto_dport("no-endpoint-services"),
    );
    b.add_rule(F, T, "services", vmap_daddr_proto_dport("service-ips"));
    b.add_rule(
        F,
        T,
        "services",
        [
            fib_daddr_type_local(false),
            ip_daddr_in(ip("127.0.0.0"), 8, true),
            lookup_daddr("cluster-ips"),
            counter(),
        ]
        .concat(),
    );
    b.add_rule(
        F,
        T,
        "masquerading",
        [mark_and_is_zero(MASQ_BIT), verdict(Verdict::Return)].concat(),
    );
    b.add_rule(F, T, "masquerading", mark_set_xor(MASQ_BIT));
    b.add_rule(F, T, "masquerading", masquerade(true));
    b.add_rule(F, T, "mark-for-masquerade", mark_set_or(MASQ_BIT));
    b.add_rule(F, T, "reject-chain", reject_icmp_port_unreachable());
    endpoint(&mut b, "endpoint-a", "10.244.1.5", 8080);
    endpoint(&mut b, "endpoint-b", "10.244.2.7", 8080);
    service(
        &mut b,
        "service-web",
        "10.96.0.10",
        &["endpoint-a", "endpoint-b"],
    );
    b.add_elements(
        F,
        T,
        "service-ips",
        &[goto(svc_key("10.96.0.10", 6, 80), "service-web")],
    );
    b.add_elements(
        F,
        T,
        "no-endpoint-services",
        &[goto(svc_key("10.96.0.11", 17, 53), "reject-chain")],
    );
    b.add_elements(
        F,
        T,
        "cluster-ips",
        &[
            Element {
                key: key::ipv4(ip("10.96.0.10")),
                data: None,
                timeout: None,
            },
            Element {
                key: key::ipv4(ip("10.96.0.11")),
                data: None,
                timeout: None,
            },
        ],
    );
    b
}

#[test]
fn kube_proxy_ruleset_applies_and_lists_back() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        assert!(
            !conn.table_exists(F, T).unwrap(),
            "table before the first sync"
        );
        conn.apply(&full_sync()).unwrap();
        assert!(conn.table_exists(F, T).unwrap(), "table after the sync");
        let listing = nft_list();
        assert_has(
            &listing,
            &[
                "type nat hook prerouting priority dstnat; policy accept;",
                "type nat hook output priority -100; policy accept;",
                "type nat hook postrouting priority srcnat; policy accept;",
                "type filter hook input priority filter; policy accept;",
                "type ipv4_addr . inet_proto . inet_service : verdict",
                "elements = { 10.96.0.10 . tcp . 80 : goto service-web }",
                "elements = { 10.96.0.11 . udp . 53 : goto reject-chain }",
                "elements = { 10.96.0.10, 10.96.0.11 }",
                "flags dynamic,timeout",
                "timeout 3h",
                "jump services",
                "jump masquerading",
                "ct state new jump filter-services",
                "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                "fib daddr type local ip daddr != 127.0.0.0/8 ip daddr @cluster-ips counter packets 0 bytes 0",
                "meta mark & 0x00004000 == 0x00000000 return",
                "meta mark set meta mark ^ 0x00004000",
                "masquerade fully-random",
                "meta mark set meta mark | 0x00004000",
                "reject",
                "ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "ip saddr @affinity-endpoint-a goto endpoint-a",
                "ip saddr @affinity-endpoint-b goto endpoint-b",
                "numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }",
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "update @affinity-endpoint-a { ip saddr }",
                "meta l4proto tcp dnat to 10.244.1.5:8080",
                "meta l4proto tcp dnat to 10.244.2.7:8080",
            ],
        );

        // An endpoint goes, a service moves port, the no-endpoint service gets one.
        let mut b = Batch::new();
        b.flush_chain(F, T, "service-web");
        b.delete_chain(F, T, "endpoint-b");
        b.delete_set(F, T, "affinity-endpoint-b");
        service(&mut b, "service-web", "10.96.0.10", &["endpoint-a"]);
        b.delete_elements(
            F,
            T,
            "service-ips",
            &[goto(svc_key("10.96.0.10", 6, 80), "service-web")],
        );
        b.add_elements(
            F,
            T,
            "service-ips",
            &[goto(svc_key("10.96.0.10", 6, 8080), "service-web")],
        );
        b.flush_set(F, T, "no-endpoint-services");
        endpoint(&mut b, "endpoint-c", "10.244.3.9", 53);
        service(&mut b, "service-dns", "10.96.0.11", &["endpoint-c"]);
        b.add_elements(
            F,
            T,
            "service-ips",
            &[goto(svc_key("10.96.0.11", 17, 53), "service-dns")],
        );
        conn.apply(&b).unwrap();
        let listing = nft_list();
        assert_has(
            &listing,
            &[
                "numgen random mod 1 vmap { 0 : goto endpoint-a }",
                "numgen random mod 1 vmap { 0 : goto endpoint-c }",
                "ip saddr @affinity-endpoint-a goto endpoint-a",
                "meta l4proto tcp dnat to 10.244.3.9:53",
            ],
        );
        assert!(
            listing.contains("10.96.0.10 . tcp . 8080 : goto service-web"),
            "{listing}"
        );
        assert!(
            listing.contains("10.96.0.11 . udp . 53 : goto service-dns"),
            "{listing}"
        );
        assert!(!listing.contains("10.96.0.10 . tcp . 80 :"), "{listing}");
        assert!(!listing.contains("endpoint-b"), "{listing}");
        assert!(
            !listing.contains("reject-chain }"),
            "no-endpoint-services not flushed:\n{listing}"
        );
        assert_lacks(
            &listing,
            &["numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }"],
        );
    });
}

#[test]
fn refused_batch_names_the_message_and_changes_nothing() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        conn.apply(&full_sync()).unwrap();
        let before = nft_list();

        let mut b = Batch::new();
        b.add_chain(F, T, "service-new", None);
        b.add_rule(F, T, "service-new", verdict(Verdict::Accept));
        b.add_elements(
            F,
            T,
            "service-ips",
            &[goto(svc_key("10.96.0.99", 6, 80), "service-new")],
        );
        b.flush_chain(F, T, "masquerading");
        b.add_rule(
            F,
            T,
            "services",
            verdict(Verdict::Jump("no-such-chain".into())),
        );
        b.add_rule(F, T, "services", counter());
        let err = conn.apply(&b).unwrap_err();
        match &err {
            Error::Refused { errno, message, at } => {
                assert_eq!(*errno, libc::ENOENT, "{err}");
                assert!(message.contains("No such file or directory"), "{err}");
                assert_eq!(
                    at.as_deref(),
                    Some("add rule #1 to chain services (immediate)"),
                    "{err}"
                );
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("at add rule #1 to chain services"), "{text}");
        assert_eq!(nft_list(), before, "a refused batch changed the table");

        // A rule for a chain that is not there.
        let mut b = Batch::new();
        b.add_rule(F, T, "missing", counter());
        match conn.apply(&b).unwrap_err() {
            Error::Refused { errno, at, .. } => {
                assert_eq!(errno, libc::ENOENT);
                assert_eq!(
                    at.as_deref(),
                    Some("add rule #1 to chain missing (counter)")
                );
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        // The connection stays usable.
        let mut b = Batch::new();
        b.add_rule(F, T, "services", counter());
        conn.apply(&b).unwrap();
        assert_eq!(
            nft_list().matches("counter packets 0 bytes 0").count(),
            before.matches("counter packets").count() + 1
        );
    });
}

#[test]
fn big_batch_goes_through_whole() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        conn.apply(&full_sync()).unwrap();
        // 1,000 services × 10 endpoints shaped: a chain per endpoint with its dnat rule, and
        // 20,000 map elements.
        let mut b = Batch::new();
        for i in 0..2_000u32 {
            let chain = format!("ep-{i}");
            b.add_chain(F, T, &chain, None);
            let addr = Ipv4Addr::from(0x0af4_0000 + i);
            b.add_rule(
                F,
                T,
                &chain,
                [
                    ip_saddr_eq(addr),
                    verdict(Verdict::Jump("mark-for-masquerade".into())),
                ]
                .concat(),
            );
            b.add_rule(F, T, &chain, [l4proto_eq(6), dnat(addr, 8080)].concat());
        }
        let elements: Vec<Element> = (0..20_000u32)
            .map(|i| {
                let k = [
                    key::ipv4(Ipv4Addr::from(0x0a64_0000 + i)),
                    key::proto(6),
                    key::port(80),
                ]
                .concat();
                goto(k, &format!("ep-{}", i % 2_000))
            })
            .collect();
        b.add_elements(F, T, "service-ips", &elements);
        assert!(b.len() > 6_000, "{} messages", b.len());
        conn.apply(&b).unwrap();
        let out = Command::new("nft")
            .args(["list", "map", "ip", T, "service-ips"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.matches(": goto ep-").count(), 20_000);
        let listing = nft_list();
        assert_eq!(listing.matches("dnat to 10.244.").count(), 2_000 + 2);

        // And atomicity at that size: the last of 30,000 messages is refused, nothing lands.
        let mut b = Batch::new();
        let elements: Vec<Element> = (0..30_000u32)
            .map(|i| {
                goto(
                    [
                        key::ipv4(Ipv4Addr::from(0x0a70_0000 + i)),
                        key::proto(17),
                        key::port(53),
                    ]
                    .concat(),
                    "ep-1",
                )
            })
            .collect();
        b.add_elements(F, T, "service-ips", &elements);
        b.add_rule(
            F,
            T,
            "services",
            verdict(Verdict::Goto("no-such-chain".into())),
        );
        let err = conn.apply(&b).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Refused {
                    errno: libc::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
        let out = Command::new("nft")
            .args(["list", "map", "ip", T, "service-ips"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout)
                .unwrap()
                .matches(": goto ep-")
                .count(),
            20_000
        );
    });
}

fn send_udp(to: &str) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"x", to).unwrap();
}

#[test]
fn conntrack_udp_entries_are_deleted() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        let mut b = Batch::new();
        b.add_table(F, T);
        b.add_chain(
            F,
            T,
            "nat-output",
            Some(&base(ChainType::Nat, Hook::Output, -100)),
        );
        // A "service" 127.0.0.2:53 with the "endpoint" 127.0.0.3:5353.
        b.add_rule(
            F,
            T,
            "nat-output",
            [
                ip_daddr_eq(ip("127.0.0.2")),
                l4proto_eq(17),
                th_dport_eq(53),
                dnat(ip("127.0.0.3"), 5353),
            ]
            .concat(),
        );
        conn.apply(&b).unwrap();

        send_udp("127.0.0.2:53");
        send_udp("127.0.0.2:54");
        send_udp("127.0.0.4:53");
        assert_eq!(
            conntrack::delete_udp_to(ip("127.0.0.2"), Some(53)).unwrap(),
            1,
            "to the service's port"
        );
        assert_eq!(
            conntrack::delete_udp_to(ip("127.0.0.2"), Some(53)).unwrap(),
            0,
            "gone already"
        );
        assert_eq!(
            conntrack::delete_udp_to(ip("127.0.0.2"), None).unwrap(),
            1,
            "any port"
        );

        send_udp("127.0.0.2:53");
        send_udp("127.0.0.2:53");
        // Not DNATed: its reply source is its destination; it stays.
        send_udp("127.0.0.3:53");
        assert_eq!(
            conntrack::delete_udp_reply_from(ip("127.0.0.3")).unwrap(),
            2,
            "DNATed to the endpoint"
        );
        assert_eq!(
            conntrack::delete_udp_reply_from(ip("127.0.0.3")).unwrap(),
            0
        );
        assert_eq!(conntrack::delete_udp_to(ip("127.0.0.3"), None).unwrap(), 1);
        assert_eq!(conntrack::delete_udp_to(ip("127.0.0.4"), None).unwrap(), 1);
    });
}
