//! What a custom resource's structural schema does beyond validation, through the real kubectl
//! against the standalone API server: defaults added to a schema show on objects stored before
//! (get, list, watch), server-side apply merges by `x-kubernetes-list-type`/`map-type`, applies
//! at a non-storage version record that version, a HorizontalPodAutoscaler scales a custom
//! resource through its `/scale` subresource, and `x-kubernetes-validations` rules use
//! Kubernetes' CEL libraries (lists, regex, URLs, quantities, formats, IPs and CIDRs).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn apply(server: &ApiServer, manifest: &str) {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "apply failed: {}", text(&out));
}

fn established(server: &ApiServer, crd: &str) {
    server.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/{crd}"),
    ]);
}

fn get_json(server: &ApiServer, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&args)).expect("kubectl printed JSON")
}

/// An object with its managedFields (kubectl leaves them out otherwise).
fn get_managed(server: &ApiServer, what: &[&str]) -> Value {
    let mut args = what.to_vec();
    args.push("--show-managed-fields");
    get_json(server, &args)
}

fn gadgets_crd(spec_properties: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.org
spec:
  group: example.org
  scope: Namespaced
  names: {{plural: gadgets, singular: gadget, kind: Gadget}}
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
            properties:
{spec_properties}
"#
    )
}

const SIZE_ONLY: &str = "              size: {type: string}";

const SIZE_WITH_DEFAULTS: &str = "              size: {type: string}
              color: {type: string, default: blue}
              tuning:
                type: object
                default: {}
                properties:
                  level: {type: integer, default: 3}";

/// What the defaults added later put on an object stored without them.
fn assert_defaulted(obj: &Value, how: &str) {
    assert_eq!(obj["spec"]["size"], "small", "{how}: {obj:#}");
    assert_eq!(obj["spec"]["color"], "blue", "{how}: {obj:#}");
    assert_eq!(obj["spec"]["tuning"], json!({"level": 3}), "{how}: {obj:#}");
}

#[test]
fn defaults_added_to_a_schema_show_on_objects_stored_before() {
    let server = ApiServer::start();
    apply(&server, &gadgets_crd(SIZE_ONLY));
    established(&server, "gadgets.example.org");
    let before = get_json(&server, &["gadgets"]);
    let list_rv = before["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list resourceVersion")
        .to_string();
    apply(
        &server,
        "apiVersion: example.org/v1
kind: Gadget
metadata: {name: g1, labels: {app: demo}}
spec: {size: small}
",
    );
    let stored = get_json(&server, &["gadget", "g1"]);
    assert!(stored["spec"].get("color").is_none(), "{stored:#}");
    let stored_rv = stored["metadata"]["resourceVersion"].clone();

    apply(&server, &gadgets_crd(SIZE_WITH_DEFAULTS));
    wait_until("the new default on get", Duration::from_secs(30), || {
        let g = get_json(&server, &["gadget", "g1"]);
        (g["spec"]["color"] == "blue")
            .then_some(())
            .ok_or_else(|| g.to_string())
    });
    let got = get_json(&server, &["gadget", "g1"]);
    assert_defaulted(&got, "get");
    // Defaults are applied on the way out: nothing was written.
    assert_eq!(got["metadata"]["resourceVersion"], stored_rv, "{got:#}");

    // A list copies stored objects as they are unless defaults apply; with and without a
    // selector (which decodes each object) both show them.
    let list = get_json(&server, &["gadgets"]);
    assert_defaulted(&list["items"][0], "list");
    let selected = get_json(&server, &["gadgets", "-l", "app=demo"]);
    assert_defaulted(&selected["items"][0], "list with a selector");
    assert_defaulted(&paged_gadget(&server), "paged list");

    // A watch from before the object was created replays its ADDED event from the store's
    // history: decoded now, with the defaults in force now.
    let events = server.kubectl_ok(&[
        "get",
        "--raw",
        &format!(
            "/apis/example.org/v1/namespaces/default/gadgets?watch=true&resourceVersion={list_rv}&timeoutSeconds=2"
        ),
    ]);
    let added: Vec<Value> = events
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON watch event"))
        .filter(|e: &Value| e["type"] == "ADDED")
        .collect();
    assert_eq!(added.len(), 1, "{events}");
    assert_defaulted(&added[0]["object"], "watch replay");
    // A watch's initial list (kubectl get -w) too.
    assert_defaulted(&initial_gadget(&server), "watch initial events");

    // A merge patch of another field starts from the defaulted object and stores it.
    server.kubectl_ok(&[
        "patch",
        "gadget",
        "g1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"app":"patched"}}}"#,
    ]);
    let patched = get_json(&server, &["gadget", "g1"]);
    assert_defaulted(&patched, "after a patch");
    assert_eq!(patched["metadata"]["labels"]["app"], "patched");
}

/// Fields a schema no longer declares are pruned from objects stored before, on every read,
/// as kube-apiserver's storage decoder prunes them; nothing is written back.
#[test]
fn fields_dropped_from_a_schema_are_pruned_on_read() {
    let server = ApiServer::start();
    apply(
        &server,
        &gadgets_crd(
            "              size: {type: string}
            x-kubernetes-preserve-unknown-fields: true",
        ),
    );
    established(&server, "gadgets.example.org");
    apply(
        &server,
        "apiVersion: example.org/v1
kind: Gadget
metadata: {name: g1, labels: {app: demo}}
spec: {size: small, legacy: {kept: true}}
",
    );
    let stored = get_json(&server, &["gadget", "g1"]);
    assert_eq!(
        stored["spec"]["legacy"],
        json!({"kept": true}),
        "{stored:#}"
    );
    let stored_rv = stored["metadata"]["resourceVersion"].clone();

    apply(&server, &gadgets_crd(SIZE_ONLY));
    wait_until(
        "the dropped field pruned on get",
        Duration::from_secs(30),
        || {
            let g = get_json(&server, &["gadget", "g1"]);
            g["spec"]
                .get("legacy")
                .is_none()
                .then_some(())
                .ok_or_else(|| g.to_string())
        },
    );
    let got = get_json(&server, &["gadget", "g1"]);
    assert_eq!(got["spec"], json!({"size": "small"}), "{got:#}");
    assert_eq!(got["metadata"]["resourceVersion"], stored_rv, "{got:#}");
    assert_eq!(got["metadata"]["labels"]["app"], "demo", "{got:#}");
    let list = get_json(&server, &["gadgets"]);
    assert_eq!(
        list["items"][0]["spec"],
        json!({"size": "small"}),
        "{list:#}"
    );
    assert_eq!(paged_gadget(&server)["spec"], json!({"size": "small"}));
    assert_eq!(initial_gadget(&server)["spec"], json!({"size": "small"}));
}

/// The first gadget as a paged list (`limit=1`) serves it: a read path that decodes stored
/// objects on its own.
fn paged_gadget(server: &ApiServer) -> Value {
    let raw: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/example.org/v1/namespaces/default/gadgets?limit=1",
    ]))
    .expect("JSON");
    raw["items"][0].clone()
}

/// The first gadget as a watch's initial events (kubectl get -w) serve it.
fn initial_gadget(server: &ApiServer) -> Value {
    let initial = server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/example.org/v1/namespaces/default/gadgets?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
    ]);
    let first: Value =
        serde_json::from_str(initial.lines().next().unwrap_or_default()).expect("an event");
    assert_eq!(first["type"], "ADDED", "{initial}");
    first["object"].clone()
}

const RIGS_VERSION_SCHEMA: &str = r#"
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    port: {type: integer}
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {type: string}
              args:
                type: array
                x-kubernetes-list-type: atomic
                items: {type: string}
              selector:
                type: object
                x-kubernetes-map-type: atomic
                additionalProperties: {type: string}
              settings:
                type: object
                additionalProperties: {type: string}
"#;

fn rigs_crd() -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: rigs.example.org
spec:
  group: example.org
  scope: Namespaced
  names: {{plural: rigs, singular: rig, kind: Rig}}
  versions:
  - name: v1
    served: true
    storage: true{RIGS_VERSION_SCHEMA}  - name: v1beta1
    served: true
    storage: false{RIGS_VERSION_SCHEMA}"#
    )
}

fn server_side(server: &ApiServer, manager: &str, extra: &[&str], manifest: &str) -> String {
    let mut args = vec![
        "apply",
        "--server-side",
        "--field-manager",
        manager,
        "-f",
        "-",
    ];
    args.extend_from_slice(extra);
    let out = server.kubectl_stdin(&args, manifest);
    assert!(
        out.status.success(),
        "apply by {manager} failed: {}",
        text(&out)
    );
    stdout(&out)
}

/// The managedFields entry of `manager`.
fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["manager"] == manager))
        .unwrap_or_else(|| panic!("no managedFields entry of {manager}: {obj:#}"))
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| {
            if field.is_empty() {
                i.as_str().unwrap_or_default().to_string()
            } else {
                i[field].as_str().unwrap_or_default().to_string()
            }
        })
        .collect()
}

#[test]
fn server_side_apply_merges_custom_resources_by_their_list_and_map_types() {
    let server = ApiServer::start();
    // The list and map types are served, not merely accepted: no warning says otherwise.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &rigs_crd());
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Warning"), "{}", text(&out));
    established(&server, "rigs.example.org");

    server_side(
        &server,
        "a",
        &[],
        "apiVersion: example.org/v1
kind: Rig
metadata: {name: r1}
spec:
  ports: [{name: http, port: 80}]
  tags: [red]
  args: [a1, a2]
  selector: {k1: v1}
  settings: {s1: one}
",
    );
    server_side(
        &server,
        "b",
        &[],
        "apiVersion: example.org/v1
kind: Rig
metadata: {name: r1}
spec:
  ports: [{name: https, port: 443}]
  tags: [green]
  settings: {s2: two}
",
    );
    let rig = get_managed(&server, &["rig", "r1"]);
    let spec = &rig["spec"];
    assert_eq!(names(&spec["ports"], "name"), ["http", "https"], "{rig:#}");
    assert_eq!(names(&spec["tags"], ""), ["red", "green"], "{rig:#}");
    assert_eq!(
        spec["settings"],
        json!({"s1": "one", "s2": "two"}),
        "{rig:#}"
    );

    // Keys as Kubernetes writes them: `k:{...}` for map-list items, `v:` for set members.
    let a = &entry(&rig, "a")["fieldsV1"]["f:spec"];
    assert_eq!(
        a["f:ports"],
        json!({r#"k:{"name":"http"}"#: {".": {}, "f:name": {}, "f:port": {}}}),
        "{rig:#}"
    );
    assert_eq!(a["f:tags"], json!({r#"v:"red""#: {}}), "{rig:#}");
    assert_eq!(
        a["f:args"],
        json!({}),
        "an atomic list is one field: {rig:#}"
    );
    assert_eq!(
        a["f:selector"],
        json!({}),
        "an atomic map is one field: {rig:#}"
    );
    assert_eq!(a["f:settings"], json!({"f:s1": {}}), "{rig:#}");
    assert_eq!(entry(&rig, "a")["operation"], "Apply");
    assert_eq!(entry(&rig, "a")["apiVersion"], "example.org/v1");
    let b = &entry(&rig, "b")["fieldsV1"]["f:spec"];
    assert_eq!(
        b["f:ports"],
        json!({r#"k:{"name":"https"}"#: {".": {}, "f:name": {}, "f:port": {}}}),
        "{rig:#}"
    );

    // An atomic list or map belongs to one manager as a whole: another one conflicts, and
    // forcing replaces it whole instead of merging.
    let atomic = "apiVersion: example.org/v1
kind: Rig
metadata: {name: r1}
spec:
  ports: [{name: https, port: 443}]
  tags: [green]
  settings: {s2: two}
  args: [b1]
  selector: {k2: v2}
";
    let out = server.kubectl_stdin(
        &["apply", "--server-side", "--field-manager", "b", "-f", "-"],
        atomic,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains(r#"conflicts with "a""#) && err.contains(".spec.args"),
        "{err}"
    );
    assert!(err.contains(".spec.selector"), "{err}");
    server_side(&server, "b", &["--force-conflicts"], atomic);
    let rig = get_managed(&server, &["rig", "r1"]);
    assert_eq!(rig["spec"]["args"], json!(["b1"]), "{rig:#}");
    assert_eq!(rig["spec"]["selector"], json!({"k2": "v2"}), "{rig:#}");
    let a = &entry(&rig, "a")["fieldsV1"]["f:spec"];
    assert!(
        a.get("f:args").is_none() && a.get("f:selector").is_none(),
        "{rig:#}"
    );

    // A manager that stops applying its item removes only that item.
    server_side(
        &server,
        "a",
        &[],
        "apiVersion: example.org/v1
kind: Rig
metadata: {name: r1}
spec:
  tags: [red]
  settings: {s1: one}
",
    );
    let rig = get_managed(&server, &["rig", "r1"]);
    assert_eq!(names(&rig["spec"]["ports"], "name"), ["https"], "{rig:#}");
    assert_eq!(names(&rig["spec"]["tags"], ""), ["red", "green"], "{rig:#}");
}

#[test]
fn server_side_apply_at_a_non_storage_version_records_that_version() {
    let server = ApiServer::start();
    apply(&server, &rigs_crd());
    established(&server, "rigs.example.org");

    let out = server_side(
        &server,
        "beta",
        &[],
        "apiVersion: example.org/v1beta1
kind: Rig
metadata: {name: r2}
spec:
  ports: [{name: http, port: 80}]
",
    );
    assert!(
        out.contains("rig.example.org/r2 serverside-applied"),
        "{out}"
    );
    server_side(
        &server,
        "ga",
        &[],
        "apiVersion: example.org/v1
kind: Rig
metadata: {name: r2}
spec:
  ports: [{name: https, port: 443}]
",
    );
    // The beta manager applies again at v1beta1: its item changes, the other manager's stays.
    server_side(
        &server,
        "beta",
        &[],
        "apiVersion: example.org/v1beta1
kind: Rig
metadata: {name: r2}
spec:
  ports: [{name: http, port: 8080}]
",
    );
    let rig = get_managed(&server, &["rigs.v1.example.org", "r2"]);
    assert_eq!(rig["apiVersion"], "example.org/v1");
    assert_eq!(
        rig["spec"]["ports"],
        json!([{"name": "http", "port": 8080}, {"name": "https", "port": 443}]),
        "{rig:#}"
    );
    assert_eq!(entry(&rig, "beta")["apiVersion"], "example.org/v1beta1");
    assert_eq!(entry(&rig, "beta")["operation"], "Apply");
    assert_eq!(entry(&rig, "ga")["apiVersion"], "example.org/v1");
    assert_eq!(
        entry(&rig, "beta")["fieldsV1"]["f:spec"]["f:ports"],
        json!({r#"k:{"name":"http"}"#: {".": {}, "f:name": {}, "f:port": {}}}),
        "{rig:#}"
    );
    let beta = get_json(&server, &["rigs.v1beta1.example.org", "r2"]);
    assert_eq!(beta["apiVersion"], "example.org/v1beta1", "{beta:#}");

    // An update at v1beta1 is recorded at v1beta1 too.
    server.kubectl_ok(&[
        "label",
        "rigs.v1beta1.example.org",
        "r2",
        "tier=gold",
        "--field-manager=labeller",
    ]);
    let rig = get_managed(&server, &["rig", "r2"]);
    assert_eq!(entry(&rig, "labeller")["operation"], "Update");
    assert_eq!(
        entry(&rig, "labeller")["apiVersion"],
        "example.org/v1beta1",
        "{rig:#}"
    );
}

fn crew_replicas(server: &ApiServer, name: &str) -> String {
    server.kubectl_ok(&["get", "crew", name, "-o", "jsonpath={.spec.replicas}"])
}

/// Waits (past a sync period of the autoscaler) for a crew's spec.replicas.
fn wait_replicas(server: &ApiServer, name: &str, want: &str) {
    wait_until(
        &format!("{name} scaled to {want}"),
        Duration::from_secs(90),
        || match crew_replicas(server, name) {
            got if got == want => Ok(()),
            got => Err(got),
        },
    );
}

/// The autoscaler's condition of `type_`, once it has the wanted status and reason.
fn wait_condition(server: &ApiServer, hpa: &str, type_: &str, status: &str, reason: &str) -> Value {
    let mut found = Value::Null;
    wait_until(
        &format!("{type_}={status} ({reason}) on {hpa}"),
        Duration::from_secs(90),
        || {
            let obj = get_json(server, &["hpa", hpa]);
            let c = obj["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned());
            match c {
                Some(c) if c["status"] == status && c["reason"] == reason => {
                    found = c;
                    Ok(())
                }
                _ => Err(obj.to_string()),
            }
        },
    );
    found
}

/// The autoscaler reads and writes a custom resource's scale through `/scale`, found through
/// discovery, and takes the pods' selector from its labelSelectorPath. With the controllers and
/// no nodes there are no pod metrics, so what it does without them is what is checked: the
/// replica count brought within min/max, and metrics asked for the selected pods.
#[test]
fn an_autoscaler_scales_a_custom_resource_through_its_scale_subresource() {
    let server = ApiServer::start_with(&["--controllers"]);
    apply(&server, common::crds::CREWS);
    established(&server, "crews.example.org");
    for name in ["low", "high", "blind"] {
        apply(
            &server,
            &format!(
                "apiVersion: example.org/v1\nkind: Crew\nmetadata: {{name: {name}}}\nspec: {{replicas: 1}}\n"
            ),
        );
    }
    for name in ["low", "high"] {
        server.kubectl_ok(&[
            "patch",
            "crew",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"replicas":1,"selector":"app={name}"}}}}"#),
        ]);
    }
    let scale: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/example.org/v1/namespaces/default/crews/low/scale",
    ]))
    .expect("a Scale");
    assert_eq!(scale["status"]["selector"], "app=low", "{scale:#}");

    let hpa = |name: &str, min: u32, max: u32| {
        format!(
            r#"{{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {{"name": "{name}"}},
            "spec": {{"scaleTargetRef": {{"apiVersion": "example.org/v1", "kind": "Crew", "name": "{name}"}},
                     "minReplicas": {min}, "maxReplicas": {max},
                     "metrics": [{{"type": "Resource", "resource": {{"name": "cpu",
                                  "target": {{"type": "Utilization", "averageUtilization": 50}}}}}}]}}}}"#
        )
    };
    for (name, min, max) in [("low", 3, 5), ("high", 1, 2), ("blind", 1, 4)] {
        let out = server.kubectl_stdin(&["create", "-f", "-"], &hpa(name, min, max));
        assert!(out.status.success(), "{}", text(&out));
    }

    // Below minReplicas: scaled up through /scale before any metric is read.
    wait_replicas(&server, "low", "3");
    let describe = wait_output(
        "the rescale event",
        || server.kubectl_ok(&["describe", "hpa", "low"]),
        &["New size: 3; reason: Current number of replicas below Spec.MinReplicas"],
    );
    assert!(describe.contains("Crew/low"), "{describe}");

    // Above maxReplicas: scaled down.
    server.kubectl_ok(&["scale", "crew", "high", "--replicas=7"]);
    wait_replicas(&server, "high", "2");

    // Within bounds the metrics of the selected pods are asked for (there are none here); a
    // target without a selector cannot be measured at all.
    let c = wait_condition(
        &server,
        "high",
        "ScalingActive",
        "False",
        "FailedGetResourceMetric",
    );
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("no metrics returned from resource metrics API")),
        "{c:#}"
    );
    let c = wait_condition(
        &server,
        "blind",
        "ScalingActive",
        "False",
        "InvalidSelector",
    );
    assert_eq!(c["message"], "the HPA target's scale is missing a selector");
    assert_eq!(crew_replicas(&server, "blind"), "1");
    let table = server.kubectl_ok(&["get", "hpa", "high"]);
    assert!(table.contains("Crew/high"), "{table}");
}

/// Rules from each of Kubernetes' CEL libraries, as a CRD written for a real kube-apiserver has
/// them.
const TOOLKITS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: toolkits.example.org
spec:
  group: example.org
  scope: Namespaced
  names: {plural: toolkits, singular: toolkit, kind: Toolkit}
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
            properties:
              ports:
                type: array
                items: {type: integer}
                x-kubernetes-validations:
                - {rule: "self.isSorted()", message: must be sorted}
                - {rule: "self.indexOf(22) == -1", message: port 22 is reserved}
                - {rule: "self.sum() <= 100000", message: too many ports}
              version:
                type: string
                x-kubernetes-validations:
                - {rule: "self.find('^v[0-9]+') != ''", message: must start with v and a number}
                - {rule: "self.findAll('[0-9]+').size() <= 3", message: at most three numbers}
              home:
                type: string
                x-kubernetes-validations:
                - {rule: "isURL(self) && url(self).getScheme() == 'https'", message: must be an https URL}
                - {rule: "url(self).getHostname() != 'localhost'", message: must not be local}
              memory:
                type: string
                x-kubernetes-validations:
                - {rule: "isQuantity(self)", message: must be a quantity}
                - {rule: "quantity(self).isLessThan(quantity('1Gi'))", message: must be less than 1Gi}
              name:
                type: string
                x-kubernetes-validations:
                - rule: "!format.dns1123Label().validate(self).hasValue()"
                  messageExpression: "format.dns1123Label().validate(self).value().join(', ')"
              address:
                type: string
                x-kubernetes-validations:
                - {rule: "isIP(self) && ip(self).family() == 4", message: must be an IPv4 address}
                - {rule: "!ip(self).isLoopback()", message: must not be a loopback address}
              network:
                type: string
                x-kubernetes-validations:
                - {rule: "cidr(self).containsCIDR('10.0.0.0/16')", message: must contain 10.0.0.0/16}
                - {rule: "cidr(self) == cidr(self).masked()", message: must be a network address}
"#;

fn toolkit(spec: &str) -> String {
    format!("apiVersion: example.org/v1\nkind: Toolkit\nmetadata: {{name: kit}}\nspec: {spec}\n")
}

#[test]
fn rules_use_kubernetes_cel_libraries() {
    let server = ApiServer::start();
    apply(&server, TOOLKITS_CRD);
    established(&server, "toolkits.example.org");

    let valid = toolkit(
        "{ports: [80, 443], version: v1.2.3, home: 'https://example.com/docs?a=1', \
         memory: 512Mi, name: my-tool, address: 192.168.1.10, network: 10.0.0.0/8}",
    );
    apply(&server, &valid);
    let stored = get_json(&server, &["toolkit", "kit"]);
    assert_eq!(stored["spec"]["memory"], "512Mi", "{stored:#}");

    // Every library refuses its field, all in one 422 naming each path as Kubernetes does.
    let refused = |spec: &str| {
        let out = server.kubectl_stdin(&["create", "-f", "-", "-v=6"], &toolkit(spec));
        assert!(!out.status.success(), "accepted: {spec}");
        let t = text(&out);
        assert!(t.contains(" 422 Unprocessable Entity"), "no 422 in {t}");
        assert!(
            t.contains(r#"The Toolkit "kit" is invalid: "#),
            "not refused as invalid: {t}"
        );
        t
    };
    server.kubectl_ok(&["delete", "toolkit", "kit"]);
    let t = refused(
        "{ports: [443, 22], version: 1.2.3.4, home: 'http://example.com', \
         memory: 2Gi, name: My_Tool, address: '::1', network: 10.0.1.0/8}",
    );
    for want in [
        r#"spec.ports: Invalid value: "array": must be sorted"#,
        r#"spec.ports: Invalid value: "array": port 22 is reserved"#,
        r#"spec.version: Invalid value: "string": must start with v and a number"#,
        r#"spec.version: Invalid value: "string": at most three numbers"#,
        r#"spec.home: Invalid value: "string": must be an https URL"#,
        r#"spec.memory: Invalid value: "string": must be less than 1Gi"#,
        "spec.name: Invalid value: \"string\": a lowercase RFC 1123 label must consist of lower \
         case alphanumeric characters or '-', and must start and end with an alphanumeric \
         character (e.g. 'my-name',  or '123-abc', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        r#"spec.address: Invalid value: "string": must be an IPv4 address"#,
        r#"spec.address: Invalid value: "string": must not be a loopback address"#,
        r#"spec.network: Invalid value: "string": must be a network address"#,
    ] {
        assert!(t.contains(want), "no {want:?} in {t}");
    }
    for passed in [
        "too many ports",
        "must be a quantity",
        "must not be local",
        "must contain 10.0.0.0/16",
    ] {
        assert!(!t.contains(passed), "{passed:?} in {t}");
    }

    // A function that fails is an evaluation error, worded as Kubernetes words it.
    let t = refused("{ports: [], home: relative, memory: lots, address: 10.0.0.256}");
    for want in [
        r#"spec.home: Invalid value: "string": must be an https URL"#,
        r#"spec.home: Invalid value: "string": URL parse error during conversion from string: parse "relative": invalid URI for request evaluating rule: must not be local"#,
        r#"spec.memory: Invalid value: "string": must be a quantity"#,
        r#"spec.memory: Invalid value: "string": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' evaluating rule: must be less than 1Gi"#,
        r#"spec.address: Invalid value: "string": must be an IPv4 address"#,
        r#"spec.address: Invalid value: "string": IP Address "10.0.0.256" parse error during conversion from string: ParseAddr("10.0.0.256"): IPv4 field has value >255 evaluating rule: must not be a loopback address"#,
    ] {
        assert!(t.contains(want), "no {want:?} in {t}");
    }
    assert!(gone(&server.kubectl(&["get", "toolkit", "kit"])));
}
