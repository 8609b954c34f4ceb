//! OpenAPI v3 and server-side field validation, driven by the real kubectl against the API server
//! alone: kubectl finds the documents, validates through `fieldValidation=Strict`, and `explain`
//! prints the schemas.

mod common;

use common::*;
use serde_json::Value;

fn raw_json(server: &ApiServer, path: &str) -> Value {
    let out = server.kubectl_ok(&["get", "--raw", path]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

#[test]
fn documents_list_every_group_version_with_patch_operations_and_schemas() {
    let server = ApiServer::start();
    let index = raw_json(&server, "/openapi/v3");
    let paths = index["paths"].as_object().expect("paths");
    assert!(paths.contains_key("api/v1"), "{index}");
    assert!(paths.contains_key("apis/coordination.k8s.io/v1"), "{index}");
    for (gv, entry) in paths {
        let url = entry["serverRelativeURL"].as_str().expect("url");
        assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
        let doc = raw_json(&server, url);
        assert_eq!(doc["openapi"], "3.0.0", "{gv}");
        assert!(doc["components"]["schemas"].as_object().is_some(), "{gv}");
    }
    let core = raw_json(
        &server,
        paths["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap_or_default(),
    );
    let patch = &core["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "ConfigMap"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    assert!(
        patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_some()
    );
    let containers =
        &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
}

const BAD_CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: bad
  foo: 1
data:
  a: \"1\"
spec:
  x: 1
";

#[test]
fn create_and_apply_reject_unknown_fields_by_default() {
    let server = ApiServer::start();
    for verb in ["create", "apply"] {
        let out = server.kubectl_stdin(&[verb, "-f", "-"], BAD_CONFIGMAP);
        assert!(!out.status.success(), "{verb} accepted unknown fields");
        assert!(
            text(&out).contains(
                "Error from server (BadRequest): error when creating \"STDIN\": ConfigMap in version \"v1\" \
                 cannot be handled as a ConfigMap: strict decoding error: unknown field \"metadata.foo\", \
                 unknown field \"spec\""
            ),
            "{}",
            text(&out)
        );
    }
    // --validate=warn: created, the fields dropped, kubectl prints the server's warnings.
    let out = server.kubectl_stdin(&["apply", "--validate=warn", "-f", "-"], BAD_CONFIGMAP);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("Warning: unknown field \"metadata.foo\"")
            && said.contains("Warning: unknown field \"spec\""),
        "{said}"
    );
    let stored = server.kubectl_ok(&["get", "cm", "bad", "-o", "json"]);
    let stored: Value = serde_json::from_str(&stored).expect("json");
    assert!(stored.get("spec").is_none() && stored["metadata"].get("foo").is_none());
    assert_eq!(stored["data"]["a"], "1");

    // Updating through client-side apply reports the patch as invalid, as Kubernetes does.
    let more = format!("{BAD_CONFIGMAP}bogus: true\n");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &more);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("The request is invalid: patch: Invalid value: \"map[bogus:true")
            && text(&out).contains("strict decoding error: unknown field \"bogus\""),
        "{}",
        text(&out)
    );
    // --validate=false sends fieldValidation=Ignore.
    let out = server.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], &more);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Warning"), "{}", text(&out));
}

#[test]
fn duplicate_fields_are_rejected_or_warned_about() {
    let server = ApiServer::start();
    // kubectl re-encodes what `-f` reads, which loses duplicates; --raw sends the bytes as they are.
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup"},"data":{"a":"1","a":"2"}}"#;
    let url = "/api/v1/namespaces/default/configmaps?fieldValidation=";
    let out = server.kubectl_stdin(
        &["create", "--raw", &format!("{url}Strict"), "-f", "-"],
        body,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: \
             duplicate field \"metadata.name\", duplicate field \"data.a\""
        ),
        "{}",
        text(&out)
    );
    let out = server.kubectl_stdin(&["create", "--raw", &format!("{url}Warn"), "-f", "-"], body);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("duplicate field \"data.a\""),
        "{}",
        text(&out)
    );
    let data = server.kubectl_ok(&["get", "cm", "dup", "-o", "jsonpath={.data.a}"]);
    assert_eq!(data, "2");
}

#[test]
fn explain_prints_what_a_cluster_prints() {
    let server = ApiServer::start();
    let pod = server.kubectl_ok(&["explain", "pod"]);
    assert!(
        pod.starts_with("KIND:       Pod\nVERSION:    v1\n\nDESCRIPTION:\n    Pod is a collection of containers that can run on a host."),
        "{pod}"
    );
    assert!(
        pod.contains("  spec\t<PodSpec>\n    Specification of the desired behavior of the pod."),
        "{pod}"
    );
    assert!(pod.contains("  metadata\t<ObjectMeta>\n"), "{pod}");

    let containers = server.kubectl_ok(&["explain", "pod.spec.containers", "--recursive"]);
    assert!(
        containers.contains(
            "FIELD: containers <[]Container>\n\n\nDESCRIPTION:\n    List of containers belonging to the pod."
        ),
        "{containers}"
    );
    assert!(
        containers
            .contains("    A single application container that you want to run within a pod."),
        "{containers}"
    );
    assert!(
        containers
            .contains("  env\t<[]EnvVar>\n    name\t<string> -required-\n    value\t<string>\n"),
        "{containers}"
    );
    assert!(
        containers.contains("        name\t<string>\n        optional\t<boolean>\n"),
        "{containers}"
    );
    assert!(
        containers.contains("    limits\t<map[string]Quantity>"),
        "{containers}"
    );
    assert!(
        containers.contains("  name\t<string> -required-"),
        "{containers}"
    );

    // Enums come from k8s.io/api's `+enum` types, as on a real cluster.
    let pull = server.kubectl_ok(&["explain", "pod.spec.containers.imagePullPolicy"]);
    assert!(
        pull.contains(
            "FIELD: imagePullPolicy <string>\nENUM:\n    Always\n    IfNotPresent\n    Never\n"
        ),
        "{pull}"
    );
    assert!(
        pull.contains("    Possible enum values:\n     - `\"Always\"` means that kubelet always attempts to pull the latest image."),
        "{pull}"
    );
    assert!(
        containers.contains("  imagePullPolicy\t<string>\n  enum: Always, IfNotPresent, Never\n"),
        "{containers}"
    );

    let data = server.kubectl_ok(&["explain", "configmap.data"]);
    assert!(data.contains("FIELD: data <map[string]string>"), "{data}");

    // Other engineers add the workload kinds; once deployments are served, check them too.
    let resources = server.kubectl_ok(&["api-resources", "--api-group=apps", "-o", "name"]);
    if resources.lines().any(|l| l == "deployments.apps") {
        let strategy = server.kubectl_ok(&["explain", "deployment.spec.strategy"]);
        assert!(
            strategy.starts_with(
                "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: strategy <DeploymentStrategy>\n\n\n\
                 DESCRIPTION:\n    The deployment strategy to use to replace existing pods with new ones.\n    \
                 DeploymentStrategy describes how to replace existing pods with new ones."
            ),
            "{strategy}"
        );
        assert!(
            strategy.contains("  rollingUpdate\t<RollingUpdateDeployment>\n"),
            "{strategy}"
        );
        assert!(
            strategy.contains("  type\t<string>\n  enum: Recreate, RollingUpdate\n"),
            "{strategy}"
        );
    }
}
