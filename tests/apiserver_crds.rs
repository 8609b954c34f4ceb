//! CustomResourceDefinitions through the real kubectl against the standalone API server: a
//! definition with two versions, shortNames, categories, printer columns, status and scale
//! subresources, defaults, pruning and value rules; the objects it defines served by every verb.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::*;
use serde_json::Value;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Size
      type: string
      jsonPath: .spec.size
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Color
      type: string
      priority: 1
      jsonPath: .spec.color
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            x-kubernetes-validations:
            - rule: "self.size == 'large' || self.replicas <= 5"
              message: a small widget has at most 5 replicas
              fieldPath: .replicas
            properties:
              size:
                type: string
                description: How big the widget is.
                enum: [small, large]
              replicas:
                type: integer
                minimum: 0
                maximum: 10
                default: 1
              color:
                type: string
                pattern: '^[a-z]+$'
                default: blue
              port:
                x-kubernetes-int-or-string: true
                x-kubernetes-validations:
                - rule: self == oldSelf
                  message: port is immutable
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    deprecationWarning: example.com/v1beta1 Widget is deprecated; use example.com/v1
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  labels: {app: demo}
spec:
  size: small
  port: http
  extra: {anything: {goes: 1}}
";

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

fn established(server: &ApiServer, crd: &str) {
    server.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/{crd}"),
    ]);
}

#[test]
fn a_definition_is_established_and_its_objects_are_served() {
    let server = ApiServer::start();
    assert!(apply(&server, CRD).contains("widgets.example.com created"));
    established(&server, "widgets.example.com");
    let crd = get_json(&server, &["crd", "widgets.example.com"]);
    let conditions: Vec<(String, String)> = crd["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(conditions.contains(&("NamesAccepted".into(), "True".into())));
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    let table = server.kubectl_ok(&["get", "crd"]);
    assert!(
        table.starts_with("NAME") && table.contains("CREATED AT"),
        "{table}"
    );

    // Create: defaults filled in, unknown-but-preserved fields kept, int-or-string accepted.
    assert!(apply(&server, WIDGET).contains("widget.example.com/w1 created"));
    let w = get_json(&server, &["wd", "w1"]);
    assert_eq!(w["spec"]["replicas"], 1);
    assert_eq!(w["spec"]["color"], "blue");
    assert_eq!(w["spec"]["extra"]["anything"]["goes"], 1);
    assert_eq!(w["metadata"]["generation"], 1);

    // Printer columns, the wide one only with -o wide.
    let table = server.kubectl_ok(&["get", "widgets"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SIZE", "REPLICAS", "AGE"], "{table}");
    assert!(table.contains("w1") && table.contains("small"), "{table}");
    let wide = server.kubectl_ok(&["get", "widgets", "-o", "wide"]);
    assert!(wide.contains("COLOR") && wide.contains("blue"), "{wide}");

    // Categories: `get all` lists it.
    let all = server.kubectl_ok(&["get", "all"]);
    assert!(all.contains("widget.example.com/w1"), "{all}");

    // Label selectors.
    let listed = server.kubectl_ok(&["get", "widgets", "-l", "app=demo", "-o", "name"]);
    assert_eq!(listed.trim(), "widget.example.com/w1");
    let listed = server.kubectl_ok(&["get", "widgets", "-l", "app=other", "-o", "name"]);
    assert_eq!(listed.trim(), "");
    let listed = server.kubectl_ok(&[
        "get",
        "widgets",
        "--field-selector",
        "metadata.name=w1",
        "-o",
        "name",
    ]);
    assert_eq!(listed.trim(), "widget.example.com/w1");

    // Merge patch bumps the generation; the strategic merge default is refused as Kubernetes does.
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":"large"}}"#,
    ]);
    let w = get_json(&server, &["widget", "w1"]);
    assert_eq!(w["spec"]["size"], "large");
    assert_eq!(w["metadata"]["generation"], 2);
    let out = server.kubectl(&[
        "patch",
        "widget",
        "w1",
        "-p",
        r#"{"spec":{"size":"small"}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{}",
        text(&out)
    );
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/color","value":"red"}]"#,
    ]);
    assert_eq!(get_json(&server, &["widget", "w1"])["spec"]["color"], "red");

    // Status goes only through /status; the main resource ignores it.
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"selector":"app=demo"}}"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    let w = get_json(&server, &["widget", "w1"]);
    assert_eq!(w["status"]["replicas"], 2);
    assert_eq!(w["metadata"]["generation"], 3);

    // Scale through /scale.
    let out = server.kubectl_ok(&["scale", "widget", "w1", "--replicas=4"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(get_json(&server, &["widget", "w1"])["spec"]["replicas"], 4);

    // Server-side apply takes ownership and records managedFields.
    let ssa = WIDGET.replace("size: small", "size: small\n  replicas: 5");
    let out = server.kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &ssa,
    );
    assert!(out.status.success(), "{}", text(&out));
    let w = get_json(&server, &["widget", "w1", "--show-managed-fields"]);
    assert_eq!(w["spec"]["replicas"], 5);
    let managers: Vec<&str> = w["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // The deprecated version serves the same object with a Warning.
    let out = server.kubectl(&["get", "widgets.v1beta1.example.com", "w1", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let old: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(old["apiVersion"], "example.com/v1beta1");
    assert_eq!(old["spec"]["replicas"], 5);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("example.com/v1beta1 Widget is deprecated; use example.com/v1"),
        "{}",
        text(&out)
    );

    // describe prints the object through the same discovery and REST mapping.
    let described = server.kubectl_ok(&["describe", "widget", "w1"]);
    assert!(
        described.contains("Name:         w1") && described.contains("Kind:         Widget"),
        "{described}"
    );

    // explain reads the published schema.
    let explained = server.kubectl_ok(&["explain", "widget.spec.size"]);
    assert!(explained.contains("How big the widget is."), "{explained}");

    // Delete one, then the definition takes every remaining object with it.
    apply(&server, &WIDGET.replace("name: w1", "name: w2"));
    server.kubectl_ok(&["delete", "widget", "w1"]);
    assert!(gone(&server.kubectl(&["get", "widget", "w1"])));
    server.kubectl_ok(&["delete", "crd", "widgets.example.com", "--timeout=30s"]);
    assert!(gone(&server.kubectl(&[
        "get",
        "crd",
        "widgets.example.com"
    ])));
    let out = server.kubectl(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets/w2",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    // Recreated, the definition starts empty: the old objects went with it.
    apply(&server, CRD);
    established(&server, "widgets.example.com");
    wait_eq(
        "an empty list of widgets",
        || {
            server
                .kubectl_ok(&["get", "widgets", "-o", "name"])
                .trim()
                .to_string()
        },
        String::new(),
    );
}

#[test]
fn bad_objects_and_definitions_are_refused_with_field_errors() {
    let server = ApiServer::start();
    apply(&server, CRD);
    established(&server, "widgets.example.com");

    let bad = WIDGET.replace("size: small", "size: huge\n  replicas: 20\n  color: Red1");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &bad);
    assert!(!out.status.success());
    let t = text(&out);
    for want in [
        r#"spec.size: Unsupported value: "huge": supported values: "small", "large""#,
        "spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10",
        r#"spec.color: Invalid value: "Red1": spec.color in body should match '^[a-z]+$'"#,
    ] {
        assert!(t.contains(want), "no {want:?} in {t}");
    }
    // CEL rules: one on the spec (with its fieldPath), one transition rule.
    let t = text(&server.kubectl_stdin(
        &["apply", "-f", "-"],
        &WIDGET.replace("size: small", "size: small\n  replicas: 7"),
    ));
    assert!(
        t.contains(
            r#"spec.replicas: Invalid value: "object": a small widget has at most 5 replicas"#
        ),
        "{t}"
    );
    apply(&server, &WIDGET.replace("name: w1", "name: w9"));
    let t = text(&server.kubectl(&[
        "patch",
        "widget",
        "w9",
        "--type=merge",
        "-p",
        r#"{"spec":{"port":8080}}"#,
    ]));
    assert!(
        t.contains(r#"spec.port: Invalid value: "object": port is immutable"#),
        "{t}"
    );

    let missing = WIDGET.replace("  size: small\n", "");
    let t = text(&server.kubectl_stdin(&["create", "-f", "-"], &missing));
    assert!(t.contains("spec.size: Required value"), "{t}");

    // Unknown fields: kubectl's strict validation refuses, --validate=false prunes them.
    let unknown = WIDGET.replace("size: small", "size: small\n  junk: 1");
    let t = text(&server.kubectl_stdin(&["create", "-f", "-"], &unknown));
    assert!(t.contains(r#"unknown field "spec.junk""#), "{t}");
    let out = server.kubectl_stdin(&["create", "--validate=false", "-f", "-"], &unknown);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        get_json(&server, &["widget", "w1"])["spec"]
            .get("junk")
            .is_none()
    );

    // A bad definition: Kubernetes' field errors, nothing stored.
    let bad_crd = CRD
        .replace("name: widgets.example.com", "name: gizmos.example.com")
        .replace("scope: Namespaced", "scope: Galaxy")
        .replace("storage: false", "storage: true");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &bad_crd);
    assert!(!out.status.success());
    let t = text(&out);
    for want in [
        r#"metadata.name: Invalid value: "gizmos.example.com": must be spec.names.plural+"."+spec.group"#,
        r#"spec.scope: Unsupported value: "Galaxy": supported values: "Cluster", "Namespaced""#,
        "must have exactly one version marked as storage version",
    ] {
        assert!(t.contains(want), "no {want:?} in {t}");
    }
    assert!(gone(&server.kubectl(&["get", "crd", "gizmos.example.com"])));

    // What this server does not do is said, not ignored.
    let webhook = STAMP_CRD
        .replace("  scope: Cluster\n", "  scope: Cluster\n  conversion:\n    strategy: Webhook\n    webhook:\n      conversionReviewVersions: [v1]\n      clientConfig: {url: \"https://127.0.0.1:9443/convert\"}\n")
        .replace(
            "spec: {type: object, properties: {color: {type: string}}}",
            "spec: {type: object, properties: {tags: {type: array, x-kubernetes-list-type: set, items: {type: string}}}}",
        );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &webhook);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    // Webhook conversion is served, and list and map types are (server-side apply merges by
    // them): neither is warned about.
    assert!(!t.contains("spec.conversion.strategy"), "{t}");
    assert!(!t.contains("x-kubernetes-list-type"), "{t}");

    // Names another definition of the group holds are not accepted.
    let clash = CRD
        .replace("widgets", "gadgets")
        .replace("singular: widget", "singular: gadget")
        .replace("shortNames: [wd]", "shortNames: [gd]");
    apply(&server, &clash);
    wait_output(
        "the KindConflict condition",
        || {
            server.kubectl_ok(&[
                "get",
                "crd",
                "gadgets.example.com",
                "-o",
                "jsonpath={.status.conditions}",
            ])
        },
        &["KindConflict", r#""Widget\" is already in use"#],
    );
}

#[test]
fn watch_sees_custom_resource_changes() {
    let server = ApiServer::start();
    apply(&server, CRD);
    established(&server, "widgets.example.com");
    apply(&server, WIDGET);
    let mut watch = server.kubectl_spawn(&[
        "get",
        "widgets",
        "-w",
        "-o",
        "custom-columns=NAME:.metadata.name,SIZE:.spec.size",
        "--no-headers",
    ]);
    let lines = BufReader::new(watch.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the listed widget");
    assert!(first.contains("w1") && first.contains("small"), "{first}");
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":"large"}}"#,
    ]);
    let changed = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the change");
    assert!(
        changed.contains("w1") && changed.contains("large"),
        "{changed}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn a_bundle_of_definition_and_objects_applies_once_established() {
    let server = ApiServer::start();
    let bundle = format!(
        "{CRD}---\n{WIDGET}---\n{}",
        WIDGET.replace(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2"
        )
    );
    // As Helm does: the objects are retried until their definition is served.
    wait_until("the bundle to apply", Duration::from_secs(30), || {
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &bundle);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    let names = server.kubectl_ok(&["get", "widgets", "-o", "name"]);
    assert_eq!(names.trim(), "widget.example.com/w1\nwidget.example.com/w2");
}

/// The Python client's CustomObjectsApi (tests/python/crds_test.py): create, patch, patch
/// status, watch, select, delete.
#[test]
fn python_custom_objects_api() {
    use std::process::Command;
    let probe = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .expect("this test needs python3 on PATH");
    assert!(
        probe.status.success(),
        "this test needs the Python kubernetes client (python3 -m pip install kubernetes==37.0.2): {}",
        text(&probe)
    );
    let server = ApiServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/crds_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.sandbox.kubeconfig())
        .env("HOME", server.sandbox.path())
        .output()
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "the Python CustomObjectsApi checks failed:\n{}",
        text(&out)
    );
}

/// A typed custom resource as kube-rs operators write one: the definition generated by
/// `#[derive(CustomResource)]`, then create, read, patch, status, server-side apply and delete.
mod typed {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use kube::runtime::wait::{await_condition, conditions};
    use kube::{CustomResource, CustomResourceExt};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "kube.example.com",
        version = "v1",
        kind = "Gizmo",
        namespaced,
        status = "GizmoStatus",
        shortname = "gz",
        printcolumn = r#"{"name":"Size","type":"string","jsonPath":".spec.size"}"#
    )]
    pub struct GizmoSpec {
        pub size: String,
        pub replicas: i32,
    }

    #[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
    pub struct GizmoStatus {
        pub ready: bool,
    }

    #[test]
    fn kube_rs_drives_a_typed_custom_resource() {
        let server = ApiServer::start();
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let gizmos = rt.block_on(async {
            let client = kube_client(&server.sandbox, server.context()).await;
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            crds.create(&PostParams::default(), &Gizmo::crd())
                .await
                .expect("the generated definition is accepted");
            let established = await_condition(
                crds.clone(),
                "gizmos.kube.example.com",
                conditions::is_crd_established(),
            );
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .expect("Established within 30 s")
                .expect("the wait itself");

            let gizmos: Api<Gizmo> = Api::namespaced(client.clone(), "default");
            let made = gizmos
                .create(
                    &PostParams::default(),
                    &Gizmo::new(
                        "g1",
                        GizmoSpec {
                            size: "small".into(),
                            replicas: 1,
                        },
                    ),
                )
                .await
                .expect("create");
            assert_eq!(made.metadata.generation, Some(1));
            let patched = gizmos
                .patch(
                    "g1",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
                )
                .await
                .expect("merge patch");
            assert_eq!(patched.spec.replicas, 3);
            let with_status = gizmos
                .patch_status(
                    "g1",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"ready": true}})),
                )
                .await
                .expect("status patch");
            assert!(with_status.status.as_ref().is_some_and(|s| s.ready));
            let applied = gizmos
                .patch(
                    "g1",
                    &PatchParams::apply("gizmo-operator").force(),
                    &Patch::Apply(serde_json::json!({
                        "apiVersion": "kube.example.com/v1", "kind": "Gizmo",
                        "metadata": {"name": "g1"}, "spec": {"size": "large", "replicas": 3}})),
                )
                .await
                .expect("server-side apply");
            assert_eq!(applied.spec.size, "large");
            assert!(
                applied
                    .metadata
                    .managed_fields
                    .unwrap_or_default()
                    .iter()
                    .any(|m| m.manager.as_deref() == Some("gizmo-operator"))
            );
            let listed = gizmos.list(&ListParams::default()).await.expect("list");
            assert_eq!(listed.items.len(), 1);
            assert!(listed.items[0].status.as_ref().is_some_and(|s| s.ready));
            gizmos
        });
        // The derive's printcolumn reaches kubectl's table.
        let table = server.kubectl_ok(&["get", "gz"]);
        assert!(
            table.starts_with("NAME") && table.contains("SIZE") && table.contains("large"),
            "{table}"
        );
        rt.block_on(async {
            gizmos
                .delete("g1", &DeleteParams::default())
                .await
                .expect("delete");
            assert!(gizmos.get_opt("g1").await.expect("get").is_none());
        });
    }
}

/// Custom-resource creates/s (a schema with defaults, a pattern and one CEL rule) against
/// ConfigMap creates/s in the same run, bracketed (ConfigMaps, custom resources, ConfigMaps),
/// and the time from a definition's create to its first served list.
/// Run: `cargo test --test apiserver_crds -- --ignored --nocapture crd_bench` (BENCHMARKS.md).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn crd_bench() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    use std::time::Instant;

    const OBJECTS: usize = 2000;
    const CLIENTS: usize = 16;
    let server = ApiServer::start();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let client = kube_client(&server.sandbox, server.context()).await;

        // Definition create → the list of its objects answers.
        let mut served_ms = Vec::new();
        for i in 0..3 {
            // One group each: the names of one group's definitions must not clash.
            let manifest = CRD.replace("example.com", &format!("bench{i}.example.com"));
            let crd: Value = serde_yaml::from_str(&manifest).expect("the CRD parses");
            let crds: Api<DynamicObject> = Api::all_with(
                client.clone(),
                &ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(
                        "apiextensions.k8s.io",
                        "v1",
                        "CustomResourceDefinition",
                    ),
                    "customresourcedefinitions",
                ),
            );
            let obj: DynamicObject = serde_json::from_value(crd).expect("a dynamic object");
            let started = Instant::now();
            crds.create(&PostParams::default(), &obj)
                .await
                .expect("CRD create");
            let path = format!("/apis/bench{i}.example.com/v1/namespaces/default/widgets");
            loop {
                let req = http::Request::get(&path).body(Vec::new()).expect("request");
                if client.request_text(req).await.is_ok() {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "never served");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            served_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!("CRD create → served: {served_ms:.1?} ms");

        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("bench0.example.com", "v1", "Widget"),
            "widgets",
        );
        let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        async fn run<F, Fut>(label: &str, make: F) -> f64
        where
            F: Fn(usize) -> Fut + Clone + Send + 'static,
            Fut: std::future::Future<Output = ()> + Send,
        {
            let started = Instant::now();
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let make = make.clone();
                    tokio::spawn(async move {
                        for i in (c..OBJECTS).step_by(CLIENTS) {
                            make(i).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("a client task");
            }
            let rate = OBJECTS as f64 / started.elapsed().as_secs_f64();
            println!("{label}: {OBJECTS} creates, {CLIENTS} clients: {rate:.0}/s");
            rate
        }
        let cm = |round: &'static str| {
            let maps = maps.clone();
            move |i: usize| {
                let maps = maps.clone();
                async move {
                    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("cm-{round}-{i}"), "labels": {"app": "bench"}},
                        "data": {"size": "small", "replicas": "3"}}))
                    .expect("a ConfigMap");
                    maps.create(&PostParams::default(), &cm)
                        .await
                        .expect("ConfigMap create");
                }
            }
        };
        let before = run("ConfigMaps (before)", cm("a")).await;
        let w = widgets.clone();
        let custom = run("Widgets (schema + CEL rule)", move |i: usize| {
            let w = w.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "bench0.example.com/v1", "kind": "Widget",
                    "metadata": {"name": format!("w-{i}"), "labels": {"app": "bench"}},
                    "spec": {"size": "small", "replicas": 3}}))
                .expect("a widget");
                w.create(&PostParams::default(), &obj)
                    .await
                    .expect("Widget create");
            }
        })
        .await;
        let after = run("ConfigMaps (after)", cm("b")).await;
        println!(
            "custom resources / ConfigMaps: {:.2}",
            custom / ((before + after) / 2.0)
        );
    });
}

const STAMP_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: stamps.example.com
spec:
  group: example.com
  scope: Cluster
  names: {plural: stamps, singular: stamp, kind: Stamp}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {color: {type: string}}}
"#;

/// With the controllers running: the garbage collector follows ownerReferences both ways
/// (a custom resource owning a pod, a ConfigMap owning a custom resource), deleting a namespace
/// removes its custom resources, and cluster-scoped ones are served, listed and deleted as a
/// collection.
#[test]
fn custom_resources_are_garbage_collected_and_cluster_scoped_ones_served() {
    let server = ApiServer::start_with(&["--controllers"]);
    apply(&server, CRD);
    apply(&server, STAMP_CRD);
    established(&server, "widgets.example.com");
    established(&server, "stamps.example.com");

    // Cluster-scoped: no namespace in the path or the object; deletecollection.
    for name in ["s1", "s2"] {
        apply(
            &server,
            &format!(
                "apiVersion: example.com/v1\nkind: Stamp\nmetadata:\n  name: {name}\nspec:\n  color: red\n"
            ),
        );
    }
    let s1 = get_json(&server, &["stamp", "s1"]);
    assert!(s1["metadata"].get("namespace").is_none(), "{s1}");
    let listed = server.kubectl_ok(&["get", "stamps", "-o", "name"]);
    assert_eq!(listed.trim(), "stamp.example.com/s1\nstamp.example.com/s2");
    let out = server.kubectl(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/stamps",
    ]);
    assert!(
        !out.status.success(),
        "a cluster-scoped kind has no namespaced path"
    );
    server.kubectl_ok(&["delete", "--raw", "/apis/example.com/v1/stamps"]);
    wait_eq(
        "no stamps after deletecollection",
        || {
            server
                .kubectl_ok(&["get", "stamps", "-o", "name"])
                .trim()
                .to_string()
        },
        String::new(),
    );

    // A custom resource owning a pod.
    apply(&server, WIDGET);
    let owner = get_json(&server, &["widget", "w1"]);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: owned\n  ownerReferences:\n  - apiVersion: example.com/v1\n    kind: Widget\n    name: w1\n    uid: {}\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        owner["metadata"]["uid"].as_str().expect("uid")
    );
    apply(&server, &pod);
    server.kubectl_ok(&["delete", "widget", "w1"]);
    wait_until(
        "the owned pod to be collected",
        Duration::from_secs(90),
        || {
            if gone(&server.kubectl(&["get", "pod", "owned"])) {
                Ok(())
            } else {
                Err("pod owned still exists".into())
            }
        },
    );

    // A ConfigMap owning a custom resource.
    server.kubectl_ok(&["create", "configmap", "owner"]);
    let cm = get_json(&server, &["configmap", "owner"]);
    let owned = WIDGET.replace(
        "  labels: {app: demo}\n",
        &format!(
            "  labels: {{app: demo}}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {}\n",
            cm["metadata"]["uid"].as_str().expect("uid")
        ),
    );
    apply(&server, &owned.replace("name: w1", "name: w2"));
    server.kubectl_ok(&["delete", "configmap", "owner"]);
    wait_until(
        "the owned widget to be collected",
        Duration::from_secs(90),
        || {
            if gone(&server.kubectl(&["get", "widget", "w2"])) {
                Ok(())
            } else {
                Err("widget w2 still exists".into())
            }
        },
    );

    // Deleting a namespace removes its custom resources.
    server.kubectl_ok(&["create", "namespace", "doomed"]);
    let out = server.kubectl_stdin(&["apply", "-n", "doomed", "-f", "-"], WIDGET);
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&["delete", "namespace", "doomed", "--timeout=90s"]);
    assert!(gone(&server.kubectl(&["get", "namespace", "doomed"])));
    let out = server.kubectl(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/doomed/widgets/w1",
    ]);
    assert!(
        gone(&out),
        "the namespace's widget must be gone: {}",
        text(&out)
    );
}

/// kubectl keeps discovery in an HTTP cache under ~/.kube/cache and revalidates it with the
/// document's ETag: an unchanged document is answered 304 (the cache then serves its copy and
/// marks it `X-From-Cache`), and a new definition changes the ETag, so the next kubectl sees
/// the new kind at once.
#[test]
fn kubectls_discovery_cache_revalidates_and_sees_a_new_definition() {
    require_docker_and_kubectl();
    let server = ApiServer::start();
    // -v=8 logs each response's headers after its request line.
    let discover = || {
        let out = server.kubectl(&["api-resources", "-v=8"]);
        assert!(out.status.success(), "api-resources: {}", text(&out));
        (
            stdout(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let from_cache = |log: &str, path: &str| -> bool {
        let mut current = None;
        for line in log.lines() {
            if let Some(i) = line.find("] GET https://") {
                current = Some(line[i..].contains(path));
            } else if line.contains("X-From-Cache: 1") && current == Some(true) {
                return true;
            }
        }
        false
    };
    let (first, log) = discover();
    assert!(!first.contains("widgets"), "no widgets yet:\n{first}");
    assert!(
        log.contains("/apis?timeout=") && !from_cache(&log, "/apis?"),
        "the first discovery is fetched whole:\n{log}"
    );
    let (_, log) = discover();
    assert!(
        from_cache(&log, "/api?") && from_cache(&log, "/apis?"),
        "an unchanged discovery document is revalidated (304) and served from the cache:\n{log}"
    );

    apply(&server, CRD);
    established(&server, "widgets.example.com");
    let (after, log) = discover();
    assert!(
        !from_cache(&log, "/apis?"),
        "a new definition changes the ETag, so /apis is fetched anew:\n{log}"
    );
    assert!(
        after.lines().any(|l| l.starts_with("widgets ")),
        "the cached kubectl sees the new kind at once:\n{after}"
    );
}
