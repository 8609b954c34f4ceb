use serde_json::{Value, json};

use super::*;
use crate::apiserver::resources;

fn def(group: &str, plural: &str) -> &'static ResourceDef {
    let version = "v1";
    resources::find(group, version, plural).expect("served")
}

fn set_of(fields_v1: Value) -> FieldSet {
    FieldSet::from_fields_v1(&fields_v1).expect("valid FieldsV1")
}

#[test]
fn fields_v1_round_trips_in_kubernetes_form() {
    let cases = [
        // A leaf is `{}`; an owned parent with owned children carries ".".
        json!({"f:data": {".": {}, "f:a": {}}}),
        json!({"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}),
        json!({"f:metadata": {"f:finalizers": {"v:\"kubernetes\"": {}}}}),
        json!({"f:spec": {"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}}}),
        json!({"f:items": {"i:3": {}}}),
        json!({}),
    ];
    for case in cases {
        assert_eq!(set_of(case.clone()).to_fields_v1(), case);
    }
    // Unknown kinds of keys are skipped; "." alone marks a member.
    assert_eq!(
        set_of(json!({"f:a": {"x:y": {}}, "z:q": {}})).to_fields_v1(),
        json!({"f:a": {}})
    );
    assert!(FieldSet::from_fields_v1(&json!({"nocolon": {}})).is_err());
    assert!(FieldSet::from_fields_v1(&json!({"k:notjson": {}})).is_err());
    assert!(FieldSet::from_fields_v1(&json!({"f:a": 3})).is_err());
}

#[test]
fn set_operations_follow_structured_merge_diff() {
    let a = set_of(json!({"f:a": {".": {}, "f:b": {}, "f:c": {}}, "f:d": {}}));
    let b = set_of(json!({"f:a": {"f:b": {}}, "f:e": {}}));
    let parent_only = set_of(json!({"f:a": {}}));
    let cases: Vec<(&str, FieldSet, Value)> = vec![
        (
            "union",
            a.union(&b),
            json!({"f:a": {".": {}, "f:b": {}, "f:c": {}}, "f:d": {}, "f:e": {}}),
        ),
        (
            "intersection",
            a.intersection(&b),
            json!({"f:a": {"f:b": {}}}),
        ),
        (
            "difference removes members only",
            a.difference(&b),
            json!({"f:a": {".": {}, "f:c": {}}, "f:d": {}}),
        ),
        (
            "parent - child = parent",
            parent_only.difference(&b),
            json!({"f:a": {}}),
        ),
        (
            "child - parent keeps the children",
            b.difference(&parent_only),
            json!({"f:a": {"f:b": {}}, "f:e": {}}),
        ),
        (
            "recursive difference takes the subtree",
            a.recursive_difference(&parent_only),
            json!({"f:d": {}}),
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got.to_fields_v1(), want, "{name}");
    }
    let paths: Vec<String> = a.paths().iter().map(|p| path::path_string(p)).collect();
    assert_eq!(paths, [".a", ".d", ".a.b", ".a.c"]);
}

#[test]
fn path_elements_print_as_conflicts_show_them() {
    let set = set_of(
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
        "k:{\"name\":\"nginx\"}": {"f:image": {}}}}}}}),
    );
    let paths: Vec<String> = set.paths().iter().map(|p| path::path_string(p)).collect();
    assert_eq!(
        paths,
        [".spec.template.spec.containers[name=\"nginx\"].image"]
    );
    let set = set_of(json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}}));
    assert_eq!(
        path::path_string(&set.paths()[0]),
        ".metadata.finalizers[=\"a/b\"]"
    );
    assert_eq!(
        path::go_json(&json!({"k": "a<b&c>"})),
        r#"{"k":"a\u003cb\u0026c\u003e"}"#
    );
}

fn deployment_ctx() -> Context {
    Context::new(def("apps", "deployments"), None)
}

#[test]
fn applied_field_sets_name_what_the_configuration_holds() {
    let ctx = deployment_ctx();
    let cases = [
        (
            json!({"metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"replicas": 2}}),
            json!({"f:metadata": {"f:labels": {"f:a": {}}, "f:name": {}}, "f:spec": {"f:replicas": {}}}),
        ),
        (
            // Atomic values (a label selector) are owned whole; list-map items by their keys,
            // with the port protocol defaulted in the key.
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "template": {"spec": {
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                "args": ["x"]}]}}}}),
            json!({"f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {},
                        "f:containerPort": {}}}}}}}}}),
        ),
        (
            // Sets own their values; null and {} fields are owned themselves.
            json!({"metadata": {"finalizers": ["a", "b"], "annotations": null},
                   "spec": {"template": {"spec": {"securityContext": {}}}}}),
            json!({"f:metadata": {"f:annotations": {}, "f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}},
                   "f:spec": {"f:template": {"f:spec": {"f:securityContext": {}}}}}),
        ),
    ];
    for (config, want) in cases {
        assert_eq!(
            typed::to_field_set(ctx.ty, &config).to_fields_v1(),
            want,
            "{config}"
        );
    }
}

#[test]
fn merging_follows_list_and_map_types() {
    let ctx = deployment_ctx();
    let containers = |v: &Value| v["spec"]["template"]["spec"]["containers"].clone();
    let live = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
        "spec": {"selector": {"matchLabels": {"a": "1", "b": "2"}},
            "template": {"spec": {"containers": [
                {"name": "a", "image": "a:1", "args": ["1", "2"]},
                {"name": "b", "image": "b:1"},
                {"name": "c", "image": "c:1"}]}}}});
    let config = json!({"metadata": {"finalizers": ["b"], "labels": {"y": "2"}},
        "spec": {"selector": {"matchLabels": {"a": "1"}},
            "template": {"spec": {"containers": [
                {"name": "c", "image": "c:2"},
                {"name": "a", "args": ["3"]}]}}}});
    let merged = typed::merge(ctx.ty, &live, &config);
    // Sets union, granular maps merge, atomic values are replaced.
    assert_eq!(merged["metadata"]["finalizers"], json!(["a", "b"]));
    assert_eq!(merged["metadata"]["labels"], json!({"x": "1", "y": "2"}));
    assert_eq!(
        merged["spec"]["selector"],
        json!({"matchLabels": {"a": "1"}})
    );
    // Items merge by key in the configuration's order; an unnamed live item keeps its place.
    assert_eq!(
        containers(&merged),
        json!([{"name": "b", "image": "b:1"}, {"name": "c", "image": "c:2"},
               {"name": "a", "image": "a:1", "args": ["3"]}])
    );
}

#[test]
fn comparing_a_new_object_with_the_zero_one_owns_what_go_would_add() {
    let ctx = deployment_ctx();
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "w", "labels": {"app": "w"}},
        "spec": {"replicas": 1, "paused": false, "selector": {"matchLabels": {"app": "w"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "c", "image": "i", "args": []}]}}},
        "status": {"replicas": 3}});
    let mut managed = Managed::default();
    record_update(
        &mut managed,
        &ctx,
        ctx.id("m", Operation::Update),
        &ctx.view(&json!({})),
        &ctx.view(&obj),
    );
    let entry = managed.entries.values().next().expect("an entry");
    // Non-pointer structs (strategy, template, template.metadata) are never added; a false
    // omitempty bool and an empty omitempty list are not there at all; status is reset.
    assert_eq!(
        entry.set.to_fields_v1(),
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {},
                        "f:name": {}, "f:resources": {}}}}}}})
    );
    assert!(entry.time.is_some());
}

fn cm_ctx() -> Context {
    Context::new(def("", "configmaps"), None)
}

fn owners(obj: &Value) -> Vec<(String, String, Value)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_string(),
                        e["operation"].as_str().unwrap_or_default().to_string(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

#[test]
fn apply_creates_updates_prunes_and_shares() {
    let ctx = cm_ctx();
    let created = apply(
        &ctx,
        &json!({}),
        false,
        &cm(json!({"a": "1", "b": "2"})),
        "a",
        false,
    )
    .expect("create");
    assert_eq!(created["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        owners(&created),
        [(
            "a".into(),
            "Apply".into(),
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        )]
    );
    // Another applier sharing b with the same value: no conflict, both own it.
    let shared = apply(&ctx, &created, true, &cm(json!({"b": "2"})), "b", false).expect("share");
    assert_eq!(shared["data"], created["data"]);
    // No longer applying b: it stays, owned by the other applier; a's c is added.
    let pruned = apply(
        &ctx,
        &shared,
        true,
        &cm(json!({"a": "1", "c": "3"})),
        "a",
        false,
    )
    .expect("prune");
    assert_eq!(pruned["data"], json!({"a": "1", "b": "2", "c": "3"}));
    // Once nobody applies b, it goes.
    let nothing = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let gone = apply(&ctx, &pruned, true, &nothing, "b", false).expect("drop b");
    assert_eq!(gone["data"], json!({"a": "1", "c": "3"}));
    let mut names: Vec<String> = owners(&gone).into_iter().map(|o| o.0).collect();
    names.sort();
    assert_eq!(names, ["a"]);
}

#[test]
fn apply_conflicts_with_other_managers_unless_forced() {
    let ctx = cm_ctx();
    let mut live = cm(json!({"a": "1"}));
    let mut managed = Managed::default();
    record_update(
        &mut managed,
        &ctx,
        ctx.id("editor", Operation::Update),
        &ctx.view(&json!({})),
        &ctx.view(&live),
    );
    set_managed_fields(&mut live, &managed);
    let err = apply(&ctx, &live, true, &cm(json!({"a": "2"})), "ci", false).expect_err("conflict");
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.a"
    );
    assert_eq!(
        err.details.as_ref().map(|d| d["causes"].clone()),
        Some(json!([{"reason": "FieldManagerConflict",
            "message": "conflict with \"editor\" using v1", "field": ".data.a"}]))
    );
    // The same value is no conflict; forcing takes the field over.
    assert!(apply(&ctx, &live, true, &cm(json!({"a": "1"})), "ci", false).is_ok());
    let forced = apply(&ctx, &live, true, &cm(json!({"a": "2"})), "ci", true).expect("forced");
    assert_eq!(forced["data"]["a"], "2");
    // The editor keeps what it still owns: the data map itself.
    assert_eq!(
        owners(&forced),
        [
            ("ci".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})),
            ("editor".into(), "Update".into(), json!({"f:data": {}}))
        ]
    );
}

#[test]
fn kubectl_may_take_over_what_client_side_apply_last_applied() {
    let ctx = cm_ctx();
    let last = "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"1\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}\n";
    let mut live = cm(json!({"a": "1", "b": "2"}));
    live["metadata"]["annotations"] = json!({LAST_APPLIED: last});
    let mut managed = Managed::default();
    record_update(
        &mut managed,
        &ctx,
        ctx.id("kubectl-client-side-apply", Operation::Update),
        &ctx.view(&json!({})),
        &ctx.view(&live),
    );
    set_managed_fields(&mut live, &managed);
    // a matches the last applied configuration: kubectl takes it over without --force; b does not.
    let mut config = cm(json!({"a": "9"}));
    config["metadata"]["annotations"] = json!({LAST_APPLIED: last});
    let out = apply(&ctx, &live, true, &config, "kubectl", false).expect("migrated");
    assert_eq!(out["data"]["a"], "9");
    // kubectl's server-side apply keeps the annotation in step.
    assert_eq!(
        out["metadata"]["annotations"][LAST_APPLIED],
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"9\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"c\"}}\n"
    );
    let err = apply(&ctx, &live, true, &cm(json!({"b": "3"})), "kubectl", false)
        .expect_err("b was not last applied");
    assert!(err.message.contains(".data.b"), "{}", err.message);
    let err = apply(&ctx, &live, true, &cm(json!({"a": "9"})), "other", false)
        .expect_err("only kubectl migrates");
    assert_eq!(err.code, 409);
}

#[test]
fn a_no_op_apply_changes_nothing() {
    let ctx = cm_ctx();
    let created =
        apply(&ctx, &json!({}), false, &cm(json!({"a": "1"})), "a", false).expect("create");
    let again = apply(&ctx, &created, true, &cm(json!({"a": "1"})), "a", false).expect("again");
    assert_eq!(again, created);
}

#[test]
fn updates_move_ownership_and_merge_per_manager() {
    let ctx = cm_ctx();
    let v1 = cm(json!({"a": "1", "b": "2"}));
    let mut managed = Managed::default();
    let zero = ctx.view(&json!({}));
    record_update(
        &mut managed,
        &ctx,
        ctx.id("create", Operation::Update),
        &zero,
        &ctx.view(&v1),
    );
    let v2 = cm(json!({"a": "1", "b": "3", "c": "4"}));
    record_update(
        &mut managed,
        &ctx,
        ctx.id("edit", Operation::Update),
        &ctx.view(&v1),
        &ctx.view(&v2),
    );
    let v3 = cm(json!({"a": "1", "c": "5"}));
    record_update(
        &mut managed,
        &ctx,
        ctx.id("edit", Operation::Update),
        &ctx.view(&v2),
        &ctx.view(&v3),
    );
    let got: Vec<(String, Value)> = managed
        .entries
        .iter()
        .map(|(id, e)| (id.manager.clone(), e.set.to_fields_v1()))
        .collect();
    assert_eq!(
        got,
        [
            ("create".into(), json!({"f:data": {".": {}, "f:a": {}}})),
            ("edit".into(), json!({"f:data": {"f:c": {}}})),
        ]
    );
    // A write that changes nothing leaves every entry as it was, time included.
    let before = managed.clone();
    record_update(
        &mut managed,
        &ctx,
        ctx.id("x", Operation::Update),
        &ctx.view(&v3),
        &ctx.view(&v3),
    );
    assert_eq!(managed, before);
}

#[test]
fn client_sent_managed_fields_are_honoured_or_reset() {
    let live = json!({"metadata": {"managedFields": [{"manager": "old", "operation": "Update",
        "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]}});
    let valid = json!({"metadata": {"managedFields": [{"manager": "new", "operation": "Apply",
        "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]}});
    let invalid = json!({"metadata": {"managedFields": [{"manager": "x", "operation": "Bogus",
        "apiVersion": "v1", "fieldsType": "FieldsV1"}]}});
    let first = |m: &Managed| m.entries.keys().next().map(|id| id.manager.clone());
    assert_eq!(
        first(&starting_point(Some(&live), &valid, false)),
        Some("new".into())
    );
    assert_eq!(
        first(&starting_point(Some(&live), &invalid, false)),
        Some("old".into())
    );
    assert_eq!(
        first(&starting_point(Some(&live), &json!({}), false)),
        Some("old".into())
    );
    assert_eq!(
        first(&starting_point(Some(&live), &valid, true)),
        Some("old".into())
    );
    for reset in [json!([]), json!([{}])] {
        let new = json!({"metadata": {"managedFields": reset}});
        assert!(starting_point(Some(&live), &new, false).is_empty());
    }
}

#[test]
fn managed_fields_sort_appliers_first_then_by_time() {
    let list = json!([
        {"manager": "z", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:a": {}}, "time": "2024-01-02T00:00:00Z"},
        {"manager": "y", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:b": {}}, "time": "2024-01-01T00:00:00Z"},
        {"manager": "x", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:c": {}}, "time": "2024-01-03T00:00:00Z", "subresource": "status"},
    ]);
    let encoded = Managed::decode(&list)
        .expect("valid")
        .encode()
        .expect("entries");
    let managers: Vec<&str> = encoded
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert_eq!(managers, ["x", "y", "z"]);
    assert_eq!(encoded[0]["subresource"], "status");
    for bad in [
        json!([{"operation": "Update", "fieldsType": "FieldsV1"}]),
        json!([{"operation": "Update", "apiVersion": "v1"}]),
        json!([{"operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV2"}]),
    ] {
        assert!(Managed::decode(&bad).is_err(), "{bad}");
    }
}

#[test]
fn update_entries_are_capped_into_ancient_changes() {
    let mut managed = Managed::default();
    for i in 0..12 {
        managed.entries.insert(
            ManagerId::new(&format!("m{i:02}"), Operation::Update, "v1", ""),
            managed::Entry {
                api_version: "v1".into(),
                set: set_of(json!({format!("f:f{i}"): {}})),
                time: Some(format!("2024-01-01T00:00:{i:02}Z")),
            },
        );
    }
    managed.cap_updates(10);
    assert_eq!(managed.entries.len(), 10);
    let ancient = managed
        .entries
        .iter()
        .find(|(id, _)| id.manager == "ancient-changes")
        .map(|(_, e)| e.set.to_fields_v1());
    assert_eq!(ancient, Some(json!({"f:f0": {}, "f:f1": {}, "f:f2": {}})));
}

#[test]
fn go_field_table_knows_the_common_kinds() {
    for name in [
        "io.k8s.api.apps.v1.DeploymentSpec",
        "io.k8s.api.core.v1.PodSpec",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.api.core.v1.ServiceSpec",
    ] {
        assert!(gofields::has_type(name), "{name}");
    }
    let ctx = deployment_ctx();
    assert_eq!(
        gofields::normalize(ctx.ty, &json!({})),
        json!({"metadata": {"creationTimestamp": null},
            "spec": {"selector": null, "strategy": {},
                "template": {"metadata": {"creationTimestamp": null},
                    "spec": {"containers": null}}},
            "status": {}})
    );
}
