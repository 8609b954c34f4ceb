//! Server-side apply and managedFields through the real kubectl (and curl for what kubectl does
//! not send): what `--show-managed-fields` prints after create, label, scale, edit and apply
//! matches what a real cluster prints for the same commands.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn get_json(server: &ApiServer, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&server.kubectl_ok(&args)).expect("json")
}

fn apply_ssa(server: &ApiServer, manifest: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(extra);
    server.kubectl_stdin(&args, manifest)
}

fn apply_ssa_ok(server: &ApiServer, manifest: &str, extra: &[&str]) -> String {
    let out = apply_ssa(server, manifest, extra);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    stdout(&out)
}

/// (manager, operation, subresource, fieldsV1, has a time) of every entry, in order.
fn entries(obj: &Value) -> Vec<(String, String, String, Value, bool)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("manager"),
                s("operation"),
                s("subresource"),
                e["fieldsV1"].clone(),
                e.get("time").is_some(),
            )
        })
        .collect()
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  labels: {app: cfg}
data:
  a: \"1\"
  b: \"2\"
";

#[test]
fn server_side_apply_creates_updates_and_leaves_an_unchanged_object_alone() {
    let server = ApiServer::start();
    assert!(apply_ssa_ok(&server, CM, &[]).contains("configmap/cfg serverside-applied"));
    let cm = get_json(&server, &["cm", "cfg"]);
    assert_eq!(cm["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        entries(&cm),
        [(
            "kubectl".into(),
            "Apply".into(),
            String::new(),
            json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}),
            true
        )]
    );
    // The same configuration again changes nothing, not even the resourceVersion.
    apply_ssa_ok(&server, CM, &[]);
    let again = get_json(&server, &["cm", "cfg"]);
    assert_eq!(rv(&again), rv(&cm));
    assert_eq!(
        again["metadata"]["managedFields"],
        cm["metadata"]["managedFields"]
    );
    // A changed value is written.
    apply_ssa_ok(&server, &CM.replace("a: \"1\"", "a: \"9\""), &[]);
    let changed = get_json(&server, &["cm", "cfg"]);
    assert_eq!(changed["data"]["a"], "9");
    assert_ne!(rv(&changed), rv(&cm));
}

#[test]
fn a_field_no_longer_applied_is_removed_unless_someone_else_owns_it() {
    let server = ApiServer::start();
    apply_ssa_ok(&server, CM, &[]);
    // Another manager sets c; dropping b and c from kubectl's configuration removes only b.
    server.kubectl_ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"c":"3"}}"#,
    ]);
    apply_ssa_ok(&server, &CM.replace("  b: \"2\"\n", ""), &[]);
    let cm = get_json(&server, &["cm", "cfg"]);
    assert_eq!(cm["data"], json!({"a": "1", "c": "3"}));
    assert_eq!(
        entry(&cm, "kubectl-patch", "Update").map(|e| e["fieldsV1"].clone()),
        Some(json!({"f:data": {"f:c": {}}}))
    );
    // Labels applied before and no longer applied go too.
    apply_ssa_ok(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n",
        &[],
    );
    let cm = get_json(&server, &["cm", "cfg"]);
    assert!(cm["metadata"].get("labels").is_none(), "{cm}");
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
";

#[test]
fn conflicts_name_the_other_manager_and_force_takes_the_field() {
    let server = ApiServer::start();
    let out = server.kubectl_stdin(&["apply", "-f", "-"], DEPLOY);
    assert!(out.status.success(), "{}", text(&out));
    let scaled = DEPLOY.replace("replicas: 2", "replicas: 4");
    let out = apply_ssa(&server, &scaled, &["--field-manager=ci"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(get_json(&server, &["deploy", "web"])["spec"]["replicas"], 2);
    apply_ssa_ok(
        &server,
        &scaled,
        &["--field-manager=ci", "--force-conflicts"],
    );
    let d = get_json(&server, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    // ci owns replicas now, and nobody else does. (kubectl then also folds the client-side
    // apply manager into ci, as it does for any server-side apply of such an object.)
    let owners: Vec<String> = d["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| format!("{} {}", e["manager"], e["operation"]))
        .collect();
    assert_eq!(owners, ["\"ci\" \"Apply\""]);

    // Between two server-side appliers: the same value is shared without conflict.
    apply_ssa_ok(&server, &scaled, &["--field-manager=other"]);
    let out = apply_ssa(&server, DEPLOY, &["--field-manager=other"]);
    assert!(
        text(&out).contains("conflict with \"ci\": .spec.replicas"),
        "{}",
        text(&out)
    );
}

#[test]
fn client_side_apply_migrates_to_server_side_apply() {
    let server = ApiServer::start();
    let out = server.kubectl_stdin(&["apply", "-f", "-"], CM);
    assert!(out.status.success(), "{}", text(&out));
    let before = get_json(&server, &["cm", "cfg"]);
    assert_eq!(
        entries(&before)
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str()))
            .collect::<Vec<_>>(),
        [("kubectl-client-side-apply", "Update")]
    );
    // kubectl applies, saves the annotation under kubectl-last-applied, rewrites the managed
    // fields with a JSON patch and applies again.
    let out = server.kubectl_stdin(&["apply", "--server-side", "-f", "-", "-v=6"], CM);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("fieldManager=kubectl-last-applied"), "{log}");
    assert!(!log.contains("Warning"), "{log}");
    let cm = get_json(&server, &["cm", "cfg"]);
    assert_eq!(
        entries(&cm)
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str(), e.3.clone()))
            .collect::<Vec<_>>(),
        [
            (
                "kubectl",
                "Apply",
                json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
            ),
            (
                "kubectl-last-applied",
                "Apply",
                json!({"f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/last-applied-configuration": {}}}})
            ),
        ]
    );
    // Now kubectl owns b: dropping it from the file removes it, and the annotation follows.
    apply_ssa_ok(&server, &CM.replace("  b: \"2\"\n", ""), &[]);
    let cm = get_json(&server, &["cm", "cfg"]);
    assert_eq!(cm["data"], json!({"a": "1"}));
    let annotation =
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap_or_default();
    let last: Value = serde_json::from_str(annotation).expect("annotation is JSON");
    assert_eq!(last["data"], json!({"a": "1"}));
}

#[test]
fn managed_fields_after_create_label_scale_and_edit_match_a_real_cluster() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "deployment", "web", "--image=nginx"]);
    let d = get_json(&server, &["deploy", "web"]);
    assert_eq!(
        entries(&d),
        [(
            "kubectl-create".into(),
            "Update".into(),
            String::new(),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {},
                    "f:selector": {},
                    "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {
                            "f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {},
                                "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {},
                                "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                            "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                            "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}}}}),
            true
        )]
    );

    server.kubectl_ok(&["label", "deploy", "web", "tier=frontend"]);
    server.kubectl_ok(&["scale", "deploy", "web", "--replicas=3"]);
    let out = Command::new("kubectl")
        .args(["--context", server.context(), "edit", "deploy", "web"])
        .env("KUBECONFIG", server.sandbox.kubeconfig())
        .env("HOME", server.sandbox.path())
        .env("KUBE_EDITOR", "sed -i s/image:.nginx$/image:\\ nginx:1.27/")
        .output()
        .expect("kubectl edit");
    assert!(out.status.success(), "{}", text(&out));
    let d = get_json(&server, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let mut got: Vec<(String, String, String, bool)> = entries(&d)
        .into_iter()
        .map(|e| (e.0, e.1, e.2, e.4))
        .collect();
    got.sort();
    // kubectl scale names no field manager: the server takes the User-Agent's first word.
    let scale_manager = got
        .iter()
        .find(|e| e.2 == "scale")
        .map(|e| e.0.clone())
        .expect("a scale entry");
    assert!(scale_manager.starts_with("kubectl"), "{scale_manager}");
    let mut want: Vec<(String, String, String, bool)> = vec![
        (
            "kubectl-create".into(),
            "Update".into(),
            String::new(),
            true,
        ),
        ("kubectl-label".into(), "Update".into(), String::new(), true),
        ("kubectl-edit".into(), "Update".into(), String::new(), true),
        // Kubernetes records scale updates without a time.
        (
            scale_manager.clone(),
            "Update".into(),
            "scale".into(),
            false,
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    let fields = |m: &str, sub: &str| {
        d["metadata"]["managedFields"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|e| e["manager"] == m && e["subresource"].as_str().unwrap_or("") == sub)
            })
            .map(|e| e["fieldsV1"].clone())
    };
    assert_eq!(
        fields("kubectl-label", ""),
        Some(json!({"f:metadata": {"f:labels": {"f:tier": {}}}}))
    );
    assert_eq!(
        fields(&scale_manager, "scale"),
        Some(json!({"f:spec": {"f:replicas": {}}}))
    );
    assert_eq!(
        fields("kubectl-edit", ""),
        Some(
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"nginx\"}": {"f:image": {}}}}}}})
        )
    );
    // The creator lost what the others took over.
    let create = fields("kubectl-create", "").expect("create entry");
    assert!(create["f:spec"].get("f:replicas").is_none(), "{create}");
    assert!(
        create["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
            .get("f:image")
            .is_none(),
        "{create}"
    );
}

#[test]
fn server_dry_run_applies_nothing() {
    let server = ApiServer::start();
    let out = apply_ssa_ok(&server, CM, &["--dry-run=server"]);
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    let missing = server.kubectl(&["get", "cm", "cfg"]);
    assert!(!missing.status.success());
    apply_ssa_ok(&server, CM, &[]);
    let before = get_json(&server, &["cm", "cfg"]);
    let out = apply_ssa(
        &server,
        &CM.replace("a: \"1\"", "a: \"2\""),
        &["--dry-run=server", "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let dry: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(dry["data"]["a"], "2");
    let after = get_json(&server, &["cm", "cfg"]);
    assert_eq!(after["data"]["a"], "1");
    assert_eq!(rv(&after), rv(&before));
}

#[test]
fn multi_document_files_apply_every_object() {
    let server = ApiServer::start();
    let manifest = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data: {mode: fast}
---
apiVersion: v1
kind: Service
metadata:
  name: front
  namespace: shop
spec:
  selector: {app: front}
  ports:
  - port: 80
    targetPort: 8080
";
    let out = apply_ssa_ok(&server, manifest, &[]);
    for line in [
        "namespace/shop serverside-applied",
        "configmap/settings serverside-applied",
        "service/front serverside-applied",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let svc = get_json(&server, &["svc", "front", "-n", "shop"]);
    assert_eq!(
        entry(&svc, "kubectl", "Apply").map(|e| e["fieldsV1"].clone()),
        Some(
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {},
            "f:port": {}, "f:targetPort": {}}}, "f:selector": {}}})
        )
    );
    // Defaults and allocations are there, owned by nobody.
    assert!(svc["spec"]["clusterIP"].is_string());
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
}

/// curl with the kubeconfig's client certificate, for requests kubectl cannot make.
struct Raw {
    server: String,
    dir: std::path::PathBuf,
}

impl Raw {
    fn new(api: &ApiServer) -> Self {
        let config: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(api.sandbox.kubeconfig()).expect("kubeconfig"),
        )
        .expect("kubeconfig is YAML");
        let field = |path: &[&str]| {
            let mut v = &config;
            for p in path {
                v = match p.parse::<usize>() {
                    Ok(i) => &v[i],
                    Err(_) => &v[*p],
                };
            }
            v.as_str().unwrap_or_default().to_string()
        };
        use base64::Engine as _;
        let decode = |s: String| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64")
        };
        let dir = api.sandbox.path().to_path_buf();
        std::fs::write(
            dir.join("client.crt"),
            decode(field(&["users", "0", "user", "client-certificate-data"])),
        )
        .expect("write cert");
        std::fs::write(
            dir.join("client.key"),
            decode(field(&["users", "0", "user", "client-key-data"])),
        )
        .expect("write key");
        Raw {
            server: field(&["clusters", "0", "cluster", "server"]),
            dir,
        }
    }

    fn patch(&self, path: &str, content_type: &str, body: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sk", "-X", "PATCH", "--cert"])
            .arg(self.dir.join("client.crt"))
            .arg("--key")
            .arg(self.dir.join("client.key"))
            .args(["-H", &format!("Content-Type: {content_type}")])
            .args(["--data-binary", body])
            .arg(format!("{}{path}", self.server))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("curl printed no JSON ({e}): {}", text(&out)))
    }
}

#[test]
fn apply_requests_are_checked_as_kubernetes_checks_them() {
    let server = ApiServer::start();
    let raw = Raw::new(&server);
    let apply = "application/apply-patch+yaml";
    let path = "/api/v1/namespaces/default/configmaps/j";
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"},"data":{"k":"v"}}"#;
    let status = raw.patch(path, apply, cm);
    assert_eq!(status["code"], 422, "{status}");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // A JSON body is YAML too; the object is created.
    let created = raw.patch(&format!("{path}?fieldManager=json"), apply, cm);
    assert_eq!(created["data"]["k"], "v", "{created}");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "json");
    let wrong_kind = raw.patch(
        &format!("{path}?fieldManager=json"),
        apply,
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"j"}}"#,
    );
    assert_eq!(wrong_kind["code"], 400, "{wrong_kind}");
    assert_eq!(
        wrong_kind["message"],
        "invalid object type: /v1, Kind=Secret"
    );
    let with_managed = raw.patch(
        &format!("{path}?fieldManager=json"),
        apply,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j","managedFields":[{"manager":"x"}]}}"#,
    );
    assert_eq!(
        with_managed["message"],
        "metadata.managedFields must be nil"
    );
    let forced_merge = raw.patch(
        &format!("{path}?force=true"),
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(forced_merge["code"], 422, "{forced_merge}");
    // Status is applied through its subresource and recorded as such.
    server.kubectl_ok(&["create", "deployment", "web", "--image=nginx"]);
    let status_apply = raw.patch(
        "/apis/apps/v1/namespaces/default/deployments/web/status?fieldManager=ctl",
        apply,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"status":{"replicas":1}}"#,
    );
    assert_eq!(status_apply["status"]["replicas"], 1, "{status_apply}");
    let d = get_json(&server, &["deploy", "web"]);
    let ctl = d["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "ctl"))
        .cloned()
        .expect("ctl entry");
    assert_eq!(ctl["subresource"], "status");
    assert_eq!(ctl["operation"], "Apply");
    assert_eq!(ctl["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
}
