//! The policy rules in a real kernel: full and incremental syncs applied in a fresh network
//! namespace (root, as CI has) and read back with `nft list`; and the sync benchmark
//! (`cargo test --release --bin kcluster -- --ignored netpol_sync_bench --nocapture`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::ruleset::{self, Desired, PodInfo};
use super::sync::{self, Applied};
use crate::nftables::Conn;
use crate::nftables::testing::{in_netns, nft_list};

fn pod(ns: &str, app: &str, last: u32, local: bool) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + last),
        local,
        ports: vec![("http".into(), 6, 8080)],
    }
}

fn namespace(name: &str, team: &str) -> Namespace {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"team": team}}
    }))
    .unwrap()
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn desired(policies: &[NetworkPolicy], pods: &[PodInfo]) -> Desired {
    let refs: Vec<&NetworkPolicy> = policies.iter().collect();
    let nss = [namespace("x", "a"), namespace("y", "b")];
    let ns_refs: Vec<&Namespace> = nss.iter().collect();
    ruleset::desired(&refs, pods, &ns_refs)
}

fn sample() -> Vec<NetworkPolicy> {
    vec![
        policy(
            "x",
            "web",
            serde_json::json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": "b"}},
                         "podSelector": {"matchLabels": {"app": "client"}}},
                        {"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.18.0.0/16"]}}
                    ],
                    "ports": [{"protocol": "TCP", "port": "http"},
                              {"protocol": "UDP", "port": 5000, "endPort": 5010}]
                }],
                "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]
            }),
        ),
        policy(
            "x",
            "deny",
            serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
    ]
}

#[test]
fn full_and_incremental_syncs_program_the_kernel() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        let pods = vec![
            pod("x", "web", 2, true),
            pod("x", "web", 3, false),
            pod("y", "client", 4, false),
            pod("x", "client", 5, true),
        ];
        let d = desired(&sample(), &pods);
        let (batch, _) = sync::full(&d);
        conn.apply(&batch).expect("full sync");
        let mut applied = Applied {
            state: d,
            stale: Default::default(),
        };
        let listing = nft_list("ip", ruleset::TABLE);
        let web = ruleset::policy_id("x", "web");
        for want in [
            "type filter hook forward priority filter + 1; policy accept;".to_string(),
            "type filter hook input priority filter; policy accept;".to_string(),
            "ct state established,related accept".to_string(),
            "ip saddr != @egress-isolated accept".to_string(),
            "ip daddr != @ingress-isolated accept".to_string(),
            format!("ip daddr != @{web}-sel return"),
            format!("ip saddr @{web}-in-r0-peers goto {web}-in-r0-ports"),
            "ip saddr 172.18.0.0/16 return".to_string(),
            format!("ip saddr 172.16.0.0/12 goto {web}-in-r0-ports"),
            format!("ip daddr . meta l4proto . th dport @{web}-in-r0-n0 accept"),
            "udp dport 5000-5010 accept".to_string(),
            "udp dport 53 accept".to_string(),
            "10.244.0.2 . tcp . 8080".to_string(),
            format!("jump {web}-in"),
        ] {
            assert!(listing.contains(&want), "missing {want:?} in:\n{listing}");
        }
        // Only this node's selected pods are in the policy's set; peers come from everywhere.
        let sel = set_line(&listing, &format!("{web}-sel"));
        assert!(
            sel.contains("10.244.0.2") && !sel.contains("10.244.0.3"),
            "{sel}"
        );
        let peers = set_line(&listing, &format!("{web}-in-r0-peers"));
        assert!(
            peers.contains("10.244.0.4") && !peers.contains("10.244.0.5"),
            "{peers}"
        );

        // A label change: set elements only, no chain rewritten.
        let mut moved = pods.clone();
        moved[3].namespace = "y".into();
        let d = desired(&sample(), &moved);
        let (batch, stats) = sync::incremental(&mut applied, &d, Instant::now());
        assert_eq!(stats.chains_written, 0, "{stats:?}");
        conn.apply(&batch).expect("incremental sync");
        applied.state = d;
        let listing = nft_list("ip", ruleset::TABLE);
        let peers = set_line(&listing, &format!("{web}-in-r0-peers"));
        assert!(peers.contains("10.244.0.5"), "{peers}");

        // The policy goes: its chains are flushed, then deleted a second later.
        let now = Instant::now();
        let d = desired(&sample()[1..], &moved);
        let (batch, _) = sync::incremental(&mut applied, &d, now);
        conn.apply(&batch).expect("incremental sync");
        applied.state = d.clone();
        let (batch, _) = sync::incremental(&mut applied, &d, now + Duration::from_secs(2));
        conn.apply(&batch).expect("deleting stale chains");
        let listing = nft_list("ip", ruleset::TABLE);
        assert!(!listing.contains(&web), "{listing}");
        assert!(applied.stale.is_empty());
    });
}

fn set_line(listing: &str, set: &str) -> String {
    let start = listing
        .find(&format!("set {set} {{"))
        .unwrap_or_else(|| panic!("no set {set} in:\n{listing}"));
    let rest = &listing[start..];
    rest[..rest.find('}').unwrap_or(rest.len())].to_string()
}

/// 1,000 policies (each selecting a pod of this node and allowing one label from 200 pods):
/// a full sync, then one pod's label changed, then one policy added.
#[test]
#[ignore]
fn netpol_sync_bench() {
    in_netns(|| {
        let mut conn = Conn::new().unwrap();
        let policies: Vec<NetworkPolicy> = (0..1000)
            .map(|i| {
                policy(
                    "x",
                    &format!("p{i}"),
                    serde_json::json!({
                        "podSelector": {"matchLabels": {"app": format!("s{}", i % 100)}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("c{}", i % 10)}}}],
                                     "ports": [{"port": 80}, {"port": "http"}]}]
                    }),
                )
            })
            .collect();
        let mut pods: Vec<PodInfo> = (0..100)
            .map(|i| pod("x", &format!("s{i}"), i + 10, true))
            .chain((0..200).map(|i| pod("x", &format!("c{}", i % 10), i + 1000, false)))
            .collect();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut fulls = Vec::new();
        let mut messages = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let d = desired(&policies, &pods);
            let (batch, stats) = sync::full(&d);
            messages = stats.messages;
            conn.apply(&batch).unwrap();
            fulls.push(ms(t.elapsed()));
        }
        let mut applied = Applied {
            state: desired(&policies, &pods),
            stale: Default::default(),
        };
        let mut label = Vec::new();
        let mut split = Vec::new();
        for round in 0..20usize {
            let p = &mut pods[100 + round * 7];
            let app = format!("c{}", (round + 1) % 10);
            p.labels.insert("app".into(), app);
            let t = Instant::now();
            let d = desired(&policies, &pods);
            let computed = t.elapsed();
            let (batch, _) = sync::incremental(&mut applied, &d, Instant::now());
            let planned = t.elapsed();
            conn.apply(&batch).unwrap();
            applied.state = d;
            label.push(ms(t.elapsed()));
            split.push((
                ms(computed),
                ms(planned - computed),
                ms(t.elapsed() - planned),
            ));
        }
        let mut added = Vec::new();
        let mut more = policies.clone();
        for round in 0..10 {
            more.push(policy(
                "x",
                &format!("extra{round}"),
                serde_json::json!({"podSelector": {"matchLabels": {"app": "s1"}}, "ingress": [{"ports": [{"port": 81}]}]}),
            ));
            let t = Instant::now();
            let d = desired(&more, &pods);
            let (batch, _) = sync::incremental(&mut applied, &d, Instant::now());
            conn.apply(&batch).unwrap();
            applied.state = d;
            added.push(ms(t.elapsed()));
        }
        split.sort_by(|a, b| a.0.total_cmp(&b.0));
        println!(
            "label change (compute, plan, kernel) ms: {:?}",
            split[split.len() / 2]
        );
        for v in [&mut fulls, &mut label, &mut added] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "{{\"policies\": 1000, \"full_sync_ms_median\": {:.1}, \"full_messages\": {messages}, \"label_change_ms_median\": {:.2}, \"label_change_ms_max\": {:.2}, \"policy_add_ms_median\": {:.2}, \"policy_add_ms_max\": {:.2}}}",
            fulls[fulls.len() / 2],
            label[label.len() / 2],
            label[label.len() - 1],
            added[added.len() / 2],
            added[added.len() - 1],
        );
    });
}
