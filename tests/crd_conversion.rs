//! Custom resources served at several versions, with the real kubectl against the standalone
//! API server: a CronTab stored as v1 (`spec.schedule`, `spec.replicas`) and also served as
//! v1beta1 (`spec.cronSpec`, `spec.size`), converted by a real HTTPS conversion webhook in this
//! test process (TLS with a serving certificate from a CA the test makes and hands over as
//! caBundle), which also serves admission webhooks; and versions whose schemas differ under
//! strategy None.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{Value, json};

/// The conversion webhook: converts CronTabs between v1 and v1beta1 and records every
/// ConversionReview request it gets.
struct Converter {
    port: u16,
    ca_bundle: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Converter {
    fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let https = common::https::serve_json("crd-conversion-test-ca", move |path, review| {
            let path = path.split('?').next().unwrap_or_default().to_string();
            recorder
                .lock()
                .unwrap()
                .push(json!({"path": path, "review": review}));
            match path.as_str() {
                "/convert" => convert(&review).to_string(),
                _ => admit(&path, &review).to_string(),
            }
        });
        Converter {
            port: https.port,
            ca_bundle: https.ca_bundle,
            seen,
        }
    }

    /// The ConversionReviews received, oldest first.
    fn requests(&self) -> Vec<Value> {
        self.at("/convert")
    }

    /// The AdmissionReviews received at `path`, oldest first.
    fn at(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .map(|r| r["review"].clone())
            .collect()
    }
}

/// The admission webhooks: `/validate` allows everything; `/mutate` sets `spec.size` (a
/// v1beta1 field) to 7 on CronTabs named `mutated`.
fn admit(path: &str, review: &Value) -> Value {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if path == "/mutate" && request["name"] == "mutated" {
        use base64::Engine;
        let ops = json!([{"op": "add", "path": "/spec/size", "value": 7}]);
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ops.to_string()));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// What the webhook answers: `spec.cronSpec` (v1beta1) and `spec.schedule` (v1) renamed, a
/// label saying where the object came from, and metadata changes the server must undo. A
/// schedule of "refuse" is refused; "rename" comes back under another name.
fn convert(review: &Value) -> Value {
    let request = &review["request"];
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    for obj in request["objects"].as_array().cloned().unwrap_or_default() {
        let mut obj = obj;
        let from = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let rename = |part: &Value| -> serde_json::Map<String, Value> {
            let mut renamed = serde_json::Map::new();
            for (k, v) in part.as_object().cloned().unwrap_or_default() {
                let k = match (k.as_str(), desired) {
                    ("cronSpec", "stable.example.com/v1") => "schedule".to_string(),
                    ("schedule", "stable.example.com/v1beta1") => "cronSpec".to_string(),
                    ("size", "stable.example.com/v1") => "replicas".to_string(),
                    ("replicas", "stable.example.com/v1beta1") => "size".to_string(),
                    _ => k,
                };
                renamed.insert(k, v);
            }
            renamed
        };
        let new_spec = rename(&obj["spec"]);
        if obj.get("status").is_some() {
            obj["status"] = Value::Object(rename(&obj["status"]));
        }
        let schedule = new_spec
            .get("schedule")
            .or(new_spec.get("cronSpec"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if schedule == "refuse" {
            return json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {"uid": request["uid"], "result": {"status": "Failure",
                    "message": "a CronTab may not be scheduled to refuse"}}});
        }
        obj["spec"] = Value::Object(new_spec);
        obj["apiVersion"] = json!(desired);
        obj["metadata"]["labels"]["converted-from"] = json!(from.replace('/', "."));
        // Changes outside labels and annotations are not the webhook's to make.
        obj["metadata"]["generation"] = json!(99);
        obj["metadata"]["finalizers"] = json!(["example.com/sneaky"]);
        if schedule == "rename" {
            obj["metadata"]["name"] = json!("renamed");
        }
        out.push(obj);
    }
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "response": {"uid": request["uid"], "result": {"status": "Success"},
                     "convertedObjects": out}})
}

fn crd(client_config: &str, review_versions: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {{plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: {review_versions}
      clientConfig: {client_config}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {{name: Schedule, type: string, jsonPath: .spec.schedule}}
    subresources:
      status: {{}}
      scale: {{specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{schedule: {{type: string}}, replicas: {{type: integer}}}}}}
          status: {{type: object, properties: {{replicas: {{type: integer}}}}}}
  - name: v1beta1
    served: true
    storage: false
    additionalPrinterColumns:
    - {{name: CronSpec, type: string, jsonPath: .spec.cronSpec}}
    subresources:
      status: {{}}
      scale: {{specReplicasPath: .spec.size, statusReplicasPath: .status.size}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {{cronSpec: {{type: string}}, size: {{type: integer, maximum: 10}}}}
            x-kubernetes-validations:
            - {{rule: "self.size >= oldSelf.size", message: "size may not shrink at v1beta1"}}
          status: {{type: object, properties: {{size: {{type: integer}}}}}}
"#
    )
}

fn crontab(version: &str, name: &str, field: &str, schedule: &str) -> String {
    let replicas = if version == "v1beta1" {
        "size"
    } else {
        "replicas"
    };
    format!(
        "apiVersion: stable.example.com/{version}\nkind: CronTab\nmetadata:\n  name: {name}\n  labels: {{app: cron}}\nspec:\n  {field}: {schedule:?}\n  {replicas}: 1\n"
    )
}

fn get_json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).unwrap()
}

#[test]
fn a_conversion_webhook_converts_every_read_and_write() {
    let converter = Converter::start();
    let server = ApiServer::start();
    let url = format!("https://127.0.0.1:{}/convert", converter.port);
    let client = format!("{{url: {url:?}, caBundle: {:?}}}", converter.ca_bundle);
    let applied = crds::install(
        &server,
        &crd(&client, "[v1]"),
        "crontabs.stable.example.com",
    );
    assert!(!applied.contains("Warning"), "{applied}");

    // Created at v1beta1: stored as v1 through the webhook, which added a label.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1beta1", "nightly", "cronSpec", "0 3 * * *"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "nightly"]);
    assert_eq!(v1["apiVersion"], "stable.example.com/v1");
    assert_eq!(v1["spec"]["schedule"], "0 3 * * *", "{v1}");
    assert!(v1["spec"].get("cronSpec").is_none(), "{v1}");
    assert_eq!(
        v1["metadata"]["labels"]["converted-from"],
        "stable.example.com.v1beta1"
    );
    assert_eq!(v1["metadata"]["labels"]["app"], "cron");
    // Metadata other than labels and annotations is the server's, whatever the webhook said.
    assert_eq!(v1["metadata"]["generation"], 1, "{v1}");
    assert!(v1["metadata"].get("finalizers").is_none(), "{v1}");

    let first = converter.requests()[0].clone();
    assert_eq!(first["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(first["kind"], "ConversionReview");
    assert_eq!(
        first["request"]["desiredAPIVersion"],
        "stable.example.com/v1"
    );
    assert!(
        !first["request"]["uid"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        first["request"]["objects"][0]["spec"]["cronSpec"],
        "0 3 * * *"
    );

    // Read back at v1beta1.
    let beta = get_json(&server, &["crontabs.v1beta1.stable.example.com", "nightly"]);
    assert_eq!(beta["apiVersion"], "stable.example.com/v1beta1");
    assert_eq!(beta["spec"]["cronSpec"], "0 3 * * *", "{beta}");
    assert_eq!(beta["metadata"]["uid"], v1["metadata"]["uid"]);

    // A list at v1beta1 converts its objects in one review.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1", "hourly", "schedule", "0 * * * *"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let before = converter.requests().len();
    let list = get_json(&server, &["crontabs.v1beta1.stable.example.com"]);
    let specs: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["spec"]["cronSpec"])
        .collect();
    assert_eq!(
        specs,
        vec![&json!("0 * * * *"), &json!("0 3 * * *")],
        "{list}"
    );
    let reviews = &converter.requests()[before..];
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(
        reviews[0]["request"]["objects"].as_array().unwrap().len(),
        2
    );

    // kubectl's table at each version prints that version's columns.
    let table = server.kubectl_ok(&["get", "crontabs.v1beta1.stable.example.com"]);
    assert!(
        table.contains("CRONSPEC") && table.contains("0 * * * *"),
        "{table}"
    );
    let table = server.kubectl_ok(&["get", "crontabs.v1.stable.example.com", "nightly"]);
    assert!(
        table.contains("SCHEDULE") && table.contains("0 3 * * *"),
        "{table}"
    );

    // A merge patch is written in the version it is sent to.
    server.kubectl_ok(&[
        "patch",
        "crontabs.v1beta1.stable.example.com",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"cronSpec":"30 3 * * *"}}"#,
    ]);
    let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "nightly"]);
    assert_eq!(v1["spec"]["schedule"], "30 3 * * *", "{v1}");

    // Update (replace) at v1beta1.
    let mut beta = get_json(&server, &["crontabs.v1beta1.stable.example.com", "nightly"]);
    beta["spec"]["size"] = json!(3);
    let out = server.kubectl_stdin(&["replace", "-f", "-"], &beta.to_string());
    assert!(out.status.success(), "{}", text(&out));
    let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "nightly"]);
    assert_eq!(v1["spec"]["replicas"], 3, "{v1}");
    assert_eq!(v1["spec"]["schedule"], "30 3 * * *", "{v1}");

    // Watch events at v1beta1 are converted.
    let raw = server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1beta1/namespaces/default/crontabs?watch=1&timeoutSeconds=1",
    ]);
    let events: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{raw}");
    for ev in &events {
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["apiVersion"], "stable.example.com/v1beta1");
        assert!(ev["object"]["spec"]["cronSpec"].is_string(), "{ev}");
    }

    // The webhook's refusal is the request's error, in kube-apiserver's words, and nothing is stored.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1beta1", "refused", "cronSpec", "refuse"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Error from server: error when creating \"STDIN\": conversion webhook for stable.example.com/v1beta1, Kind=CronTab failed: a CronTab may not be scheduled to refuse"),
        "{}",
        text(&out)
    );
    assert!(gone(&server.kubectl(&[
        "get",
        "crontabs.v1.stable.example.com",
        "refused"
    ])));

    // A webhook may not rename what it converts.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1beta1", "named", "cronSpec", "rename"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("conversion webhook for stable.example.com/v1beta1, Kind=CronTab returned invalid object: must have the same name: named != renamed"),
        "{}",
        text(&out)
    );
    assert!(gone(&server.kubectl(&[
        "get",
        "crontabs.v1.stable.example.com",
        "named"
    ])));

    // A webhook that cannot be reached fails reads at other versions; the storage version is
    // still served.
    let closed = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let dead = format!(
        "{{url: \"https://127.0.0.1:{dead_port}/convert\", caBundle: {:?}}}",
        converter.ca_bundle
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &crd(&dead, "[v1]"));
    assert!(out.status.success(), "{}", text(&out));
    let want = format!(
        "Error from server: conversion webhook for stable.example.com/v1, Kind=CronTab failed: Post \"https://127.0.0.1:{dead_port}/convert?timeout=30s\": dial tcp 127.0.0.1:{dead_port}: connect: connection refused"
    );
    wait_until(
        "reads at v1beta1 to use the unreachable webhook",
        std::time::Duration::from_secs(10),
        || {
            let out = server.kubectl(&["get", "crontabs.v1beta1.stable.example.com", "nightly"]);
            let t = text(&out);
            if !out.status.success() && t.contains(&want) {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "nightly"]);
    assert_eq!(v1["spec"]["schedule"], "30 3 * * *");
}

#[test]
fn conversion_webhook_settings_are_validated_in_kubernetes_words() {
    let server = ApiServer::start();
    let cases = [
        (
            crd("{}", "[v1]").replace("      clientConfig: {}\n", ""),
            vec![
                "spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook",
            ],
        ),
        (
            crd("{url: \"https://127.0.0.1:9443/convert\"}", "[v2]"),
            vec![
                r#"spec.conversion.conversionReviewVersions: Invalid value: []string{"v2"}: must include at least one of v1, v1beta1"#,
            ],
        ),
        (
            crd("{url: \"http://127.0.0.1:9443/convert\"}", "[v1, v1]"),
            vec![
                r#"spec.conversion.webhookClientConfig.url: Invalid value: "http": 'https' is the only allowed URL scheme"#,
                r#"spec.conversion.conversionReviewVersions[1]: Invalid value: "v1": duplicate version"#,
            ],
        ),
        (
            crd(
                "{url: \"https://a/convert\", service: {name: s, namespace: n}}",
                "[v1]",
            ),
            vec![
                "spec.conversion.webhookClientConfig: Required value: exactly one of url or service is required",
            ],
        ),
        (
            crd("{service: {name: s, namespace: \"\"}}", "[v1]"),
            vec![
                "spec.conversion.webhookClientConfig.service.namespace: Required value: service namespace is required",
            ],
        ),
        (
            crd("{url: \"https://127.0.0.1/convert\"}", "[v1]")
                .replace("strategy: Webhook", "strategy: None"),
            vec![
                "spec.conversion.webhookClientConfig: Forbidden: should not be set when strategy is not set to Webhook",
                "spec.conversion.conversionReviewVersions: Forbidden: should not be set when strategy is not set to Webhook",
            ],
        ),
    ];
    for (bad, wants) in cases {
        let out = server.kubectl_stdin(&["create", "-f", "-"], &bad);
        assert!(!out.status.success(), "accepted:\n{bad}");
        let t = text(&out);
        assert!(
            t.contains("The CustomResourceDefinition \"crontabs.stable.example.com\" is invalid"),
            "{t}"
        );
        for want in wants {
            assert!(t.contains(want), "no {want:?} in {t}");
        }
        assert!(gone(&server.kubectl(&[
            "get",
            "crd",
            "crontabs.stable.example.com"
        ])));
    }
    // A good one is taken without warnings.
    let good = crd("{url: \"https://127.0.0.1:9443/convert\"}", "[v1beta1, v1]");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &good);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Warning"), "{}", text(&out));
}

/// The CRD served by the converter at `converter`.
fn apply_crontabs(server: &ApiServer, converter: &Converter) {
    let url = format!("https://127.0.0.1:{}/convert", converter.port);
    let client = format!("{{url: {url:?}, caBundle: {:?}}}", converter.ca_bundle);
    crds::install(server, &crd(&client, "[v1]"), "crontabs.stable.example.com");
}

/// `/scale` at v1beta1 reads and writes `spec.size` of the object converted to v1beta1 (v1
/// keeps the count in `spec.replicas`); admission webhooks registered for v1beta1 see objects
/// written at v1 converted by the conversion webhook, and a patch written in v1beta1's terms
/// is converted back before it is stored.
#[test]
fn scale_and_admission_webhooks_work_at_a_webhook_converted_version() {
    let converter = Converter::start();
    let server = ApiServer::start();
    apply_crontabs(&server, &converter);
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1", "nightly", "schedule", "0 3 * * *"),
    );
    assert!(out.status.success(), "{}", text(&out));

    // kubectl scale at v1beta1 lands in v1's spec.replicas.
    server.kubectl_ok(&[
        "scale",
        "crontabs.v1beta1.stable.example.com",
        "nightly",
        "--replicas=4",
    ]);
    let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "nightly"]);
    assert_eq!(v1["spec"]["replicas"], 4, "{v1}");
    assert!(v1["spec"].get("size").is_none(), "{v1}");
    server.kubectl_ok(&[
        "patch",
        "crontabs.v1.stable.example.com",
        "nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2}}"#,
    ]);
    let scale: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1beta1/namespaces/default/crontabs/nightly/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale", "{scale}");
    assert_eq!(scale["spec"]["replicas"], 4, "{scale}");
    assert_eq!(scale["status"]["replicas"], 2, "{scale}");
    let v1_scale: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly/scale",
    ]))
    .unwrap();
    assert_eq!(v1_scale["spec"]["replicas"], 4, "{v1_scale}");

    // Admission webhooks that only know v1beta1 (matchPolicy Equivalent, the default).
    let hook = |kind: &str, path: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": format!("crontabs{}", path.replace('/', "-"))},
            "webhooks": [{"name": format!("{}.crontabs.example.com", &path[1..]),
                "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", converter.port),
                                 "caBundle": converter.ca_bundle},
                "rules": [{"operations": ["CREATE"], "apiGroups": ["stable.example.com"],
                           "apiVersions": ["v1beta1"], "resources": ["crontabs"]}],
                "sideEffects": "None", "admissionReviewVersions": ["v1"]}]})
        .to_string()
    };
    for (kind, path) in [
        ("MutatingWebhookConfiguration", "/mutate"),
        ("ValidatingWebhookConfiguration", "/validate"),
    ] {
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &hook(kind, path));
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut probes = 0;
    wait_until(
        "the validating webhook to be called",
        std::time::Duration::from_secs(20),
        || {
            probes += 1;
            let name = format!("probe-{probes}");
            let out = server.kubectl_stdin(
                &["create", "-f", "-"],
                &crontab("v1", &name, "schedule", "0 0 * * *"),
            );
            if !out.status.success() {
                return Err(text(&out));
            }
            if converter.at("/validate").is_empty() {
                Err(format!("{name} was not reviewed"))
            } else {
                Ok(())
            }
        },
    );
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1", "mutated", "schedule", "0 1 * * *"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let named = |path: &str| -> Value {
        converter
            .at(path)
            .into_iter()
            .map(|r| r["request"].clone())
            .find(|r| r["name"] == "mutated")
            .unwrap_or_else(|| panic!("{path} never saw the CronTab \"mutated\""))
    };
    let mutating = named("/mutate");
    assert_eq!(mutating["kind"]["version"], "v1beta1", "{mutating}");
    assert_eq!(mutating["requestKind"]["version"], "v1", "{mutating}");
    assert_eq!(
        mutating["object"]["apiVersion"], "stable.example.com/v1beta1",
        "{mutating}"
    );
    assert_eq!(
        mutating["object"]["spec"]["cronSpec"], "0 1 * * *",
        "{mutating}"
    );
    assert_eq!(mutating["object"]["spec"]["size"], 1, "{mutating}");
    assert!(
        mutating["object"]["spec"].get("schedule").is_none(),
        "{mutating}"
    );
    let validating = named("/validate");
    assert_eq!(validating["object"]["spec"]["cronSpec"], "0 1 * * *");
    assert_eq!(validating["object"]["spec"]["size"], 7, "{validating}");
    let stored = get_json(&server, &["crontabs.v1.stable.example.com", "mutated"]);
    assert_eq!(stored["spec"]["replicas"], 7, "{stored}");
    assert_eq!(stored["spec"]["schedule"], "0 1 * * *", "{stored}");
    assert!(stored["spec"].get("size").is_none(), "{stored}");

    // v1beta1's own rules judge writes at v1beta1 (its maximum, its transition rule), in its
    // field names; v1 has neither.
    for (patch, want) in [
        (
            r#"{"spec":{"size":11}}"#,
            "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10",
        ),
        (r#"{"spec":{"size":3}}"#, "size may not shrink at v1beta1"),
    ] {
        let out = server.kubectl(&[
            "patch",
            "crontabs.v1beta1.stable.example.com",
            "nightly",
            "--type=merge",
            "-p",
            patch,
        ]);
        assert!(!out.status.success(), "{patch} was taken");
        assert!(text(&out).contains(want), "{}", text(&out));
    }
    server.kubectl_ok(&[
        "patch",
        "crontabs.v1.stable.example.com",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":30}}"#,
    ]);
    let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "nightly"]);
    assert_eq!(v1["spec"]["replicas"], 30, "{v1}");

    // Server-side apply at v1beta1 merges v1beta1's fields into the object as v1beta1 sees
    // it; the webhook converts the result, and the managed fields record v1beta1.
    for schedule in ["0 6 * * *", "0 7 * * *"] {
        let out = server.kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            &crontab("v1beta1", "applied", "cronSpec", schedule),
        );
        assert!(out.status.success(), "{}", text(&out));
        let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "applied"]);
        assert_eq!(v1["spec"]["schedule"], schedule, "{v1}");
        assert_eq!(v1["spec"]["replicas"], 1, "{v1}");
        assert!(v1["spec"].get("cronSpec").is_none(), "{v1}");
        let shown = get_json(
            &server,
            &[
                "crontabs.v1.stable.example.com",
                "applied",
                "--show-managed-fields",
            ],
        );
        let entry = shown["metadata"]["managedFields"]
            .as_array()
            .and_then(|m| m.iter().find(|e| e["operation"] == "Apply"))
            .cloned()
            .unwrap_or_else(|| panic!("no Apply entry: {shown}"));
        assert_eq!(entry["apiVersion"], "stable.example.com/v1beta1", "{entry}");
        assert!(
            entry["fieldsV1"]["f:spec"].get("f:cronSpec").is_some(),
            "{entry}"
        );
    }
}

/// Widgets: v1 (storage) and v1beta1 with different schemas, conversion None.
const WIDGETS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.org
spec:
  group: example.org
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size, owner]
            properties:
              size: {type: integer}
              owner: {type: string}
              tier: {type: string, default: gold}
            x-kubernetes-validations:
            - {rule: "self.size < 100", message: "size must be below 100"}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer}
              legacy: {type: string, maxLength: 5}
              color: {type: string, default: red}
            x-kubernetes-validations:
            - {rule: "self.size >= oldSelf.size", message: "size may not shrink"}
"#;

fn widget(version: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: example.org/{version}\nkind: Widget\nmetadata:\n  name: {name}\nspec: {spec}\n"
    )
}

/// With conversion None, a write at v1beta1 is judged by v1beta1's schema (its required
/// fields, limits, unknown fields and rules; not v1's), then stored as v1 pruned to v1's
/// schema, as kube-apiserver does.
#[test]
fn writes_are_judged_by_the_schema_of_the_version_written() {
    let server = ApiServer::start();
    crds::install(&server, WIDGETS_CRD, "widgets.example.org");
    let create = |yaml: String| server.kubectl_stdin(&["create", "-f", "-"], &yaml);

    // Valid at v1beta1 although v1 would refuse it (no owner, size over 100, a v1beta1 field).
    let out = create(widget("v1beta1", "w1", "{size: 500, legacy: abc}"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Warning"), "{}", text(&out));
    let v1 = get_json(&server, &["widgets.v1.example.org", "w1"]);
    assert_eq!(v1["apiVersion"], "example.org/v1", "{v1}");
    assert_eq!(v1["spec"]["size"], 500, "{v1}");
    assert_eq!(v1["spec"]["tier"], "gold", "{v1}");
    for dropped in ["legacy", "color"] {
        assert!(v1["spec"].get(dropped).is_none(), "{dropped}: {v1}");
    }
    let beta = get_json(&server, &["widgets.v1beta1.example.org", "w1"]);
    assert_eq!(beta["apiVersion"], "example.org/v1beta1", "{beta}");
    assert_eq!(beta["spec"]["size"], 500, "{beta}");
    assert!(beta["spec"].get("tier").is_none(), "{beta}");

    // v1beta1's own checks, in its field names.
    let out = create(widget("v1beta1", "w2", "{legacy: toolong}"));
    assert!(!out.status.success());
    for want in [
        "spec.size: Required value",
        "spec.legacy: Too long: may not be more than 5 bytes",
    ] {
        assert!(text(&out).contains(want), "no {want:?} in {}", text(&out));
    }
    assert!(!text(&out).contains("owner"), "{}", text(&out));
    // An unknown field at v1beta1; v1's checks still hold at v1.
    for (version, name, spec, want) in [
        (
            "v1beta1",
            "w3",
            "{size: 1, bogus: 1}",
            r#"unknown field "spec.bogus""#,
        ),
        ("v1", "w4", "{size: 1}", "spec.owner: Required value"),
        (
            "v1",
            "w5",
            "{size: 200, owner: me}",
            "size must be below 100",
        ),
    ] {
        let out = create(widget(version, name, spec));
        assert!(!out.status.success(), "{name} was taken");
        assert!(text(&out).contains(want), "{}", text(&out));
    }
    for name in ["w2", "w3", "w4", "w5"] {
        assert!(gone(&server.kubectl(&[
            "get",
            "widgets.v1.example.org",
            name
        ])));
    }

    // v1beta1's transition rule judges updates at v1beta1 against the object as v1beta1 saw it.
    let out = server.kubectl(&[
        "patch",
        "widgets.v1beta1.example.org",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":400}}"#,
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("size may not shrink"), "{}", text(&out));
    server.kubectl_ok(&[
        "patch",
        "widgets.v1beta1.example.org",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":600}}"#,
    ]);
    let v1 = get_json(&server, &["widgets.v1.example.org", "w1"]);
    assert_eq!(v1["spec"]["size"], 600, "{v1}");

    // Server-side apply at v1beta1 is checked by v1beta1's schema too.
    let out = server.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &widget("v1beta1", "w6", "{size: 2, legacy: ok}"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let v1 = get_json(&server, &["widgets.v1.example.org", "w6"]);
    assert_eq!(v1["spec"]["size"], 2, "{v1}");
    assert!(v1["spec"].get("legacy").is_none(), "{v1}");
}

/// An object stored at a version that its definition no longer serves is read with that
/// version's defaults (its schema is still in the definition), then shown at the version asked.
#[test]
fn defaults_of_a_version_no_longer_served_apply_to_objects_stored_at_it() {
    let server = ApiServer::start();
    let gizmos = |alpha_served: bool, alpha_default: &str, with_v1: bool| {
        let mut crd = format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.example.org
spec:
  group: example.org
  scope: Namespaced
  names: {{plural: gizmos, singular: gizmo, kind: Gizmo}}
  versions:
  - name: v1alpha1
    served: {alpha_served}
    storage: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{mode: {{type: string{alpha_default}}}}}}}
"#,
            !with_v1
        );
        if with_v1 {
            crd.push_str(
                r#"  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {mode: {type: string}, level: {type: integer}}}
"#,
            );
        }
        crd
    };
    crds::install(&server, &gizmos(true, "", false), "gizmos.example.org");
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: example.org/v1alpha1\nkind: Gizmo\nmetadata:\n  name: g1\nspec: {}\n",
    );
    assert!(out.status.success(), "{}", text(&out));

    // v1 becomes the storage version, v1alpha1 is no longer served but gains a default.
    let out = server.kubectl_stdin(
        &["apply", "-f", "-"],
        &gizmos(false, ", default: auto", true),
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "v1 to be served",
        std::time::Duration::from_secs(10),
        || {
            let out = server.kubectl(&["get", "gizmos.v1.example.org", "g1", "-o", "json"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    let g1 = get_json(&server, &["gizmos.v1.example.org", "g1"]);
    assert_eq!(g1["apiVersion"], "example.org/v1", "{g1}");
    assert_eq!(g1["spec"]["mode"], "auto", "{g1}");
    let listed = get_json(&server, &["gizmos.v1.example.org"]);
    assert_eq!(listed["items"][0]["spec"]["mode"], "auto", "{listed}");
    assert_eq!(
        listed["items"][0]["apiVersion"], "example.org/v1",
        "{listed}"
    );
    let out = server.kubectl(&["get", "gizmos.v1alpha1.example.org", "g1"]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// Objects keep the version they were stored at until written again: after the definition's
/// storage version changes from v1beta1 to v1, an object stored at v1beta1 is converted by the
/// webhook on reads at v1 too (get, list, table, watch), as kube-apiserver converts every
/// object it decodes.
#[test]
fn objects_stored_at_a_former_storage_version_are_converted_by_the_webhook() {
    let converter = Converter::start();
    let server = ApiServer::start();
    let url = format!("https://127.0.0.1:{}/convert", converter.port);
    let client = format!("{{url: {url:?}, caBundle: {:?}}}", converter.ca_bundle);
    let beta_stored = crd(&client, "[v1]")
        .replace("storage: true", "storage: SWAP")
        .replace("storage: false", "storage: true")
        .replace("storage: SWAP", "storage: false");
    crds::install(&server, &beta_stored, "crontabs.stable.example.com");
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &crontab("v1beta1", "old", "cronSpec", "5 4 * * *"),
    );
    assert!(out.status.success(), "{}", text(&out));
    // v1 becomes the storage version; the object stays stored at v1beta1.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &crd(&client, "[v1]"));
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "reads at v1 to convert the object stored at v1beta1",
        std::time::Duration::from_secs(10),
        || {
            let v1 = get_json(&server, &["crontabs.v1.stable.example.com", "old"]);
            if v1["apiVersion"] == "stable.example.com/v1" && v1["spec"]["schedule"] == "5 4 * * *"
            {
                Ok(())
            } else {
                Err(v1.to_string())
            }
        },
    );
    let list = get_json(&server, &["crontabs.v1.stable.example.com"]);
    assert_eq!(list["items"][0]["spec"]["schedule"], "5 4 * * *", "{list}");
    assert!(list["items"][0]["spec"].get("cronSpec").is_none(), "{list}");
    let table = server.kubectl_ok(&["get", "crontabs.v1.stable.example.com", "old"]);
    assert!(
        table.contains("SCHEDULE") && table.contains("5 4 * * *"),
        "{table}"
    );
    let raw = server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs?watch=1&timeoutSeconds=1",
    ]);
    let event: Value = serde_json::from_str(raw.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(
        event["object"]["apiVersion"], "stable.example.com/v1",
        "{raw}"
    );
    assert_eq!(event["object"]["spec"]["schedule"], "5 4 * * *", "{raw}");
}
