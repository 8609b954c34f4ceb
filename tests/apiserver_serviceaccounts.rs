//! Service account tokens through the real kubectl against the standalone API server:
//! `kubectl create token` issues a JWT the server accepts as a bearer token, a bogus or
//! orphaned one gets 401, and new pods get the projected kube-api-access volume.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn create_token(server: &ApiServer, args: &[&str]) -> String {
    let mut all = vec!["create", "token"];
    all.extend_from_slice(args);
    let token = server.kubectl_ok(&all).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    token
}

#[test]
fn created_tokens_authenticate_and_bogus_ones_do_not() {
    let server = ApiServer::start_with(&["--controllers"]);
    // The serviceaccount controller makes `default` in every namespace.
    wait_for(
        "the default service account",
        Duration::from_secs(30),
        || {
            server
                .kubectl(&["get", "serviceaccount", "default"])
                .status
                .success()
        },
    );
    let token = create_token(&server, &["default"]);
    // Authenticated is not authorized: the account holds nothing until a binding grants it.
    let out = kubectl_with_token(&server, &token, &["get", "pods"]);
    assert!(
        text(&out).contains(
            "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "get pods with an unbound token: {}",
        text(&out)
    );
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    let out = kubectl_with_token(&server, &token, &["get", "pods"]);
    assert!(
        out.status.success(),
        "get pods with the token: {}",
        text(&out)
    );

    let out = kubectl_with_token(&server, "not-a-token", &["get", "pods"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Unauthorized"),
        "a bogus token is refused: {}",
        text(&out)
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert!(
        !kubectl_with_token(&server, &forged, &["get", "pods"])
            .status
            .success()
    );

    let out = server.kubectl(&["create", "token", "nobody"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("serviceaccounts \"nobody\" not found"),
        "{}",
        text(&out)
    );
    let out = server.kubectl(&["create", "token", "default", "--duration", "1m"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("may not specify a duration less than 10 minutes"),
        "{}",
        text(&out)
    );

    // A token bound to a pod dies with the pod.
    server.kubectl_ok(&["run", "bound", "--image", "busybox"]);
    let bound = create_token(
        &server,
        &[
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "bound",
        ],
    );
    assert!(
        kubectl_with_token(&server, &bound, &["get", "pods"])
            .status
            .success()
    );
    server.kubectl_ok(&["delete", "pod", "bound", "--grace-period", "0", "--force"]);
    wait_for("the pod to go", Duration::from_secs(30), || {
        gone(&server.kubectl(&["get", "pod", "bound"]))
    });
    let out = kubectl_with_token(&server, &bound, &["get", "pods"]);
    assert!(
        text(&out).contains("Unauthorized"),
        "the bound pod is gone: {}",
        text(&out)
    );
    // The unbound token still works.
    assert!(
        kubectl_with_token(&server, &token, &["get", "pods"])
            .status
            .success()
    );
}

fn pod(server: &ApiServer, name: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", "pod", name, "-o", "json"]))
        .expect("kubectl printed JSON")
}

#[test]
fn pods_get_the_service_account_volume() {
    let server = ApiServer::start();
    server.kubectl_ok(&["run", "web", "--image", "busybox"]);
    let web = pod(&server, "web");
    assert_eq!(web["spec"]["serviceAccountName"], "default");
    let volume = &web["spec"]["volumes"][0];
    let name = volume["name"].as_str().unwrap_or_default();
    assert!(name.starts_with("kube-api-access-"), "{volume}");
    assert_eq!(name.len(), "kube-api-access-".len() + 5);
    let sources = &volume["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        web["spec"]["containers"][0]["volumeMounts"][0],
        serde_json::json!({"name": name, "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );

    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: quiet}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: c, image: busybox}]\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let quiet = pod(&server, "quiet");
    assert!(quiet["spec"].get("volumes").is_none(), "{}", quiet["spec"]);
    assert!(quiet["spec"]["containers"][0].get("volumeMounts").is_none());

    // Pods naming no pull secrets take their service account's; their own win.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: puller}\nimagePullSecrets: [{name: regcred}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: pulls}\nspec:\n  serviceAccountName: puller\n  containers: [{name: c, image: busybox}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: own}\nspec:\n  serviceAccountName: puller\n  imagePullSecrets: [{name: mine}]\n  containers: [{name: c, image: busybox}]\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        pod(&server, "pulls")["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "regcred"}])
    );
    assert_eq!(
        pod(&server, "own")["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "mine"}])
    );
}
