//! Strategic merge patch through the real kubectl: client-side apply (which computes its patches
//! from our OpenAPI documents), edit, set image, patch, label and annotate.

mod common;

use common::*;
use serde_json::Value;

fn get_json(server: &ApiServer, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&args)).expect("json")
}

fn apply(server: &ApiServer, manifest: &str) -> String {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    stdout(&out)
}

#[test]
fn apply_twice_updates_and_prunes_keys() {
    let server = ApiServer::start();
    let v1 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  labels: {app: demo}\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    assert!(apply(&server, v1).contains("configmap/demo created"));
    let v2 = v1.replace("b: \"2\"", "c: \"3\"");
    assert!(apply(&server, &v2).contains("configmap/demo configured"));
    let cm = get_json(&server, &["cm", "demo"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "c": "3"}));
    let rv = cm["metadata"]["resourceVersion"].clone();
    assert!(apply(&server, &v2).contains("configmap/demo unchanged"));
    assert_eq!(
        get_json(&server, &["cm", "demo"])["metadata"]["resourceVersion"],
        rv
    );
}

// A Deployment rather than a Pod: a pod's spec is immutable but for images, on a real cluster too.
const POD: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx:1.25
        env:
        - {name: A, value: \"1\"}
        - {name: B, value: \"2\"}
        - {name: C, value: \"3\"}
        ports:
        - containerPort: 80
      - name: side
        image: busybox
        command: [sleep, \"3600\"]
";

fn env_names(pod: &Value, container: usize) -> Vec<String> {
    pod["spec"]["template"]["spec"]["containers"][container]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn apply_prunes_a_list_element_and_keeps_order() {
    let server = ApiServer::start();
    apply(&server, POD);
    let without_b = POD.replace("        - {name: B, value: \"2\"}\n", "");
    let out = apply(&server, &without_b.replace("nginx:1.25", "nginx:1.26"));
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let pod = get_json(&server, &["deployment", "web"]);
    assert_eq!(env_names(&pod, 0), ["A", "C"]);
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][1]["name"],
        "side"
    );

    // A container added in the middle of the manifest lands in the middle.
    let with_mid = without_b.replace(
        "      - name: side\n",
        "      - name: mid\n        image: redis\n      - name: side\n",
    );
    apply(&server, &with_mid);
    let pod = get_json(&server, &["deployment", "web"]);
    let names: Vec<&str> = pod["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["app", "mid", "side"]);
}

#[test]
fn edit_set_image_patch_label_and_annotate() {
    let server = ApiServer::start();
    apply(&server, POD);

    // kubectl edit with an editor that changes a value and drops an env var.
    let editor = server.sandbox.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i -e 's/value: \"1\"/value: \"one\"/' -e '/name: C/,+1d' \"$1\"\n",
    )
    .expect("editor");
    let mut perms = std::fs::metadata(&editor).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&editor, perms).expect("chmod");
    let out = std::process::Command::new("kubectl")
        .args(["--context", server.context(), "edit", "deployment", "web"])
        .env("KUBECONFIG", server.sandbox.kubeconfig())
        .env("HOME", server.sandbox.path())
        .env("EDITOR", &editor)
        .output()
        .expect("kubectl edit");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("deployment.apps/web edited"),
        "{}",
        text(&out)
    );
    let pod = get_json(&server, &["deployment", "web"]);
    assert_eq!(env_names(&pod, 0), ["A", "B"]);
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "one"
    );

    server.kubectl_ok(&["set", "image", "deployment/web", "app=nginx:1.27"]);
    let pod = get_json(&server, &["deployment", "web"]);
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][1]["image"],
        "busybox"
    );

    // A container only in the patch comes first, as in the kubectl patch docs.
    let patch =
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"extra","image":"redis"}]}}}}"#;
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        patch,
    ]);
    let pod = get_json(&server, &["deployment", "web"]);
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][0]["name"],
        "extra"
    );
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let delete =
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"extra","$patch":"delete"}]}}}}"#;
    server.kubectl_ok(&["patch", "deployment", "web", "-p", delete]);
    let pod = get_json(&server, &["deployment", "web"]);
    assert_eq!(
        pod["spec"]["template"]["spec"]["containers"][0]["name"],
        "app"
    );
    let again = server.kubectl_ok(&["patch", "deployment", "web", "-p", delete]);
    assert!(again.contains("(no change)"), "{again}");

    server.kubectl_ok(&["label", "deployment", "web", "tier=fe"]);
    server.kubectl_ok(&["annotate", "deployment", "web", "note=hi"]);
    let pod = get_json(&server, &["deployment", "web"]);
    assert_eq!(pod["metadata"]["labels"]["tier"], "fe");
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert_eq!(pod["metadata"]["annotations"]["note"], "hi");
    server.kubectl_ok(&["label", "deployment", "web", "tier-"]);
    let pod = get_json(&server, &["deployment", "web"]);
    assert!(pod["metadata"]["labels"].get("tier").is_none());
}

#[test]
fn service_ports_merge_by_port_and_bad_patches_fail() {
    let server = ApiServer::start();
    apply(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n",
    );
    let patch = r#"{"spec":{"ports":[{"name":"https","port":443,"targetPort":8443}]}}"#;
    server.kubectl_ok(&["patch", "svc", "svc", "-p", patch]);
    let svc = get_json(&server, &["svc", "svc"]);
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [443, 80]);

    let out = server.kubectl(&[
        "patch",
        "svc",
        "svc",
        "-p",
        r#"{"spec":{"ports":[{"name":"x"}]}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not contain declared merge key: port"),
        "{}",
        text(&out)
    );
    let out = server.kubectl(&[
        "patch",
        "svc",
        "svc",
        "-p",
        r#"{"spec":{"$retainKeys":["type"],"selector":{"a":"b"}}}"#,
    ]);
    assert!(
        text(&out).contains("invalid patch format of retainKeys"),
        "{}",
        text(&out)
    );
}

#[test]
fn deployments_apply_retain_keys_and_rollout_restart() {
    let server = ApiServer::start();
    let resources = server.kubectl_ok(&["api-resources", "--api-group=apps", "-o", "name"]);
    assert!(
        resources.lines().any(|l| l == "deployments.apps"),
        "deployments.apps is not served: {resources}"
    );
    let deploy = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
";
    apply(&server, deploy);
    let recreate = deploy.replace(
        "    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
        "    type: Recreate\n",
    );
    apply(&server, &recreate);
    let got = get_json(&server, &["deploy", "web"]);
    assert_eq!(
        got["spec"]["strategy"],
        serde_json::json!({"type": "Recreate"})
    );
    server.kubectl_ok(&["rollout", "restart", "deployment/web"]);
    let got = get_json(&server, &["deploy", "web"]);
    assert!(
        got["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    assert_eq!(got["spec"]["template"]["metadata"]["labels"]["app"], "web");
}
