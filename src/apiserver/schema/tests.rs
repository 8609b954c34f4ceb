//! Table-driven tests of strategic merge patch and field validation, from Kubernetes' documented
//! behaviour (the strategic-merge-patch and field-validation docs, and kubectl's patches).

use serde_json::{Value, json};

use super::*;
use crate::apiserver::resources::{ResourceDef, Scope};
use crate::apiserver::table::Printer;

fn def(group: &'static str, kind: &'static str) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural: "things",
        singular: "thing",
        kind,
        scope: Scope::Namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        printer: Printer::Default,
        fields: &[],
        stored_as: None,
        custom: None,
    }
}

fn smp(group: &str, kind: &str, original: Value, patch: Value) -> Result<Value, smp::SmpError> {
    let root = registry().kind(group, "v1", kind).expect("kind");
    smp::apply(root, &original, &patch)
}

struct Case {
    name: &'static str,
    kind: (&'static str, &'static str),
    original: Value,
    patch: Value,
    expected: Value,
}

const POD: (&str, &str) = ("", "Pod");
const DEPLOYMENT: (&str, &str) = ("apps", "Deployment");

fn pod(containers: Value) -> Value {
    json!({"spec": {"containers": containers}})
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "maps merge recursively and null deletes",
            kind: POD,
            original: json!({"metadata": {"labels": {"a": "1", "b": "2"}, "name": "p"}}),
            patch: json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
            expected: json!({"metadata": {"labels": {"a": "1", "c": "3"}, "name": "p"}}),
        },
        Case {
            name: "null for an absent field is ignored",
            kind: POD,
            original: json!({"metadata": {"name": "p"}}),
            patch: json!({"metadata": {"annotations": null}}),
            expected: json!({"metadata": {"name": "p"}}),
        },
        Case {
            name: "list elements merge by merge key (kubectl set image)",
            kind: POD,
            original: pod(
                json!([{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
                                  {"name": "side", "image": "busybox"}]),
            ),
            patch: pod(json!([{"name": "web", "image": "nginx:2"}])),
            expected: pod(
                json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]},
                                  {"name": "side", "image": "busybox"}]),
            ),
        },
        Case {
            name: "an element only in the patch comes first (the kubectl patch docs' example)",
            kind: POD,
            original: pod(json!([{"name": "patch-demo-ctr", "image": "nginx"}])),
            patch: pod(json!([{"name": "patch-demo-ctr-2", "image": "redis"}])),
            expected: pod(json!([{"name": "patch-demo-ctr-2", "image": "redis"},
                                  {"name": "patch-demo-ctr", "image": "nginx"}])),
        },
        Case {
            name: "$patch: delete removes every element with the merge key",
            kind: POD,
            original: pod(
                json!([{"name": "nginx", "image": "nginx-1.0"}, {"name": "log-tailer", "image": "t"}]),
            ),
            patch: pod(
                json!([{"name": "nginx", "image": "nginx-1.0"}, {"$patch": "delete", "name": "log-tailer"}]),
            ),
            expected: pod(json!([{"name": "nginx", "image": "nginx-1.0"}])),
        },
        Case {
            name: "$patch: replace in a list replaces the list",
            kind: POD,
            original: pod(
                json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y", "tty": true}]),
            ),
            patch: pod(json!([{"name": "b", "image": "z"}, {"$patch": "replace"}])),
            expected: pod(json!([{"name": "b", "image": "z"}])),
        },
        Case {
            name: "$patch: replace on a map takes the map literally",
            kind: POD,
            original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            patch: json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
            expected: json!({"metadata": {"labels": {"c": "3"}}}),
        },
        Case {
            name: "$patch: delete on a map empties it",
            kind: DEPLOYMENT,
            original: json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            patch: json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}),
            expected: json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {}}}}),
        },
        Case {
            name: "$patch: replace at the top replaces the object",
            kind: POD,
            original: json!({"metadata": {"name": "p"}, "spec": {"hostname": "h"}}),
            patch: json!({"$patch": "replace", "metadata": {"name": "q"}}),
            expected: json!({"metadata": {"name": "q"}}),
        },
        Case {
            name: "merged primitive lists are unions in patch order first",
            kind: POD,
            original: json!({"metadata": {"finalizers": ["a", "b"]}}),
            patch: json!({"metadata": {"finalizers": ["c", "a"]}}),
            expected: json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList removes values",
            kind: POD,
            original: json!({"metadata": {"finalizers": ["a", "b", "c", "b"]}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "c"]}}),
            expected: json!({"metadata": {"finalizers": ["a"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList on an absent list adds nothing",
            kind: POD,
            original: json!({"metadata": {"name": "p"}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            expected: json!({"metadata": {"name": "p"}}),
        },
        Case {
            name: "$setElementOrder reorders a primitive list",
            kind: POD,
            original: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            patch: json!({"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"]}}),
            expected: json!({"metadata": {"finalizers": ["b", "c", "a"]}}),
        },
        Case {
            name: "$setElementOrder reorders a list of maps",
            kind: POD,
            original: pod(
                json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]),
            ),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}]}}),
            expected: pod(
                json!([{"name": "b", "image": "2"}, {"name": "c", "image": "3"}, {"name": "a", "image": "1"}]),
            ),
        },
        Case {
            name: "$setElementOrder places an added element where kubectl apply put it",
            kind: POD,
            original: pod(json!([{"name": "a", "image": "1"}, {"name": "c", "image": "3"}])),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                                   "containers": [{"name": "b", "image": "2"}]}}),
            expected: pod(
                json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]),
            ),
        },
        Case {
            name: "a server-only element precedes the ordered ones the live list had after it",
            kind: POD,
            original: pod(
                json!([{"name": "a", "image": "1"}, {"name": "s", "image": "9"}, {"name": "c", "image": "3"}]),
            ),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}]}}),
            expected: pod(
                json!([{"name": "s", "image": "9"}, {"name": "c", "image": "3"}, {"name": "a", "image": "1"}]),
            ),
        },
        Case {
            name: "kubectl apply prunes an env var (nested order and delete directives)",
            kind: POD,
            original: pod(
                json!([{"name": "app", "image": "i", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]),
            ),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "app"}],
                                   "containers": [{"$setElementOrder/env": [{"name": "A"}], "name": "app",
                                                   "env": [{"$patch": "delete", "name": "B"}]}]}}),
            expected: pod(
                json!([{"name": "app", "image": "i", "env": [{"name": "A", "value": "1"}]}]),
            ),
        },
        Case {
            name: "$retainKeys clears the other members of a union (Deployment strategy)",
            kind: DEPLOYMENT,
            original: json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}}),
            patch: json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            expected: json!({"spec": {"replicas": 2, "strategy": {"type": "Recreate"}}}),
        },
        Case {
            name: "$retainKeys on a list element (a volume changes its source)",
            kind: POD,
            original: json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "emptyDir": {}}]}}),
            patch: json!({"spec": {"volumes": [{"$retainKeys": ["name", "secret"], "name": "v", "secret": {"secretName": "s"}}]}}),
            expected: json!({"spec": {"volumes": [{"name": "v", "secret": {"secretName": "s"}}, {"name": "w", "emptyDir": {}}]}}),
        },
        Case {
            name: "lists without patch strategy are replaced atomically",
            kind: POD,
            original: json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "args": ["x", "y"]}]}}),
            patch: json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "args": ["z"]}]}}),
            expected: json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "args": ["z"]}]}}),
        },
        Case {
            name: "container ports merge by containerPort",
            kind: POD,
            original: pod(
                json!([{"name": "c", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]),
            ),
            patch: pod(json!([{"name": "c", "ports": [{"containerPort": 80, "name": "web"}]}])),
            expected: pod(
                json!([{"name": "c", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}]),
            ),
        },
        Case {
            name: "service ports merge by port",
            kind: ("", "Service"),
            original: json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
            patch: json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
            expected: json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}),
        },
        Case {
            name: "ownerReferences merge by uid",
            kind: POD,
            original: json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}}),
            patch: json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}),
            expected: json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]}}),
        },
        Case {
            name: "new subtrees lose their nulls and directives",
            kind: POD,
            original: json!({"metadata": {"name": "p"}}),
            patch: json!({"spec": {"containers": [{"name": "c", "image": null, "env": [{"$patch": "delete", "name": "x"}]}],
                                   "$setElementOrder/volumes": [], "hostname": null}}),
            expected: json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "env": []}]}}),
        },
        Case {
            name: "fields the schema does not know merge as maps",
            kind: POD,
            original: json!({"extra": {"a": 1, "l": [1, 2]}}),
            patch: json!({"extra": {"b": 2, "l": [3]}}),
            expected: json!({"extra": {"a": 1, "b": 2, "l": [3]}}),
        },
        Case {
            name: "map values (labels, annotations) of a pod template merge (kubectl rollout restart)",
            kind: DEPLOYMENT,
            original: json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}}}),
            patch: json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}}),
            expected: json!({"spec": {"template": {"metadata": {"labels": {"app": "x"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}},
                "spec": {"containers": [{"name": "c"}]}}}}),
        },
        Case {
            name: "a value of another type replaces the old one",
            kind: POD,
            original: json!({"spec": {"containers": "oops"}}),
            patch: pod(json!([{"name": "c"}])),
            expected: pod(json!([{"name": "c"}])),
        },
        Case {
            name: "node addresses merge by type, podCIDRs are a set",
            kind: ("", "Node"),
            original: json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}, "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}]}}),
            patch: json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}, "status": {"addresses": [{"type": "Hostname", "address": "n"}]}}),
            expected: json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]},
                "status": {"addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "1.2.3.4"}]}}),
        },
    ]
}

#[test]
fn strategic_merge_patch_cases() {
    for case in cases() {
        let got = smp(case.kind.0, case.kind.1, case.original, case.patch);
        assert_eq!(got, Ok(case.expected), "{}", case.name);
    }
}

#[test]
fn strategic_merge_patch_errors() {
    let cases: Vec<(&str, Value, Value, smp::SmpError)> = vec![
        (
            "an element without its merge key",
            pod(json!([{"name": "a"}])),
            pod(json!([{"image": "x"}])),
            smp::SmpError::Other(
                "map: map[image:x] does not contain declared merge key: name".into(),
            ),
        ),
        (
            "$patch: merge on a list",
            pod(json!([{"name": "a"}])),
            pod(json!([{"$patch": "merge"}])),
            smp::SmpError::Other("merging lists cannot yet be specified in the patch".into()),
        ),
        (
            "an unknown map directive",
            json!({"metadata": {"labels": {}}}),
            json!({"metadata": {"labels": {"$patch": "nope"}}}),
            smp::SmpError::Other("unknown patch type: nope in map: map[$patch:nope]".into()),
        ),
        (
            "a field outside $retainKeys",
            json!({"spec": {"hostname": "h"}}),
            json!({"spec": {"$retainKeys": ["hostname"], "subdomain": "s"}}),
            smp::SmpError::BadRequest("invalid patch format of retainKeys".into()),
        ),
        (
            "lists of lists",
            json!({"metadata": {"finalizers": [["a"]]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
            smp::SmpError::Unprocessable("lists of lists are not supported".into()),
        ),
        (
            "$setElementOrder contradicting the patch",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["a", "b"], "finalizers": ["b", "a"]}}),
            smp::SmpError::Other(
                "The order in patch list:\n[b a]\n doesn't match $setElementOrder list:\n[a b]\n"
                    .into(),
            ),
        ),
    ];
    for (name, original, patch, expected) in cases {
        assert_eq!(smp("", "Pod", original, patch), Err(expected), "{name}");
    }
    assert!(matches!(
        smp("", "Pod", json!({}), json!([1])),
        Err(smp::SmpError::BadRequest(_))
    ));
}

#[test]
fn strategic_merge_refuses_kinds_without_a_schema() {
    let custom = def("example.com", "Widget");
    let err = strategic_merge(&custom, &json!({}), &json!({})).expect_err("no schema");
    assert_eq!(err.code, 415);
}

fn check(
    kind: (&'static str, &'static str),
    body: &str,
    content_type: &str,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    check_fields(
        &def(kind.0, kind.1),
        body.as_bytes(),
        content_type,
        obj,
        mode,
    )
}

fn create(body: &str, mode: FieldValidation) -> (Result<Vec<String>, ApiError>, Value) {
    let mut obj: Value = serde_json::from_str(body).expect("json");
    let result = check(DEPLOYMENT, body, "application/json", &mut obj, mode);
    (result, obj)
}

const DEPLOY_BODY: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment",
  "metadata":{"name":"d","labels":{"a":"1","a":"2"},"foo":1},
  "spec":{"replicas":1,"replicas":2,"bogus":{"x":1},"bogus":{"x":2},
    "template":{"spec":{"containers":[{"name":"c","image":"i","imagePullPolicyx":"Always"}]}}},
  "status":{"extra":true}}"#;

#[test]
fn strict_create_reports_unknown_and_duplicate_fields_in_body_order() {
    let (result, _) = create(DEPLOY_BODY, FieldValidation::Strict);
    let err = result.expect_err("strict");
    assert_eq!(err.code, 400);
    assert_eq!(err.reason, "BadRequest");
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         duplicate field \"metadata.labels.a\", unknown field \"metadata.foo\", \
         duplicate field \"spec.replicas\", unknown field \"spec.bogus\", \
         unknown field \"spec.template.spec.containers[0].imagePullPolicyx\", unknown field \"status.extra\""
    );
}

#[test]
fn warn_returns_the_same_texts_and_prunes() {
    let (result, obj) = create(DEPLOY_BODY, FieldValidation::Warn);
    let warnings = result.expect("warn passes");
    assert_eq!(warnings.len(), 6);
    assert_eq!(warnings[1], "unknown field \"metadata.foo\"");
    assert!(obj.pointer("/metadata/foo").is_none());
    assert!(obj.pointer("/spec/bogus").is_none());
    assert!(obj.pointer("/status/extra").is_none());
    assert!(
        obj.pointer("/spec/template/spec/containers/0/imagePullPolicyx")
            .is_none()
    );
    assert_eq!(obj.pointer("/spec/replicas"), Some(&json!(2)));
    assert_eq!(obj.pointer("/metadata/labels/a"), Some(&json!("2")));
}

#[test]
fn ignore_reports_nothing_and_still_prunes() {
    let (result, obj) = create(DEPLOY_BODY, FieldValidation::Ignore);
    assert_eq!(result.expect("ignore"), Vec::<String>::new());
    assert!(obj.pointer("/metadata/foo").is_none());
}

#[test]
fn free_form_fields_hold_anything() {
    let body = r#"{"apiVersion":"apps/v1","kind":"ControllerRevision","metadata":{"name":"r",
        "managedFields":[{"manager":"m","fieldsV1":{"f:spec":{"f:x":{}},"f:spec":{}}}]},
        "data":{"anything":{"goes":1},"anything":2},"revision":1}"#;
    let mut obj: Value = serde_json::from_str(body).expect("json");
    let result = check(
        ("apps", "ControllerRevision"),
        body,
        "application/json",
        &mut obj,
        FieldValidation::Strict,
    );
    assert_eq!(result.expect("passes"), Vec::<String>::new());
    assert_eq!(obj.pointer("/data/anything"), Some(&json!(2)));
}

#[test]
fn yaml_bodies_are_checked_too() {
    let body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: x\nfoo: 1\n";
    let mut obj: Value = serde_yaml::from_str(body).expect("yaml");
    let err = check(
        ("", "ConfigMap"),
        body,
        "application/yaml",
        &mut obj,
        FieldValidation::Strict,
    )
    .expect_err("unknown");
    assert_eq!(
        err.message,
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"foo\""
    );
}

#[test]
fn strict_patches_are_invalid_with_the_patch_as_value() {
    let patch = r#"{"spec":{"foo":"bar","replicas":1,"replicas":2}}"#;
    let mut patched = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                             "spec": {"foo": "bar", "replicas": 2}});
    let err = check(
        DEPLOYMENT,
        patch,
        "application/strategic-merge-patch+json",
        &mut patched,
        FieldValidation::Strict,
    )
    .expect_err("strict");
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        " \"\" is invalid: patch: Invalid value: \"map[spec:map[foo:bar replicas:2]]\": \
         strict decoding error: duplicate field \"spec.replicas\", unknown field \"spec.foo\""
    );
    let causes = &err.details.as_ref().expect("details")["causes"];
    assert_eq!(causes[0]["field"], "patch");
    assert!(patched.pointer("/spec/foo").is_none());

    let mut patched = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"foo": 1}});
    let warnings = check(
        DEPLOYMENT,
        r#"{"spec":{"foo":1}}"#,
        "application/merge-patch+json",
        &mut patched,
        FieldValidation::Warn,
    )
    .expect("warn");
    assert_eq!(warnings, ["unknown field \"spec.foo\""]);

    let mut patched = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"foo": 1}});
    let err = check(
        DEPLOYMENT,
        r#"[{"op":"add","path":"/spec/foo","value":1,"extra":0}]"#,
        "application/json-patch+json",
        &mut patched,
        FieldValidation::Strict,
    )
    .expect_err("strict");
    assert!(
        err.message.ends_with(
            "strict decoding error: json patch unknown field \"[0].extra\", unknown field \"spec.foo\""
        ),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains(r#"Invalid value: "{\"apiVersion\":\"apps/v1\""#)
    );
}

#[test]
fn server_side_apply_rejects_undeclared_fields() {
    let body = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: ns\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        foo: 1\n";
    let mut obj: Value = serde_yaml::from_str(body).expect("yaml");
    let err = check(
        DEPLOYMENT,
        body,
        "application/apply-patch+yaml",
        &mut obj,
        FieldValidation::Ignore,
    )
    .expect_err("undeclared");
    assert_eq!(
        err.message,
        "failed to create typed patch object (ns/d; apps/v1, Kind=Deployment): \
         .spec.template.spec.containers[name=\"app\"].foo: field not declared in schema"
    );
}

#[test]
fn custom_kinds_pass() {
    let mut obj = json!({"spec": {"anything": 1}});
    let result = check_fields(
        &def("example.com", "Widget"),
        br#"{"spec":{"anything":1,"anything":2}}"#,
        "application/json",
        &mut obj,
        FieldValidation::Strict,
    );
    assert_eq!(result.expect("passes"), Vec::<String>::new());
    assert_eq!(obj, json!({"spec": {"anything": 1}}));
}

#[test]
fn the_invalid_patch_is_printed_as_kubernetes_leaves_it_after_merging() {
    let patch = r#"{"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"name":"c","image":"i"}],"foo":1}}"#;
    let mut patched = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "i"}], "foo": 1}});
    let err = check(
        POD,
        patch,
        "application/strategic-merge-patch+json",
        &mut patched,
        FieldValidation::Strict,
    )
    .expect_err("strict");
    assert!(
        err.message
            .contains("patch: Invalid value: \"map[spec:map[foo:1]]\": strict decoding error: unknown field \"spec.foo\""),
        "{}",
        err.message
    );
}

#[test]
fn subresource_objects_are_checked_against_their_own_kind() {
    // PATCH deployments/x/scale carries an autoscaling/v1 Scale, not a Deployment.
    let body =
        r#"{"apiVersion":"autoscaling/v1","kind":"Scale","spec":{"replicas":3,"paused":true}}"#;
    let mut obj: Value = serde_json::from_str(body).expect("json");
    let warnings = check(
        DEPLOYMENT,
        body,
        "application/json",
        &mut obj,
        FieldValidation::Warn,
    )
    .expect("warn");
    assert_eq!(warnings, ["unknown field \"spec.paused\""]);
    assert_eq!(
        obj,
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 3}})
    );
}
