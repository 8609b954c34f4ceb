//! Webhook conversion of custom resources with the real kubectl against the standalone API
//! server: a CronTab stored as v1 (`spec.schedule`) and also served as v1beta1
//! (`spec.cronSpec`), converted by a real HTTPS conversion webhook in this test process (TLS
//! with a serving certificate from a CA the test makes and hands over as caBundle).

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
        let https = common::https::serve_json("crd-conversion-test-ca", move |_, review| {
            recorder.lock().unwrap().push(review.clone());
            convert(&review).to_string()
        });
        Converter {
            port: https.port,
            ca_bundle: https.ca_bundle,
            seen,
        }
    }

    fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
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
        let spec = obj["spec"].as_object_mut().cloned().unwrap_or_default();
        let mut new_spec = serde_json::Map::new();
        for (k, v) in spec {
            let k = match (k.as_str(), desired) {
                ("cronSpec", "stable.example.com/v1") => "schedule".to_string(),
                ("schedule", "stable.example.com/v1beta1") => "cronSpec".to_string(),
                _ => k,
            };
            new_spec.insert(k, v);
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
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{schedule: {{type: string}}, replicas: {{type: integer}}}}}}
  - name: v1beta1
    served: true
    storage: false
    additionalPrinterColumns:
    - {{name: CronSpec, type: string, jsonPath: .spec.cronSpec}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{cronSpec: {{type: string}}, replicas: {{type: integer}}}}}}
"#
    )
}

fn crontab(version: &str, name: &str, field: &str, schedule: &str) -> String {
    format!(
        "apiVersion: stable.example.com/{version}\nkind: CronTab\nmetadata:\n  name: {name}\n  labels: {{app: cron}}\nspec:\n  {field}: {schedule:?}\n  replicas: 1\n"
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
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &crd(&client, "[v1]"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Warning"), "{}", text(&out));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=30s",
    ]);

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
    beta["spec"]["replicas"] = json!(3);
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
