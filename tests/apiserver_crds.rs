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
