//! kubectl's typed clients send protobuf bodies; the API server must read them as it reads JSON.

mod common;

use common::*;
use serde_json::Value;

fn json(server: &ApiServer, args: &[&str]) -> Value {
    serde_json::from_str(&server.kubectl_ok(args)).expect("kubectl printed JSON")
}

/// The fields the server assigns, which differ between any two objects.
fn without_server_fields(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "name",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(k);
        }
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove("kubernetes.io/metadata.name");
        }
    }
    v
}

#[test]
fn kubectl_create_sends_protobuf_and_the_objects_read_back() {
    let server = ApiServer::start();

    // Guard: if kubectl ever switched these to JSON, this file would test nothing.
    let out = server.kubectl(&["create", "namespace", "proto", "-v=8"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "{}",
        text(&out)
    );

    // The same namespace created through JSON must read back identically.
    let out = server.kubectl_stdin(
        &["create", "--validate=false", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"viajson"}}"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        without_server_fields(json(&server, &["get", "ns", "proto", "-o", "json"])),
        without_server_fields(json(&server, &["get", "ns", "viajson", "-o", "json"]))
    );

    server.kubectl_ok(&[
        "create",
        "configmap",
        "cm",
        "--from-literal=a=b",
        "--from-literal=empty=",
    ]);
    let cm = json(&server, &["get", "configmap", "cm", "-o", "json"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "b", "empty": ""}));

    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=k=v",
        "--from-literal=username=u",
        "--from-literal=password=p",
        "--type=kubernetes.io/basic-auth",
    ]);
    let secret = json(&server, &["get", "secret", "s", "-o", "json"]);
    assert_eq!(secret["data"]["k"], "dg==");
    assert_eq!(secret["type"], "kubernetes.io/basic-auth");

    server.kubectl_ok(&["create", "serviceaccount", "sa"]);
    json(&server, &["get", "serviceaccount", "sa", "-o", "json"]);

    server.kubectl_ok(&["create", "service", "clusterip", "svc", "--tcp=80:8080"]);
    let svc = json(&server, &["get", "service", "svc", "-o", "json"]);
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["port"], 80);
    assert_eq!(port["targetPort"], 8080);
    assert_eq!(port["name"], "80-8080");
    assert_eq!(svc["spec"]["selector"]["app"], "svc");
}

/// `kubectl debug --copy-to` GETs a pod and POSTs a copy as protobuf: a whole pod spec with
/// probes, volumes, resources, env sources and security contexts makes the trip.
#[test]
fn kubectl_debug_copies_a_full_pod_spec_through_protobuf() {
    let server = ApiServer::start();
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"full","labels":{"app":"full"}},
      "spec":{
        "automountServiceAccountToken":false,"terminationGracePeriodSeconds":0,
        "securityContext":{"runAsUser":0,"runAsNonRoot":false,"fsGroup":2000},
        "tolerations":[{"key":"k","operator":"Exists","effect":"NoExecute","tolerationSeconds":30}],
        "volumes":[
          {"name":"cm","configMap":{"name":"cfg","items":[{"key":"a","path":"a.txt","mode":420}],"optional":false}},
          {"name":"scratch","emptyDir":{"medium":"Memory","sizeLimit":"64Mi"}},
          {"name":"claim","ephemeral":{"volumeClaimTemplate":{"spec":{"accessModes":["ReadWriteOnce"],
            "storageClassName":"","resources":{"requests":{"storage":"1Gi"}}}}}}],
        "containers":[{"name":"main","image":"nginx",
          "ports":[{"name":"http","containerPort":80,"protocol":"TCP"}],
          "env":[{"name":"A","value":"1"},
            {"name":"POD","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"metadata.name"}}},
            {"name":"SEC","valueFrom":{"secretKeyRef":{"name":"s","key":"k","optional":true}}}],
          "resources":{"limits":{"cpu":"500m","memory":"128Mi"},"requests":{"cpu":"250m"}},
          "volumeMounts":[{"name":"cm","mountPath":"/etc/cfg","readOnly":true}],
          "livenessProbe":{"httpGet":{"path":"/healthz","port":"http"},"initialDelaySeconds":5},
          "readinessProbe":{"tcpSocket":{"port":80},"periodSeconds":3},
          "securityContext":{"privileged":false,"allowPrivilegeEscalation":false,
            "capabilities":{"drop":["ALL"]}}}]}}"#;
    let out = server.kubectl_stdin(&["create", "--validate=false", "-f", "-"], pod);
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&[
        "debug",
        "full",
        "--copy-to=copy",
        "--image=busybox",
        "--container=debugger",
        "--attach=false",
    ]);
    let original = json(&server, &["get", "pod", "full", "-o", "json"]);
    let mut copy = json(&server, &["get", "pod", "copy", "-o", "json"]);
    let containers = copy["spec"]["containers"]
        .as_array_mut()
        .expect("containers");
    containers.retain(|c| c["name"] != "debugger");
    for field in [
        "volumes",
        "containers",
        "securityContext",
        "tolerations",
        "automountServiceAccountToken",
        "terminationGracePeriodSeconds",
    ] {
        let (mut a, mut b) = (original["spec"][field].clone(), copy["spec"][field].clone());
        // Go's JSON, like the decoder, writes a value-typed metadata's zero creationTimestamp.
        for v in [&mut a, &mut b] {
            if let Some(t) = v.pointer_mut("/2/ephemeral/volumeClaimTemplate") {
                t.as_object_mut().map(|o| o.remove("metadata"));
            }
        }
        assert_eq!(a, b, "spec.{field}");
    }
    assert_eq!(copy["spec"]["securityContext"]["runAsUser"], 0);
    assert_eq!(
        copy["spec"]["volumes"][2]["ephemeral"]["volumeClaimTemplate"]["spec"]["storageClassName"],
        ""
    );
}

/// `kubectl drain` evicts pods through pods/eviction with a protobuf Eviction body.
#[test]
fn kubectl_drain_evicts_with_a_protobuf_eviction() {
    let server = ApiServer::start();
    for object in [
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"onnode"},
            "spec":{"nodeName":"n1","containers":[{"name":"c","image":"nginx"}]}}"#,
    ] {
        let out = server.kubectl_stdin(&["create", "--validate=false", "-f", "-"], object);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = server.kubectl(&[
        "drain",
        "n1",
        "--force",
        "--grace-period=0",
        "--timeout=60s",
        "-v=8",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        // kubectl's typed policy client posts the Eviction as protobuf; draining succeeded, so it was decoded.
        log.contains("POST") && log.contains("/eviction") && log.contains("eviction_expansion.go"),
        "{log}"
    );
    let pods = server.kubectl_ok(&["get", "pods", "-o", "name"]);
    assert!(!pods.contains("onnode"), "{pods}");
}
