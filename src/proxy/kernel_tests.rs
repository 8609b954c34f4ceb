//! The proxy's rules in a real kernel: full and incremental syncs applied in a fresh network
//! namespace (root, as CI has), read back with `nft list`; and the sync benchmark
//! (`cargo test --release --bin kcluster -- --ignored proxy_sync_bench --nocapture`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::model::{Endpoint, Protocol, ServicePort};
use super::ruleset::{self, Desired};
use super::sync::{self, Applied};
use crate::cluster::cidr::Ipv4Cidr;
use crate::nftables::Conn;
use crate::nftables::testing::{in_netns, nft_list};

fn pods() -> Ipv4Cidr {
    "10.244.0.0/16".parse().unwrap()
}
fn services() -> Ipv4Cidr {
    "10.96.0.0/12".parse().unwrap()
}

fn port(i: u32, endpoints: usize) -> ServicePort {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 100 + i);
    ServicePort {
        namespace: "default".into(),
        name: format!("svc-{i}"),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        cluster_ip: ip,
        port: 80,
        node_port: Some(30000 + (i % 2700) as u16),
        external_ips: Vec::new(),
        external_local: false,
        internal_local: false,
        affinity_seconds: None,
        endpoints: (0..endpoints)
            .map(|e| Endpoint {
                ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + i * 16 + e as u32 + 2),
                port: 8080,
                ready: true,
                serving: true,
                terminating: false,
                local: e % 2 == 0,
            })
            .collect(),
    }
}

fn desired(ports: &[ServicePort]) -> Desired {
    ruleset::desired(ports, pods(), &[])
}

fn apply_full(conn: &mut Conn, d: &Desired) -> Applied {
    let stat = ruleset::static_part(pods(), services());
    conn.apply(&sync::full(&stat, d)).expect("full sync");
    Applied {
        state: d.clone(),
        stale: Default::default(),
    }
}

fn apply_incremental(conn: &mut Conn, applied: &mut Applied, d: &Desired, now: Instant) {
    let batch = sync::incremental(applied, d, now);
    conn.apply(&batch).expect("incremental sync");
    applied.state = d.clone();
}

#[test]
fn full_and_incremental_syncs_program_the_kernel() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        let mut web = port(1, 2);
        web.affinity_seconds = Some(30);
        let mut dns = port(2, 1);
        dns.protocol = Protocol::Udp;
        dns.port = 53;
        dns.node_port = None;
        let empty = port(3, 0);
        let mut applied = apply_full(
            &mut conn,
            &desired(&[web.clone(), dns.clone(), empty.clone()]),
        );
        let listing = nft_list("ip", "kcluster");
        for want in [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "numgen random mod 2 0 goto endpoint-",
            "meta l4proto tcp dnat to 10.244.0.18:8080",
            "meta l4proto udp dnat to 10.244.0.34:8080",
            "10.96.0.103 . tcp . 80 : goto reject-chain",
            "masquerade fully-random",
            "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade",
            "update @affinity-",
            "timeout 30s",
            "ip daddr 10.96.0.0/12 drop",
            "ip saddr . ip daddr @hairpin masquerade fully-random",
            "10.244.0.18 . 10.244.0.18",
        ] {
            assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
        }

        // One endpoint of `web` goes away, `empty` gets one, `dns` is deleted.
        let web2 = port(1, 1);
        let filled = port(3, 1);
        let now = Instant::now();
        apply_incremental(&mut conn, &mut applied, &desired(&[web2, filled]), now);
        let listing = nft_list("ip", "kcluster");
        assert!(!listing.contains("numgen random mod 2 "), "{listing}");
        assert!(!listing.contains("goto reject-chain"), "{listing}");
        assert!(!listing.contains("udp dnat"), "{listing}");
        assert!(!listing.contains("@affinity-"), "{listing}");
        assert!(listing.contains("dnat to 10.244.0.50:8080"), "{listing}");
        // The old chains are flushed now and deleted a second later.
        assert_eq!(applied.stale.len(), 3, "{:?}", applied.stale);
        let d = applied.state.clone();
        apply_incremental(&mut conn, &mut applied, &d, now + Duration::from_secs(2));
        assert!(applied.stale.is_empty());
        let listing = nft_list("ip", "kcluster");
        assert!(!listing.contains("svc-2/"), "{listing}");

        // A full sync over an existing table replaces it in one go.
        let mut applied = apply_full(&mut conn, &desired(&[port(4, 3)]));
        let listing = nft_list("ip", "kcluster");
        assert!(
            listing.contains("meta l4proto tcp dnat ip to numgen random mod 3 map @endpoints-"),
            "{listing}"
        );
        for want in ["2 : 10.244.0.68 . 8080", "0 : 10.244.0.66 . 8080"] {
            assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
        }
        assert!(!listing.contains("svc-1/"), "{listing}");
        assert!(!listing.contains("chain endpoint-"), "{listing}");
        assert!(applied.stale.is_empty());

        // The endpoint map shrinks, then gives way to a plain DNAT, then comes back.
        let now = Instant::now();
        apply_incremental(&mut conn, &mut applied, &desired(&[port(4, 2)]), now);
        let listing = nft_list("ip", "kcluster");
        assert!(
            listing.contains("numgen random mod 2 map @endpoints-"),
            "{listing}"
        );
        assert!(!listing.contains("10.244.0.68 . 8080"), "{listing}");
        apply_incremental(&mut conn, &mut applied, &desired(&[port(4, 1)]), now);
        let listing = nft_list("ip", "kcluster");
        assert!(!listing.contains("@endpoints-"), "{listing}");
        assert!(!listing.contains("map endpoints-"), "{listing}");
        assert!(
            listing.contains("meta l4proto tcp dnat to 10.244.0.66:8080"),
            "{listing}"
        );
        apply_incremental(&mut conn, &mut applied, &desired(&[port(4, 3)]), now);
        let listing = nft_list("ip", "kcluster");
        assert!(
            listing.contains("numgen random mod 3 map @endpoints-"),
            "{listing}"
        );
        assert!(listing.contains("1 : 10.244.0.67 . 8080"), "{listing}");
    });
}

/// Rule sync at 1,000 Services × 10 endpoints: a full sync, then one endpoint changed.
#[test]
#[ignore]
fn proxy_sync_bench() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        let ports: Vec<ServicePort> = (0..1000).map(|i| port(i, 10)).collect();
        let stat = ruleset::static_part(pods(), services());
        let mut fulls = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let d = desired(&ports);
            let batch = sync::full(&stat, &d);
            let messages = batch.len();
            conn.apply(&batch).unwrap();
            fulls.push((t.elapsed(), messages));
        }
        let mut applied = Applied {
            state: desired(&ports),
            stale: Default::default(),
        };
        let mut changes = Vec::new();
        let mut split = Vec::new();
        let mut current = ports.clone();
        for round in 0..20u32 {
            let ep = &mut current[(round * 37 % 1000) as usize].endpoints[3];
            ep.ready = !ep.ready;
            let t = Instant::now();
            let d = desired(&current);
            let computed = t.elapsed();
            let batch = sync::incremental(&mut applied, &d, Instant::now());
            let planned = t.elapsed();
            let messages = batch.len();
            conn.apply(&batch).unwrap();
            applied.state = d;
            changes.push((t.elapsed(), messages));
            split.push((computed, planned - computed, t.elapsed() - planned));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = |part: fn(&(Duration, Duration, Duration)) -> Duration| {
            let mut v: Vec<Duration> = split.iter().map(part).collect();
            v.sort();
            ms(v[v.len() / 2])
        };
        println!(
            "one change, medians: compute {:.1} ms, plan {:.1} ms, kernel {:.1} ms",
            median(|s| s.0),
            median(|s| s.1),
            median(|s| s.2)
        );
        let mut full_ms: Vec<f64> = fulls.iter().map(|(d, _)| ms(*d)).collect();
        full_ms.sort_by(f64::total_cmp);
        let mut change_ms: Vec<f64> = changes.iter().map(|(d, _)| ms(*d)).collect();
        change_ms.sort_by(f64::total_cmp);
        println!(
            "{{\"full_sync_ms_median\": {:.1}, \"full_sync_ms_max\": {:.1}, \"full_messages\": {}, \"one_endpoint_ms_median\": {:.2}, \"one_endpoint_ms_max\": {:.2}, \"one_endpoint_messages\": {}}}",
            full_ms[full_ms.len() / 2],
            full_ms[full_ms.len() - 1],
            fulls[0].1,
            change_ms[change_ms.len() / 2],
            change_ms[change_ms.len() - 1],
            changes[0].1
        );
    });
}
