//! Admission webhooks with the real kubectl: Mutating- and ValidatingWebhookConfigurations
//! whose webhooks are a real HTTPS server (TLS with a serving certificate from a CA the test
//! makes and hands over as caBundle) that mutates, denies, warns, sleeps, answers garbage, or
//! is not there at all. Against a real cluster the server is a pod behind a Service (the test
//! image tests/images/admission-webhook/); against the standalone API server it runs in this
//! test process, addressed by URL.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

/// The webhook server: answers by path, records every AdmissionReview request it gets.
struct Webhooks {
    port: u16,
    ca_bundle: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhooks {
    fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let https = common::https::serve_json("admission-webhooks-test-ca", move |path, review| {
            let request = review["request"].clone();
            recorder
                .lock()
                .unwrap()
                .push((path.to_string(), request.clone()));
            answer(path, &request)
        });
        Webhooks {
            port: https.port,
            ca_bundle: https.ca_bundle,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The requests `path` got, oldest first.
    fn requests(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn review(response: Value) -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

fn patch(ops: Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(ops.to_string())
}

/// What each path does.
fn answer(path: &str, request: &Value) -> String {
    let uid = request["uid"].clone();
    let name = request["name"].as_str().unwrap_or_default();
    match path {
        "/add-label" => {
            let has_labels = request["object"]["metadata"]["labels"].is_object();
            let ops = if has_labels {
                json!([{"op": "add", "path": "/metadata/labels/webhook-added", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"webhook-added": "yes"}}])
            };
            review(
                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch(ops),
                          "warnings": ["labelled by the test webhook"]}),
            )
        }
        "/bad-label" => {
            let ops = json!([{"op": "add", "path": "/metadata/labels", "value": {"bad": "not a valid value!"}}]);
            review(
                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch(ops)}),
            )
        }
        "/deny-reserved" => {
            if name.starts_with("reserved-") {
                review(json!({"uid": uid, "allowed": false, "status": {
                    "code": 403, "reason": "Forbidden",
                    "message": format!("the name {name} is reserved")}}))
            } else {
                review(
                    json!({"uid": uid, "allowed": true, "warnings": [format!("{name} checked by the test webhook")]}),
                )
            }
        }
        "/add-second" => {
            let ops = json!([{"op": "add", "path": "/metadata/labels/second", "value": "yes"}]);
            review(
                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch(ops)}),
            )
        }
        "/copy-second" => {
            if request["object"]["metadata"]["labels"]["second"].is_string() {
                let ops =
                    json!([{"op": "add", "path": "/metadata/labels/seen-second", "value": "yes"}]);
                review(
                    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch(ops)}),
                )
            } else {
                review(json!({"uid": uid, "allowed": true}))
            }
        }
        "/allow" => review(json!({"uid": uid, "allowed": true})),
        "/observe" => {
            let seen = format!(
                "{} {} observed",
                request["operation"].as_str().unwrap_or_default(),
                request["subResource"].as_str().unwrap_or("-")
            );
            review(json!({"uid": uid, "allowed": true, "warnings": [seen]}))
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(5));
            review(json!({"uid": uid, "allowed": true}))
        }
        "/garbage" => "this is not an AdmissionReview".to_string(),
        "/wrong-uid" => review(json!({"uid": "not-the-request", "allowed": true})),
        _ => review(json!({"uid": uid, "allowed": false, "status": {"message": "unknown path"}})),
    }
}

/// A webhook configuration of `kind` with one webhook named `name` calling `url`.
fn configuration(kind: &str, name: &str, client: Value, ca: &str, extra: Value) -> String {
    let mut client = client;
    client["caBundle"] = json!(ca);
    let mut hook = json!({
        "name": name,
        "clientConfig": client,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        hook[k] = v;
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name.replace('.', "-")},
        "webhooks": [hook],
    })
    .to_string()
}

/// Waits until what `run` does is refused with `needle` in kubectl's output.
fn wait_refused(
    what: &str,
    timeout: Duration,
    needle: &str,
    mut run: impl FnMut() -> std::process::Output,
) {
    wait_until(what, timeout, || {
        let out = run();
        let t = text(&out);
        if !out.status.success() && t.contains(needle) {
            Ok(())
        } else {
            Err(t)
        }
    });
}

fn install(server: &ApiServer, config: &str) {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], config);
    assert!(out.status.success(), "apply failed: {}", text(&out));
}

/// Waits until a server-side dry run of `probe` (a configmap name) is refused with `needle`:
/// the configuration is in force.
fn wait_in_force(server: &ApiServer, probe: &str, needle: &str) {
    wait_refused(
        "the webhook configuration to take effect",
        Duration::from_secs(10),
        needle,
        || server.kubectl(&["create", "configmap", probe, "--dry-run=server"]),
    );
}

#[test]
fn a_validating_webhook_denies_with_its_message_and_passes_warnings() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "deny.example.com",
            json!({"url": hooks.url("/deny-reserved")}),
            &hooks.ca_bundle,
            json!({}),
        ),
    );
    let denial = "admission webhook \"deny.example.com\" denied the request: the name reserved-probe is reserved";
    wait_in_force(&server, "reserved-probe", denial);

    let out = server.kubectl(&["create", "configmap", "reserved-one"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("admission webhook \"deny.example.com\" denied the request: the name reserved-one is reserved"),
        "{}",
        text(&out)
    );
    let got = server.kubectl(&["get", "configmap", "reserved-one"]);
    assert!(
        gone(&got),
        "a denied create stored the object: {}",
        text(&got)
    );
    // The webhook's own code and reason reach the client.
    let out = server.kubectl(&["create", "configmap", "reserved-two", "-v=6"]);
    assert!(text(&out).contains("403 Forbidden"), "{}", text(&out));

    let out = server.kubectl(&["create", "configmap", "fine"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: fine checked by the test webhook"),
        "kubectl did not show the webhook's warning: {}",
        text(&out)
    );
    // An impersonated request reaches the webhook as the impersonated user, uid included, as
    // kube-apiserver sends it.
    let out = server.kubectl(&[
        "create",
        "configmap",
        "as-someone",
        "--as=someone",
        "--as-group=system:masters",
        "--as-uid=uid-42",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let reviews = hooks.requests("/deny-reserved");
    let impersonated = reviews
        .iter()
        .find(|r| r["name"] == "as-someone")
        .expect("the webhook never saw the impersonated create");
    let user = &impersonated["userInfo"];
    assert_eq!(user["username"], "someone", "{impersonated}");
    assert_eq!(user["uid"], "uid-42", "{impersonated}");
    assert!(
        user["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:masters")),
        "{impersonated}"
    );
    let fine = reviews
        .iter()
        .find(|r| r["name"] == "fine")
        .expect("the webhook never saw the create of fine");
    assert_eq!(fine["operation"], "CREATE");
    assert_eq!(
        fine["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        fine["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(fine["requestKind"], fine["kind"]);
    assert_eq!(fine["namespace"], "default");
    assert_eq!(fine["dryRun"], false);
    assert_eq!(fine["object"]["metadata"]["name"], "fine");
    assert!(fine["oldObject"].is_null());
    assert_eq!(fine["options"]["kind"], "CreateOptions");
    assert!(
        fine["userInfo"]["username"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "no user in {fine}"
    );
    let probe = reviews
        .iter()
        .find(|r| r["name"] == "reserved-probe")
        .expect("the webhook never saw the dry run");
    assert_eq!(probe["dryRun"], true);

    // A create into a missing namespace fails before any webhook hears of it.
    let out = server.kubectl(&["create", "configmap", "reserved-nowhere", "-n", "nowhere"]);
    assert!(
        text(&out).contains("namespaces \"nowhere\" not found"),
        "{}",
        text(&out)
    );
    assert!(
        hooks
            .requests("/deny-reserved")
            .iter()
            .all(|r| r["name"] != "reserved-nowhere"),
        "the webhook was called for a create into a missing namespace"
    );

    // Updates carry the old object.
    server.kubectl_ok(&["label", "configmap", "fine", "step=two"]);
    let reviews = hooks.requests("/deny-reserved");
    let update = reviews
        .iter()
        .find(|r| r["operation"] == "UPDATE")
        .expect("the webhook never saw the update");
    assert_eq!(update["object"]["metadata"]["labels"]["step"], "two");
    assert!(update["oldObject"]["metadata"]["labels"]["step"].is_null());
    assert_eq!(update["options"]["kind"], "UpdateOptions");
}

#[test]
fn a_mutating_webhook_adds_a_label_before_validation_and_validating_webhooks() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    install(
        &server,
        &configuration(
            "MutatingWebhookConfiguration",
            "label.example.com",
            json!({"url": hooks.url("/add-label")}),
            &hooks.ca_bundle,
            json!({}),
        ),
    );
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "deny.example.com",
            json!({"url": hooks.url("/deny-reserved")}),
            &hooks.ca_bundle,
            json!({}),
        ),
    );
    wait_in_force(&server, "reserved-probe", "denied the request");
    let out = server.kubectl(&["create", "configmap", "plain"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: labelled by the test webhook"),
        "{}",
        text(&out)
    );
    let label = server.kubectl_ok(&[
        "get",
        "configmap",
        "plain",
        "-o",
        "jsonpath={.metadata.labels.webhook-added}",
    ]);
    assert_eq!(label.trim(), "yes");
    // The validating webhook saw the mutated object.
    let validated = hooks.requests("/deny-reserved");
    let plain = validated
        .iter()
        .find(|r| r["name"] == "plain")
        .expect("the validating webhook never saw plain");
    assert_eq!(
        plain["object"]["metadata"]["labels"]["webhook-added"],
        "yes"
    );

    // A mutation runs before schema validation: a bad label it adds is refused as invalid.
    install(
        &server,
        &configuration(
            "MutatingWebhookConfiguration",
            "bad-label.example.com",
            json!({"url": hooks.url("/bad-label")}),
            &hooks.ca_bundle,
            json!({"objectSelector": {"matchLabels": {"want": "bad"}}}),
        ),
    );
    wait_until(
        "the bad-label webhook to take effect",
        Duration::from_secs(10),
        || {
            let out = server.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bad","labels":{"want":"bad"}}}"#,
        );
            let t = text(&out);
            if t.contains("is invalid") {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bad","labels":{"want":"bad"}}}"#,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "ConfigMap \"bad\" is invalid: metadata.labels: Invalid value: \"not a valid value!\""
        ),
        "{}",
        text(&out)
    );
}

/// Mutating webhooks run in the configurations' name order; one with reinvocationPolicy
/// IfNeeded runs again when a later one changed the object, and sees that change.
#[test]
fn a_webhook_with_if_needed_is_called_again_after_a_later_change() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    let selector = json!({"objectSelector": {"matchLabels": {"chain": "yes"}}});
    let mut first = selector.clone();
    first["reinvocationPolicy"] = json!("IfNeeded");
    install(
        &server,
        &configuration(
            "MutatingWebhookConfiguration",
            "a-first.example.com",
            json!({"url": hooks.url("/copy-second")}),
            &hooks.ca_bundle,
            first,
        ),
    );
    install(
        &server,
        &configuration(
            "MutatingWebhookConfiguration",
            "b-second.example.com",
            json!({"url": hooks.url("/add-second")}),
            &hooks.ca_bundle,
            selector,
        ),
    );
    let object = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "labels": {"chain": "yes"}}})
        .to_string()
    };
    wait_until(
        "both mutating webhooks to take effect",
        Duration::from_secs(10),
        || {
            let out = server.kubectl_stdin(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &object("probe"),
            );
            let t = stdout(&out);
            if t.contains("\"seen-second\": \"yes\"") {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    let out = server.kubectl_stdin(&["create", "-f", "-"], &object("chained"));
    assert!(out.status.success(), "{}", text(&out));
    let labels: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "configmap",
        "chained",
        "-o",
        "jsonpath={.metadata.labels}",
    ]))
    .unwrap();
    assert_eq!(labels["second"], "yes");
    assert_eq!(labels["seen-second"], "yes");
    let calls: Vec<Value> = hooks
        .requests("/copy-second")
        .into_iter()
        .filter(|r| r["name"] == "chained")
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "the IfNeeded webhook must run twice: {calls:?}"
    );
    assert!(calls[0]["object"]["metadata"]["labels"]["second"].is_null());
    assert_eq!(calls[1]["object"]["metadata"]["labels"]["second"], "yes");
}

#[test]
fn failure_policy_decides_for_a_webhook_that_is_down() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    // A port nobody listens on.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}/validate");
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "down.example.com",
            json!({"url": url}),
            &hooks.ca_bundle,
            json!({"failurePolicy": "Fail"}),
        ),
    );
    let want = format!(
        "Internal error occurred: failed calling webhook \"down.example.com\": failed to call webhook: Post \"https://127.0.0.1:{closed}/validate?timeout=10s\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
    );
    wait_in_force(&server, "probe", &want);
    let out = server.kubectl(&["create", "configmap", "refused"]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&want), "{}", text(&out));
    assert!(gone(&server.kubectl(&["get", "configmap", "refused"])));

    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "down.example.com",
            json!({"url": url}),
            &hooks.ca_bundle,
            json!({"failurePolicy": "Ignore"}),
        ),
    );
    wait_until(
        "failurePolicy Ignore to take effect",
        Duration::from_secs(10),
        || {
            let out = server.kubectl(&["create", "configmap", "probe", "--dry-run=server"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    let out = server.kubectl(&["create", "configmap", "admitted"]);
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&["get", "configmap", "admitted"]);

    // A webhook that is down and catches everything cannot lock its own configuration in:
    // admission configuration is never sent to webhooks.
    let everything = json!({
        "failurePolicy": "Fail",
        "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}],
    });
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "down.example.com",
            json!({"url": url}),
            &hooks.ca_bundle,
            everything,
        ),
    );
    wait_in_force(&server, "probe", "connection refused");
    let out = server.kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        "down-example-com",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "the removed webhook to stop refusing",
        Duration::from_secs(10),
        || {
            let out = server.kubectl(&["create", "configmap", "probe", "--dry-run=server"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
}

#[test]
fn a_slow_webhook_times_out_and_garbage_answers_fail() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "slow.example.com",
            json!({"url": hooks.url("/slow")}),
            &hooks.ca_bundle,
            json!({"timeoutSeconds": 1, "objectSelector": {"matchLabels": {"hook": "slow"}}}),
        ),
    );
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "garbage.example.com",
            json!({"url": hooks.url("/garbage")}),
            &hooks.ca_bundle,
            json!({"objectSelector": {"matchLabels": {"hook": "garbage"}}}),
        ),
    );
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "uid.example.com",
            json!({"url": hooks.url("/wrong-uid")}),
            &hooks.ca_bundle,
            json!({"objectSelector": {"matchLabels": {"hook": "uid"}}}),
        ),
    );
    let create = |name: &str, hook: &str| {
        server.kubectl_stdin(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"hook": hook}}})
            .to_string(),
        )
    };
    let slow_error = format!(
        "Internal error occurred: failed calling webhook \"slow.example.com\": failed to call webhook: Post \"https://127.0.0.1:{}/slow?timeout=1s\": context deadline exceeded",
        hooks.port
    );
    wait_until(
        "the slow webhook to take effect",
        Duration::from_secs(20),
        || {
            let t = text(&create("slow", "slow"));
            if t.contains(&slow_error) {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    assert!(gone(&server.kubectl(&["get", "configmap", "slow"])));

    let garbage_error = "Internal error occurred: failed calling webhook \"garbage.example.com\": failed to call webhook: couldn't get version/kind; json parse error";
    wait_until(
        "the garbage webhook to take effect",
        Duration::from_secs(10),
        || {
            let t = text(&create("garbage", "garbage"));
            if t.contains(garbage_error) {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    let uid_error = "Internal error occurred: failed calling webhook \"uid.example.com\": received invalid webhook response: expected response.uid=";
    wait_until(
        "the wrong-uid webhook to take effect",
        Duration::from_secs(10),
        || {
            let t = text(&create("uid", "uid"));
            if t.contains(uid_error) {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    // Objects no webhook selects are untouched by the failing ones.
    let out = create("other", "none");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn namespace_and_object_selectors_and_match_conditions_pick_requests() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    server.kubectl_ok(&["create", "namespace", "exempt"]);
    server.kubectl_ok(&["label", "namespace", "exempt", "webhooks=skip"]);
    server.kubectl_ok(&["create", "namespace", "checked"]);
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "deny.example.com",
            json!({"url": hooks.url("/deny-reserved")}),
            &hooks.ca_bundle,
            json!({
                "namespaceSelector": {"matchExpressions": [{"key": "webhooks", "operator": "NotIn", "values": ["skip"]}]},
                "objectSelector": {"matchExpressions": [{"key": "unchecked", "operator": "DoesNotExist"}]},
                "matchConditions": [{"name": "not-dry", "expression": "!has(object.data) || !('pass' in object.data)"}],
            }),
        ),
    );
    wait_in_force(&server, "reserved-probe", "denied the request");
    let create = |ns: &str, name: &str, labels: Value, data: Value| {
        server.kubectl_stdin(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "data": data})
            .to_string(),
        )
    };
    let out = create("checked", "reserved-a", json!({}), json!({}));
    assert!(
        !out.status.success() && text(&out).contains("denied the request"),
        "{}",
        text(&out)
    );
    let out = create("exempt", "reserved-a", json!({}), json!({}));
    assert!(
        out.status.success(),
        "the namespace selector did not exempt: {}",
        text(&out)
    );
    let out = create(
        "checked",
        "reserved-b",
        json!({"unchecked": "yes"}),
        json!({}),
    );
    assert!(
        out.status.success(),
        "the object selector did not exempt: {}",
        text(&out)
    );
    let out = create("checked", "reserved-c", json!({}), json!({"pass": "1"}));
    assert!(
        out.status.success(),
        "the match condition did not exempt: {}",
        text(&out)
    );
    assert!(
        hooks
            .requests("/deny-reserved")
            .iter()
            .all(|r| r["namespace"] != "exempt"
                && r["name"] != "reserved-b"
                && r["name"] != "reserved-c"),
        "an exempt request reached the webhook"
    );
    // Deletes go to webhooks whose rules name DELETE, with the old object.
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "deletes.example.com",
            json!({"url": hooks.url("/allow")}),
            &hooks.ca_bundle,
            json!({"rules": [{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]}),
        ),
    );
    wait_until(
        "the delete webhook to see a delete",
        Duration::from_secs(10),
        || {
            let name = unique_name("gone");
            server.kubectl_ok(&["create", "configmap", &name, "-n", "exempt"]);
            server.kubectl_ok(&["delete", "configmap", &name, "-n", "exempt"]);
            let seen = hooks.requests("/allow");
            match seen.iter().find(|r| r["name"] == name.as_str()) {
                Some(r)
                    if r["operation"] == "DELETE"
                        && r["oldObject"]["metadata"]["name"] == name.as_str()
                        && r["object"].is_null() =>
                {
                    Ok(())
                }
                Some(r) => Err(format!("unexpected review {r}")),
                None => Err("not seen yet".into()),
            }
        },
    );
}

#[test]
fn bad_webhook_configurations_are_refused_in_kubernetes_words() {
    let server = ApiServer::start();
    let bad = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bad"},
        "webhooks": [{
            "name": "short.name",
            "clientConfig": {"url": "http://127.0.0.1/x"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "Some",
            "timeoutSeconds": 60,
            "admissionReviewVersions": ["v1"],
        }],
    });
    let out = server.kubectl_stdin(&["create", "-f", "-"], &bad.to_string());
    assert!(!out.status.success());
    let t = text(&out);
    for want in [
        "The ValidatingWebhookConfiguration \"bad\" is invalid",
        "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
        "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
        "webhooks[0].timeoutSeconds: Invalid value: 60: the timeout value must be between 1 and 30 seconds",
        "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme",
    ] {
        assert!(t.contains(want), "missing {want:?} in {t}");
    }
    assert!(gone(&server.kubectl(&[
        "get",
        "validatingwebhookconfiguration",
        "bad"
    ])));
    // Defaults are filled in as Kubernetes fills them.
    let good = configuration(
        "MutatingWebhookConfiguration",
        "good.example.com",
        json!({"service": {"name": "hooks", "namespace": "default"}}),
        "",
        json!({}),
    );
    let good = good
        .replace(",\"caBundle\":\"\"", "")
        .replace("\"caBundle\":\"\",", "");
    install(&server, &good);
    let stored: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "mutatingwebhookconfiguration",
        "good-example-com",
        "-o",
        "json",
    ]))
    .unwrap();
    let hook = &stored["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["matchPolicy"], "Equivalent");
    assert_eq!(hook["timeoutSeconds"], 10);
    assert_eq!(hook["reinvocationPolicy"], "Never");
    assert_eq!(hook["clientConfig"]["service"]["port"], 443);
    assert_eq!(hook["rules"][0]["scope"], "*");
    assert_eq!(hook["namespaceSelector"], json!({}));
    let table = server.kubectl_ok(&["get", "mutatingwebhookconfigurations"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], vec!["NAME", "WEBHOOKS", "AGE"], "{table}");
    assert_eq!(rows[1][..2], ["good-example-com", "1"], "{table}");
}

/// The webhook server pod's CA (handed over as caBundle) and the Secret with its serving
/// certificate for `<service>.<namespace>.svc`.
fn webhook_pod_tls(service: &str, namespace: &str) -> (String, Value) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admission-webhook-pod-ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{service}.{namespace}.svc")])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": service, "namespace": namespace},
        "data": {"tls.crt": b64(cert.pem()), "tls.key": b64(key.serialize_pem())}});
    (b64(ca_cert.pem()), secret)
}

/// The webhook server pod (tests/images/admission_webhook.rs) behind the Service `service`,
/// a Service `nobody` without endpoints, and the namespace `admitted` (label `webhooks: on`)
/// whose objects the webhooks take.
fn webhook_pod_objects(image: &str, namespace: &str, service: &str, secret: Value) -> Vec<Value> {
    let labels = json!({"app": service});
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "admitted", "labels": {"webhooks": "on"}}}),
        secret,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": service, "namespace": namespace},
               "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                   "containers": [{"name": "webhook", "image": image, "imagePullPolicy": "Never",
                     "args": ["0.0.0.0:8443", "/tls/tls.crt", "/tls/tls.key"],
                     "ports": [{"containerPort": 8443}],
                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8443, "scheme": "HTTPS"},
                                        "periodSeconds": 1},
                     "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}]}],
                   "volumes": [{"name": "tls", "secret": {"secretName": service}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": service, "namespace": namespace},
               "spec": {"selector": labels, "ports": [{"port": 443, "targetPort": 8443}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "nobody", "namespace": namespace},
               "spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
    ]
}

/// The AdmissionReview requests the webhook pod logged for `path`, oldest first.
fn pod_reviews(cluster: &Cluster, namespace: &str, service: &str, path: &str) -> Vec<Value> {
    let logs = cluster.kubectl_ok(&["logs", "-n", namespace, &format!("deployment/{service}")]);
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["path"] == path)
        .map(|l| l["request"].clone())
        .collect()
}

/// Webhooks served by a pod of a real cluster (the Rust test image
/// tests/images/admission_webhook.rs) behind a Service: the API server in the server node
/// reaches it at the Service's ClusterIP through the node's service proxy and verifies it as
/// `<service>.<namespace>.svc` against the caBundle. A mutating webhook adds a label, a
/// validating one refuses a name; a webhook slower than its timeout and one behind a Service
/// without endpoints fail the request under failurePolicy Fail and are skipped under Ignore.
#[test]
fn webhooks_served_by_a_pod_behind_a_service() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("authz-hooks");
    let image = format!("kcluster-e2e/admission-webhook:{name}");
    let _image = images::build_admission_webhook_image(&sandbox, &image);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&image);
    let (namespace, service) = ("webhook-test", "admission-webhook");
    let (ca_bundle, secret) = webhook_pod_tls(service, namespace);
    for object in webhook_pod_objects(&image, namespace, service, secret) {
        let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &object.to_string());
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = cluster.kubectl(&[
        "rollout",
        "status",
        "-n",
        namespace,
        &format!("deployment/{service}"),
        "--timeout=120s",
    ]);
    assert!(
        out.status.success(),
        "the webhook pod never became ready: {}",
        text(&out)
    );

    let to = |svc: &str, path: &str| json!({"service": {"name": svc, "namespace": namespace, "path": path}});
    let admitted_only = |extra: Value| {
        let mut all = json!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            all[k] = v;
        }
        all
    };
    let apply = |config: String| {
        let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &config);
        assert!(out.status.success(), "{}", text(&out));
    };
    apply(configuration(
        "MutatingWebhookConfiguration",
        "label.example.com",
        to(service, "/add-label"),
        &ca_bundle,
        admitted_only(json!({"objectSelector": {"matchLabels": {"hook": "label"}}})),
    ));
    apply(configuration(
        "ValidatingWebhookConfiguration",
        "deny.example.com",
        to(service, "/deny-reserved"),
        &ca_bundle,
        admitted_only(json!({"objectSelector": {"matchLabels": {"hook": "label"}}})),
    ));
    let create_as = |name: &str, hook: &str, dry_run: bool| {
        let mut args = vec!["create", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        cluster.kubectl_stdin(
            &args,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "admitted", "labels": {"hook": hook}}})
            .to_string(),
        )
    };
    let create = |name: &str, hook: &str| create_as(name, hook, false);
    let denial = "admission webhook \"deny.example.com\" denied the request: the name reserved-x is reserved";
    wait_refused(
        "the webhook pod to deny",
        Duration::from_secs(60),
        denial,
        || create_as("reserved-x", "label", true),
    );
    let out = create("reserved-x", "label");
    assert!(text(&out).contains(denial), "{}", text(&out));
    assert!(gone(&cluster.kubectl(&[
        "get",
        "configmap",
        "-n",
        "admitted",
        "reserved-x"
    ])));
    let out = create("through-service", "label");
    assert!(out.status.success(), "{}", text(&out));
    for warning in [
        "Warning: labelled by the webhook pod",
        "Warning: through-service checked by the webhook pod",
    ] {
        assert!(
            text(&out).contains(warning),
            "no {warning:?} in {}",
            text(&out)
        );
    }
    let label = cluster.kubectl_ok(&[
        "get",
        "configmap",
        "-n",
        "admitted",
        "through-service",
        "-o",
        "jsonpath={.metadata.labels.webhook-added}",
    ]);
    assert_eq!(label.trim(), "pod");
    let mutated = pod_reviews(&cluster, namespace, service, "/add-label");
    let seen = mutated
        .iter()
        .find(|r| r["name"] == "through-service")
        .unwrap_or_else(|| panic!("the webhook pod never saw the create: {mutated:?}"));
    assert_eq!(seen["operation"], "CREATE");
    assert_eq!(seen["namespace"], "admitted");
    assert_eq!(
        seen["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(seen["userInfo"]["username"], "kubernetes-admin", "{seen}");
    let validated = pod_reviews(&cluster, namespace, service, "/deny-reserved");
    assert!(
        validated.iter().any(|r| r["name"] == "reserved-x"),
        "the webhook pod never saw the refused create: {validated:?}"
    );

    // failurePolicy both ways, for a webhook slower than its timeout and one that is down.
    let slow_url = format!("https://{service}.{namespace}.svc:443/slow?timeout=1s");
    let nobody_ip = cluster.kubectl_ok(&[
        "get",
        "service",
        "-n",
        namespace,
        "nobody",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let down_url = format!("https://nobody.{namespace}.svc:443/allow?timeout=10s");
    let cases = [
        (
            "slow.example.com",
            to(service, "/slow"),
            json!({"timeoutSeconds": 1}),
            format!(
                "Internal error occurred: failed calling webhook \"slow.example.com\": failed to call webhook: Post \"{slow_url}\": context deadline exceeded"
            ),
        ),
        (
            "down.example.com",
            to("nobody", "/allow"),
            json!({}),
            format!(
                "Internal error occurred: failed calling webhook \"down.example.com\": failed to call webhook: Post \"{down_url}\": dial tcp {}:443: connect: connection refused",
                nobody_ip.trim()
            ),
        ),
    ];
    for (hook, client, extra, want) in cases {
        let selector = json!({"objectSelector": {"matchLabels": {"hook": hook}}});
        let mut fail = admitted_only(selector.clone());
        let mut ignore = admitted_only(selector);
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            fail[&k] = v.clone();
            ignore[&k] = v;
        }
        fail["failurePolicy"] = json!("Fail");
        ignore["failurePolicy"] = json!("Ignore");
        apply(configuration(
            "ValidatingWebhookConfiguration",
            hook,
            client.clone(),
            &ca_bundle,
            fail,
        ));
        wait_refused(
            &format!("{hook} to fail the request"),
            Duration::from_secs(30),
            &want,
            || create_as("probe", hook, true),
        );
        let out = create(&format!("{}-fail", &hook[..4]), hook);
        assert!(text(&out).contains(&want), "{}", text(&out));
        assert!(gone(&cluster.kubectl(&[
            "get",
            "configmap",
            "-n",
            "admitted",
            &format!("{}-fail", &hook[..4]),
        ])));
        apply(configuration(
            "ValidatingWebhookConfiguration",
            hook,
            client,
            &ca_bundle,
            ignore,
        ));
        wait_until(
            &format!("{hook} to be ignored"),
            Duration::from_secs(30),
            || {
                let out = create(&format!("{}-ignored", &hook[..4]), hook);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(text(&out))
                }
            },
        );
    }
    assert!(
        !pod_reviews(&cluster, namespace, service, "/slow").is_empty(),
        "the slow webhook was never called"
    );

    // The scheduler binds pods through pods/binding as itself: the webhook sees a CREATE of a
    // Binding from system:kube-scheduler.
    apply(configuration(
        "ValidatingWebhookConfiguration",
        "bindings.example.com",
        to(service, "/allow"),
        &ca_bundle,
        admitted_only(
            json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""],
            "apiVersions": ["v1"], "resources": ["pods/binding"]}]}),
        ),
    ));
    let placed = |pod: &str| {
        let spec = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "admitted"},
            "spec": {"containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                                     "args": ["0.0.0.0:8443", "/none", "/none"]}]}});
        let out = cluster.kubectl_stdin(&["create", "-f", "-"], &spec.to_string());
        assert!(out.status.success(), "{}", text(&out));
    };
    // Configurations take effect within moments; each pod made before that is bound unseen.
    let mut attempt = 0;
    let mut binding = None;
    wait_until(
        "the binding webhook to see the scheduler's binding",
        Duration::from_secs(60),
        || {
            attempt += 1;
            let pod = format!("scheduled-{attempt}");
            placed(&pod);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                let seen = pod_reviews(&cluster, namespace, service, "/allow");
                if let Some(r) = seen.iter().find(|r| r["name"] == pod.as_str()) {
                    binding = Some(r.clone());
                    return Ok(());
                }
                let node = cluster.kubectl_ok(&[
                    "get",
                    "pod",
                    "-n",
                    "admitted",
                    &pod,
                    "-o",
                    "jsonpath={.spec.nodeName}",
                ]);
                if !node.trim().is_empty() {
                    return Err(format!("{pod} was bound to {node} unseen"));
                }
            }
            Err(format!("{pod} was not bound within 10 s"))
        },
    );
    let binding = binding.expect("a binding review");
    assert_eq!(binding["operation"], "CREATE", "{binding}");
    assert_eq!(binding["subResource"], "binding", "{binding}");
    assert_eq!(
        binding["kind"],
        json!({"group": "", "version": "v1", "kind": "Binding"})
    );
    assert_eq!(
        binding["userInfo"]["username"], "system:kube-scheduler",
        "{binding}"
    );

    conversion_webhook_behind_the_service(&cluster, namespace, service, &ca_bundle);
}

/// A CustomResourceDefinition whose conversion webhook is the same pod, named by its Service:
/// Notes written at v2 (`spec.message`) are stored at v1 (`spec.text`) through it and read
/// back at either version.
fn conversion_webhook_behind_the_service(
    cluster: &Cluster,
    namespace: &str,
    service: &str,
    ca_bundle: &str,
) {
    let schema = |field: &str| {
        json!({"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {field: {"type": "string"}}}}}})
    };
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "notes.conversion.example.com"},
        "spec": {"group": "conversion.example.com", "scope": "Namespaced",
            "names": {"plural": "notes", "singular": "note", "kind": "Note"},
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"caBundle": ca_bundle, "service": {
                    "name": service, "namespace": namespace, "path": "/convert", "port": 443}}}},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema("text")},
                {"name": "v2", "served": true, "storage": false, "schema": schema("message")}]}});
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &crd.to_string());
    assert!(out.status.success(), "{}", text(&out));
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/notes.conversion.example.com",
        "--timeout=30s",
    ]);
    let note = json!({"apiVersion": "conversion.example.com/v2", "kind": "Note",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"message": "converted in a pod"}});
    // The CRD is served within moments of Established; kubectl's discovery may lag as well.
    wait_until(
        "a Note to be created at v2",
        Duration::from_secs(30),
        || {
            let out = cluster.kubectl_stdin(&["create", "-f", "-"], &note.to_string());
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    let read = |resource: &str| -> Value {
        let out = cluster.kubectl_ok(&["get", resource, "hello", "-n", "default", "-o", "json"]);
        serde_json::from_str(&out).unwrap()
    };
    let v1 = read("notes.v1.conversion.example.com");
    assert_eq!(v1["apiVersion"], "conversion.example.com/v1", "{v1}");
    assert_eq!(v1["spec"], json!({"text": "converted in a pod"}), "{v1}");
    let v2 = read("notes.v2.conversion.example.com");
    assert_eq!(v2["spec"], json!({"message": "converted in a pod"}), "{v2}");
    let logs = cluster.kubectl_ok(&["logs", "-n", namespace, &format!("deployment/{service}")]);
    let conversions: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["path"] == "/convert")
        .collect();
    for desired in ["conversion.example.com/v1", "conversion.example.com/v2"] {
        assert!(
            conversions
                .iter()
                .any(|c| c["desired"] == desired && c["names"] == json!(["hello"])),
            "the pod never converted hello to {desired}: {conversions:?}"
        );
    }
}

/// p50 of `samples` ConfigMap creates through a kube-rs client, in milliseconds.
fn create_p50(server: &ApiServer, prefix: &str, samples: usize) -> f64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use k8s_openapi::api::core::v1::ConfigMap;
        let client = kube_client(&server.sandbox, server.context()).await;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples + 20 {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("{prefix}-{i}")},
                "data": {"k": "v"},
            }))
            .unwrap();
            let started = std::time::Instant::now();
            api.create(&kube::api::PostParams::default(), &cm)
                .await
                .expect("create");
            // The first creates warm connections and caches up.
            if i >= 20 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        times[times.len() / 2]
    })
}

/// The latency a no-op validating webhook adds to a create: p50 with the webhook against p50
/// without it, in the same run on the same server. Not a test: run by hand (BENCHMARKS.md).
#[test]
#[ignore]
fn webhook_latency_bench() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    let samples = 300;
    let baseline = create_p50(&server, "base", samples);
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "noop.example.com",
            json!({"url": hooks.url("/allow")}),
            &hooks.ca_bundle,
            json!({}),
        ),
    );
    wait_until(
        "the no-op webhook to be called",
        Duration::from_secs(10),
        || {
            let out = server.kubectl(&["create", "configmap", "probe", "--dry-run=server"]);
            if hooks.requests("/allow").is_empty() {
                Err(text(&out))
            } else {
                Ok(())
            }
        },
    );
    let with_webhook = create_p50(&server, "hooked", samples);
    let calls = hooks
        .requests("/allow")
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("hooked-")))
        .count();
    assert_eq!(
        calls,
        samples + 20,
        "every create must have reached the webhook"
    );
    println!(
        "create p50 over {samples}: without webhook {baseline:.2} ms, with a no-op validating webhook {with_webhook:.2} ms, added {:.2} ms",
        with_webhook - baseline
    );
}

/// ValidatingAdmissionPolicy: CEL validations in the API server, put in force by bindings
/// that deny (in kubectl's rendering of the 422) or warn.
#[test]
fn validating_admission_policies_deny_and_warn() {
    let server = ApiServer::start();
    let policy = |name: &str, validation: Value| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": name},
               "spec": {"matchConstraints": {"resourceRules": [{"operations": ["CREATE", "UPDATE"],
                           "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]},
                        "validations": [validation]}})
        .to_string()
    };
    let binding = |name: &str, policy: &str, action: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name},
               "spec": {"policyName": policy, "validationActions": [action],
                        "matchResources": {"namespaceSelector": {"matchExpressions": [
                            {"key": "policies", "operator": "NotIn", "values": ["off"]}]}}}})
        .to_string()
    };
    install(
        &server,
        &policy(
            "max-keys",
            json!({"expression": "!has(object.data) || size(object.data) <= 2", "message": "at most 2 keys"}),
        ),
    );
    install(&server, &binding("max-keys-binding", "max-keys", "Deny"));
    install(
        &server,
        &policy(
            "named-keys",
            json!({"expression": "!has(object.data) || object.data.all(k, k.startsWith('app-'))",
                   "messageExpression": "'keys of ' + object.metadata.name + ' should start with app-'"}),
        ),
    );
    install(
        &server,
        &binding("named-keys-binding", "named-keys", "Warn"),
    );
    let denial = "ValidatingAdmissionPolicy 'max-keys' with binding 'max-keys-binding' denied request: at most 2 keys";
    wait_refused(
        "the policy to take effect",
        Duration::from_secs(10),
        denial,
        || {
            server.kubectl(&[
                "create",
                "configmap",
                "probe",
                "--dry-run=server",
                "--from-literal=a=1",
                "--from-literal=b=2",
                "--from-literal=c=3",
            ])
        },
    );
    let out = server.kubectl(&[
        "create",
        "configmap",
        "big",
        "--from-literal=a=1",
        "--from-literal=b=2",
        "--from-literal=c=3",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("configmaps \"big\" is forbidden: {denial}")),
        "{}",
        text(&out)
    );
    assert!(gone(&server.kubectl(&["get", "configmap", "big"])));
    // A 422 with the message as its cause, which kubectl renders as Kubernetes' own.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                "data": {"a": "1", "b": "2", "c": "3"}})
        .to_string(),
    );
    assert!(
        text(&out).contains(&format!("The configmaps \"big\" is invalid: : {denial}")),
        "{}",
        text(&out)
    );

    let out = server.kubectl(&["create", "configmap", "small", "--from-literal=x=1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: Validation failed for ValidatingAdmissionPolicy 'named-keys' with binding 'named-keys-binding': keys of small should start with app-"),
        "{}",
        text(&out)
    );
    // The binding's own matchResources exempt a namespace.
    server.kubectl_ok(&["create", "namespace", "relaxed"]);
    server.kubectl_ok(&["label", "namespace", "relaxed", "policies=off"]);
    let out = server.kubectl(&[
        "create",
        "configmap",
        "big",
        "-n",
        "relaxed",
        "--from-literal=a=1",
        "--from-literal=b=2",
        "--from-literal=c=3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // Updates are checked too.
    let out = server.kubectl(&[
        "patch",
        "configmap",
        "small",
        "--type=merge",
        "-p",
        r#"{"data":{"y":"2","z":"3"}}"#,
    ]);
    assert!(
        !out.status.success() && text(&out).contains(denial),
        "{}",
        text(&out)
    );

    let table = server.kubectl_ok(&["get", "validatingadmissionpolicy", "max-keys"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        vec!["NAME", "VALIDATIONS", "PARAMKIND", "AGE"],
        "{table}"
    );
    assert_eq!(rows[1][..3], ["max-keys", "1", "<unset>"], "{table}");
    let table = server.kubectl_ok(&[
        "get",
        "validatingadmissionpolicybinding",
        "max-keys-binding",
    ]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        vec!["NAME", "POLICYNAME", "PARAMREF", "AGE"],
        "{table}"
    );
    assert_eq!(
        rows[1][..3],
        ["max-keys-binding", "max-keys", "<unset>"],
        "{table}"
    );

    // Bad policies are refused and change nothing.
    let bad = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                     "metadata": {"name": "bad"}, "spec": {"validations": [{"expression": "object.("}]}});
    let out = server.kubectl_stdin(&["create", "-f", "-"], &bad.to_string());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("spec.matchConstraints: Required value"),
        "{}",
        text(&out)
    );
    assert!(gone(&server.kubectl(&[
        "get",
        "validatingadmissionpolicy",
        "bad"
    ])));
}

/// matchPolicy Equivalent: a webhook registered for autoscaling/v1 HorizontalPodAutoscalers
/// gets a create made through autoscaling/v2, converted to v1, with the request's own kind
/// beside it; under Exact it is not called.
#[test]
fn equivalent_match_policy_converts_to_the_registered_version() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    let hpa_rule = json!({"rules": [{"operations": ["CREATE"], "apiGroups": ["autoscaling"],
                                     "apiVersions": ["v1"], "resources": ["horizontalpodautoscalers"]}]});
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "v1-hpas.example.com",
            json!({"url": hooks.url("/allow")}),
            &hooks.ca_bundle,
            hpa_rule.clone(),
        ),
    );
    let mut exact = hpa_rule;
    exact["matchPolicy"] = json!("Exact");
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "exact-hpas.example.com",
            json!({"url": hooks.url("/deny-reserved")}),
            &hooks.ca_bundle,
            exact,
        ),
    );
    let hpa = |name: &str| {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": name},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                        "minReplicas": 1, "maxReplicas": 3,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                     "target": {"type": "Utilization", "averageUtilization": 60}}}]}})
        .to_string()
    };
    // Both in force: a v1 create named reserved-* is refused by the Exact one.
    let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "reserved-v1"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                             "maxReplicas": 3}})
    .to_string();
    wait_until(
        "the Exact webhook to take effect",
        Duration::from_secs(10),
        || {
            let out = server.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &v1);
            let t = text(&out);
            if t.contains("admission webhook \"exact-hpas.example.com\" denied the request") {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    wait_until(
        "the v1 webhook to see a v2 create",
        Duration::from_secs(10),
        || {
            let name = unique_name("hpa");
            let out = server.kubectl_stdin(&["create", "-f", "-"], &hpa(&name));
            if !out.status.success() {
                return Err(text(&out));
            }
            match hooks
                .requests("/allow")
                .into_iter()
                .find(|r| r["name"] == name.as_str())
            {
                Some(r) => {
                    assert_eq!(
                        r["kind"],
                        json!({"group": "autoscaling", "version": "v1", "kind": "HorizontalPodAutoscaler"})
                    );
                    assert_eq!(
                        r["requestKind"],
                        json!({"group": "autoscaling", "version": "v2", "kind": "HorizontalPodAutoscaler"})
                    );
                    assert_eq!(r["object"]["apiVersion"], "autoscaling/v1");
                    assert_eq!(r["object"]["spec"]["targetCPUUtilizationPercentage"], 60);
                    Ok(())
                }
                None => Err("not seen yet".into()),
            }
        },
    );
    assert!(
        hooks
            .requests("/deny-reserved")
            .iter()
            .all(|r| r["requestKind"]["version"] == "v1"),
        "the Exact webhook was called for a v2 request"
    );
}

/// `kubectl exec` is a CONNECT to pods/exec: a webhook whose rules name it gets the
/// PodExecOptions and can refuse it before anything reaches a node.
#[test]
fn exec_is_admitted_as_connect() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reserved-pod"},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let out = server.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
    assert!(out.status.success(), "{}", text(&out));
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "exec.example.com",
            json!({"url": hooks.url("/deny-reserved")}),
            &hooks.ca_bundle,
            json!({"rules": [{"operations": ["CONNECT"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods/exec"]}]}),
        ),
    );
    let denial = "admission webhook \"exec.example.com\" denied the request: the name reserved-pod is reserved";
    wait_refused(
        "the exec webhook to take effect",
        Duration::from_secs(10),
        denial,
        || server.kubectl(&["exec", "reserved-pod", "-c", "c", "--", "ls", "-l"]),
    );
    let seen = hooks.requests("/deny-reserved");
    let review = seen.last().expect("the webhook saw the exec");
    assert_eq!(review["operation"], "CONNECT");
    assert_eq!(review["subResource"], "exec");
    assert_eq!(review["resource"]["resource"], "pods");
    assert_eq!(review["kind"]["kind"], "PodExecOptions");
    assert_eq!(review["namespace"], "default");
    assert_eq!(review["object"]["command"], json!(["ls", "-l"]));
    assert_eq!(review["object"]["container"], "c");
}

/// Writes through subresources reach webhooks as kube-apiserver sends them: pods/binding and
/// pods/eviction as CREATE of a Binding and an Eviction, deployments/scale as UPDATE of an
/// autoscaling/v1 Scale (with the Scale before), each with `subResource` set and the parent's
/// resource; rules `pods/*` and `*/scale` pick them. The webhook's warnings come back as
/// Warning headers on every verb, a connect's included.
#[test]
fn subresource_writes_reach_webhooks_with_their_own_kind() {
    let server = ApiServer::start();
    let hooks = Webhooks::start();
    for object in [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bound"},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "evicted"},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    ] {
        let out = server.kubectl_stdin(&["create", "-f", "-"], &object.to_string());
        assert!(out.status.success(), "{}", text(&out));
    }
    install(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "subresources.example.com",
            json!({"url": hooks.url("/observe")}),
            &hooks.ca_bundle,
            json!({"rules": [
                {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/*"]},
                {"operations": ["UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["*/scale"]},
                {"operations": ["CONNECT"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/exec"]},
            ]}),
        ),
    );
    wait_until(
        "the scale webhook to take effect",
        Duration::from_secs(10),
        || {
            let out = server.kubectl(&["scale", "deployment", "web", "--replicas=2"]);
            if out.status.success() && text(&out).contains("Warning: UPDATE scale observed") {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    let out = server.kubectl(&["scale", "deployment", "web", "--replicas=3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: UPDATE scale observed"),
        "{}",
        text(&out)
    );
    let seen = hooks.requests("/observe");
    let scale = seen
        .iter()
        .find(|r| r["object"]["spec"]["replicas"] == 3)
        .unwrap_or_else(|| panic!("no scale to 3 among {seen:?}"));
    assert_eq!(scale["operation"], "UPDATE");
    assert_eq!(scale["subResource"], "scale");
    assert_eq!(scale["requestSubResource"], "scale");
    assert_eq!(
        scale["kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(scale["requestKind"], scale["kind"]);
    assert_eq!(
        scale["resource"],
        json!({"group": "apps", "version": "v1", "resource": "deployments"})
    );
    assert_eq!(scale["name"], "web");
    assert_eq!(scale["namespace"], "default");
    assert_eq!(scale["object"]["kind"], "Scale");
    assert_eq!(scale["oldObject"]["spec"]["replicas"], 2);
    assert_eq!(scale["options"]["kind"], "UpdateOptions");

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}});
    let out = server.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/bound/binding",
            "-f",
            "-",
        ],
        &binding.to_string(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: CREATE binding observed"),
        "{}",
        text(&out)
    );
    let node = server.kubectl_ok(&["get", "pod", "bound", "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(node.trim(), "node-a");
    let seen = hooks.requests("/observe");
    let bound = seen
        .iter()
        .find(|r| r["subResource"] == "binding")
        .unwrap_or_else(|| panic!("no binding among {seen:?}"));
    assert_eq!(bound["operation"], "CREATE");
    assert_eq!(
        bound["kind"],
        json!({"group": "", "version": "v1", "kind": "Binding"})
    );
    assert_eq!(
        bound["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(bound["name"], "bound");
    assert_eq!(bound["object"]["target"]["name"], "node-a");
    assert_eq!(bound["options"]["kind"], "CreateOptions");

    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": "evicted", "namespace": "default"}});
    let out = server.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/evicted/eviction",
            "-f",
            "-",
        ],
        &eviction.to_string(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: CREATE eviction observed"),
        "{}",
        text(&out)
    );
    let seen = hooks.requests("/observe");
    let evicted = seen
        .iter()
        .find(|r| r["subResource"] == "eviction")
        .unwrap_or_else(|| panic!("no eviction among {seen:?}"));
    assert_eq!(evicted["operation"], "CREATE");
    assert_eq!(
        evicted["kind"],
        json!({"group": "policy", "version": "v1", "kind": "Eviction"})
    );
    assert_eq!(evicted["resource"]["resource"], "pods");
    assert_eq!(evicted["name"], "evicted");
    assert_eq!(evicted["object"]["kind"], "Eviction");
    // The eviction's delete of its pod is not sent again.
    assert!(!seen.iter().any(|r| r["operation"] == "DELETE"), "{seen:?}");

    // A connect has no node to reach here, but is admitted first, and the webhook's warning
    // comes back with the error.
    let out = server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/bound/exec?command=true&stdout=true",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: CONNECT exec observed"),
        "{}",
        text(&out)
    );
    assert!(
        hooks
            .requests("/observe")
            .iter()
            .any(|r| r["operation"] == "CONNECT" && r["subResource"] == "exec"),
        "the webhook never saw the exec"
    );
}

/// A policy with a paramKind reads its limit from the object its binding's paramRef names;
/// until that object exists, parameterNotFoundAction Deny refuses.
#[test]
fn a_policy_reads_its_params_from_the_bound_object() {
    let server = ApiServer::start();
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "secret-keys"},
        "spec": {"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                 "matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": [""],
                                      "apiVersions": ["v1"], "resources": ["secrets"]}]},
                 "validations": [{"expression": "size(object.data) <= int(params.data.maxKeys)",
                                  "messageExpression": "'at most ' + params.data.maxKeys + ' keys'"}]}});
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "secret-keys-binding"},
        "spec": {"policyName": "secret-keys", "validationActions": ["Deny"],
                 "paramRef": {"name": "secret-limits", "namespace": "default",
                              "parameterNotFoundAction": "Deny"}}});
    install(&server, &policy.to_string());
    install(&server, &binding.to_string());
    let missing = "ValidatingAdmissionPolicy 'secret-keys' with binding 'secret-keys-binding' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction";
    wait_refused(
        "the policy to refuse without its params",
        Duration::from_secs(10),
        missing,
        || {
            server.kubectl(&[
                "create",
                "secret",
                "generic",
                "probe",
                "--from-literal=a=1",
                "--dry-run=server",
            ])
        },
    );
    server.kubectl_ok(&[
        "create",
        "configmap",
        "secret-limits",
        "--from-literal=maxKeys=1",
    ]);
    let too_many = "ValidatingAdmissionPolicy 'secret-keys' with binding 'secret-keys-binding' denied request: at most 1 keys";
    wait_refused(
        "the policy to use its params",
        Duration::from_secs(10),
        too_many,
        || {
            server.kubectl(&[
                "create",
                "secret",
                "generic",
                "two",
                "--from-literal=a=1",
                "--from-literal=b=2",
            ])
        },
    );
    let out = server.kubectl(&["create", "secret", "generic", "one", "--from-literal=a=1"]);
    assert!(out.status.success(), "{}", text(&out));
    // A binding with both a name and a selector is refused.
    let mut bad = binding.clone();
    bad["metadata"]["name"] = json!("bad-binding");
    bad["spec"]["paramRef"]["selector"] = json!({});
    let out = server.kubectl_stdin(&["create", "-f", "-"], &bad.to_string());
    assert!(
        !out.status.success()
            && text(&out).contains(
                "spec.paramRef.name: Forbidden: one of name or selector must be specified"
            ),
        "{}",
        text(&out)
    );
}
