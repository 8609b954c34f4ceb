//! LimitRange and ResourceQuota admission through the real kubectl, against the API server with
//! its controllers (the quota controller keeps status.used): container defaults, min/max/ratio
//! refusals, quota refusals with Kubernetes' messages, and `kubectl describe quota`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn apply(server: &ApiServer, yaml: &str) -> std::process::Output {
    server.kubectl_stdin(&["create", "-n", "q", "-f", "-"], yaml)
}

fn apply_ok(server: &ApiServer, yaml: &str) {
    let out = apply(server, yaml);
    assert!(out.status.success(), "create failed: {}", text(&out));
}

fn refused(server: &ApiServer, yaml: &str) -> String {
    let out = apply(server, yaml);
    assert!(!out.status.success(), "create unexpectedly succeeded");
    text(&out)
}

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources: {resources}\n"
    )
}

fn get_json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get", "-n", "q"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

const LIMITS: &str = r#"
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 100m, memory: 128Mi}
    min: {cpu: 50m}
    max: {cpu: "1", memory: 1Gi}
    maxLimitRequestRatio: {cpu: "10"}
  - type: PersistentVolumeClaim
    min: {storage: 1Gi}
"#;

const QUOTA: &str = r#"
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute}
spec:
  hard:
    pods: "3"
    requests.cpu: 400m
    limits.memory: 1Gi
    configmaps: "3"
    count/deployments.apps: "1"
"#;

#[test]
fn limit_ranges_and_quotas_admit_or_refuse() {
    let server = ApiServer::start_with(&["--controllers"]);
    server.kubectl_ok(&["create", "namespace", "q"]);
    apply_ok(&server, LIMITS);

    // Defaults fill in what the container leaves out, and say so.
    apply_ok(&server, &pod("defaulted", "{}"));
    let p = get_json(&server, &["pod", "defaulted"]);
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["cpu"], "500m", "{p}");
    assert_eq!(r["requests"]["memory"], "128Mi", "{p}");
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );
    assert_eq!(p["status"]["qosClass"], "Burstable", "{p}");

    // Out of range: 403 Forbidden in Kubernetes' words.
    let out = refused(&server, &pod("big", "{limits: {cpu: '2'}}"));
    assert!(out.contains("Forbidden"), "{out}");
    assert!(
        out.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{out}"
    );
    let out = refused(
        &server,
        &pod("tiny", "{requests: {cpu: 10m}, limits: {cpu: 20m}}"),
    );
    assert!(
        out.contains("minimum cpu usage per Container is 50m, but request is 10m"),
        "{out}"
    );
    let out = refused(
        &server,
        &pod("ratio", "{requests: {cpu: 50m}, limits: {cpu: '1'}}"),
    );
    assert!(
        out.contains(
            "cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000"
        ),
        "{out}"
    );
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: small}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 500Mi}}\n";
    let out = refused(&server, claim);
    assert!(
        out.contains(
            "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
        ),
        "{out}"
    );

    // The quota: the defaulted pod already uses 100m of 400m.
    apply_ok(&server, QUOTA);
    wait_for("the quota's status", Duration::from_secs(30), || {
        let q = get_json(&server, &["quota", "compute"]);
        q["status"]["used"]["requests.cpu"] == "100m" && q["status"]["used"]["pods"] == "1"
    });
    apply_ok(&server, &pod("second", "{requests: {cpu: 200m}}"));
    let out = refused(&server, &pod("third", "{requests: {cpu: 200m}}"));
    assert!(
        out.contains(
            "pods \"third\" is forbidden: exceeded quota: compute, requested: requests.cpu=200m, used: requests.cpu=300m, limited: requests.cpu=400m"
        ),
        "{out}"
    );
    apply_ok(&server, &pod("third", "{requests: {cpu: 100m}}"));
    let out = refused(&server, &pod("fourth", "{requests: {cpu: 50m}}"));
    assert!(
        out.contains("exceeded quota: compute, requested: pods=1,requests.cpu=50m, used: pods=3,requests.cpu=400m, limited: pods=3,requests.cpu=400m"),
        "{out}"
    );

    // Object counts (kube-root-ca.crt counts too, as on any cluster).
    for name in ["a", "b"] {
        server.kubectl_ok(&["create", "configmap", name, "-n", "q"]);
    }
    let out = server.kubectl(&["create", "configmap", "c", "-n", "q"]);
    assert!(
        text(&out).contains("configmaps \"c\" is forbidden: exceeded quota: compute, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"),
        "{}",
        text(&out)
    );
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=0",
        "-n",
        "q",
    ]);
    let out = server.kubectl(&[
        "create",
        "deployment",
        "web2",
        "--image=nginx",
        "--replicas=0",
        "-n",
        "q",
    ]);
    assert!(
        text(&out).contains("deployments.apps \"web2\" is forbidden: exceeded quota: compute, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"),
        "{}",
        text(&out)
    );

    // describe shows used against hard once the controller caught up.
    server.kubectl_ok(&[
        "delete",
        "pod",
        "third",
        "-n",
        "q",
        "--grace-period=0",
        "--force",
    ]);
    wait_for(
        "the quota to see the deletion",
        Duration::from_secs(30),
        || {
            let q = get_json(&server, &["quota", "compute"]);
            q["status"]["used"]["pods"] == "2" && q["status"]["used"]["configmaps"] == "3"
        },
    );
    let describe = server.kubectl_ok(&["describe", "quota", "compute", "-n", "q"]);
    let rows: Vec<Vec<&str>> = describe
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for expected in [
        ["configmaps", "3", "3"],
        ["count/deployments.apps", "1", "1"],
        ["pods", "2", "3"],
        ["requests.cpu", "300m", "400m"],
        ["limits.memory", "512Mi", "1Gi"],
    ] {
        assert!(
            rows.iter().any(|r| r[..] == expected[..]),
            "{expected:?} missing from:\n{describe}"
        );
    }
}

#[test]
fn quotas_on_compute_need_explicit_requests() {
    let server = ApiServer::start_with(&["--controllers"]);
    server.kubectl_ok(&["create", "namespace", "q"]);
    apply_ok(
        &server,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: mem}\nspec:\n  hard: {requests.memory: 1Gi, limits.cpu: '2'}\n",
    );
    let out = refused(&server, &pod("bare", "{}"));
    assert!(
        out.contains(
            "pods \"bare\" is forbidden: failed quota: mem: must specify limits.cpu for: app; requests.memory for: app"
        ),
        "{out}"
    );
    apply_ok(
        &server,
        &pod(
            "ok",
            "{requests: {memory: 100Mi}, limits: {cpu: '1', memory: 100Mi}}",
        ),
    );

    // A BestEffort-scoped quota counts only pods that ask for nothing.
    server.kubectl_ok(&["create", "namespace", "s"]);
    let in_s = |yaml: &str| server.kubectl_stdin(&["create", "-n", "s", "-f", "-"], yaml);
    let out = in_s(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: besteffort}\nspec:\n  hard: {pods: '1'}\n  scopes: [BestEffort]\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(in_s(&pod("first", "{}")).status.success());
    let out = in_s(&pod("second", "{}"));
    assert!(
        text(&out).contains("pods \"second\" is forbidden: exceeded quota: besteffort, requested: pods=1, used: pods=1, limited: pods=1"),
        "{}",
        text(&out)
    );
    let out = in_s(&pod("burstable", "{requests: {cpu: 10m}}"));
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the scoped quota's status", Duration::from_secs(30), || {
        let q: Value = serde_json::from_str(&server.kubectl_ok(&[
            "get",
            "quota",
            "besteffort",
            "-n",
            "s",
            "-o",
            "json",
        ]))
        .unwrap_or_default();
        q["status"]["used"]["pods"] == "1"
    });
}

#[test]
fn scope_selectors_and_updates_are_checked() {
    let server = ApiServer::start_with(&["--controllers"]);
    server.kubectl_ok(&["create", "namespace", "q"]);
    apply_ok(
        &server,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
    );
    // Only pods of priority class `high` count against this quota.
    apply_ok(
        &server,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: high-pods}\nspec:\n  hard: {pods: '1'}\n  scopeSelector:\n    matchExpressions:\n    - {scopeName: PriorityClass, operator: In, values: [high]}\n",
    );
    let high = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: high\n  containers: [{{name: app, image: busybox}}]\n"
        )
    };
    apply_ok(&server, &high("h1"));
    let out = refused(&server, &high("h2"));
    assert!(
        out.contains("pods \"h2\" is forbidden: exceeded quota: high-pods, requested: pods=1, used: pods=1, limited: pods=1"),
        "{out}"
    );
    apply_ok(&server, &pod("ordinary", "{}"));
    wait_for(
        "the selector-scoped quota's status",
        Duration::from_secs(30),
        || get_json(&server, &["quota", "high-pods"])["status"]["used"]["pods"] == "1",
    );

    // An update that raises usage is checked too: a Service turning NodePort needs node ports.
    apply_ok(
        &server,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: ports}\nspec:\n  hard: {services.nodeports: '1'}\n",
    );
    apply_ok(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: a, port: 80}, {name: b, port: 81}]\n",
    );
    let out = server.kubectl(&[
        "patch",
        "svc",
        "web",
        "-n",
        "q",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    assert!(!out.status.success(), "the patch should be refused");
    assert!(
        text(&out).contains("services \"web\" is forbidden: exceeded quota: ports, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        get_json(&server, &["svc", "web"])["spec"]["type"],
        "ClusterIP",
        "a refused update changes nothing"
    );
}
