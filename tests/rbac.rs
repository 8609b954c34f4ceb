//! RBAC enforced, through the real kubectl against the API server: `--as` users forbidden in
//! Kubernetes' words until a binding grants them, `auth can-i` and `can-i --list`, bindings to
//! missing roles, ClusterRole aggregation with a custom resource's role, the escalation and bind
//! checks, impersonation checked by the `impersonate` verb (uid and extra included), and
//! service-account tokens limited to what their Role grants.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn refused_with(out: &Output, message: &str) {
    assert!(!out.status.success(), "must be refused: {}", text(out));
    assert!(
        text(out).contains(message),
        "want {message:?} in: {}",
        text(out)
    );
}

#[test]
fn users_are_forbidden_until_a_binding_grants_them() {
    let server = ApiServer::start();
    refused_with(
        &server.kubectl(&["get", "pods", "--as=jane"]),
        r#"Error from server (Forbidden): pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#,
    );
    refused_with(
        &server.kubectl(&["get", "nodes", "--as=jane"]),
        r#"nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at the cluster scope"#,
    );
    refused_with(
        &server.kubectl(&["get", "deployments.apps", "web", "--as=jane"]),
        r#"deployments.apps "web" is forbidden: User "jane" cannot get resource "deployments" in API group "apps" in the namespace "default""#,
    );
    refused_with(
        &server.kubectl(&["get", "--raw", "/metrics", "--as=jane"]),
        r#"forbidden: User "jane" cannot get path "/metrics""#,
    );
    // Discovery is everyone's (system:discovery is bound to system:authenticated).
    let apis = server.kubectl_ok(&["get", "--raw", "/apis", "--as=jane"]);
    assert!(apis.contains("APIGroupList"), "{apis}");
    assert_eq!(
        stdout(&server.kubectl(&["auth", "can-i", "list", "pods", "--as=jane"])).trim(),
        "no"
    );

    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    let out = server.kubectl(&["get", "pods", "--as=jane"]);
    assert!(
        out.status.success(),
        "view lets jane list pods: {}",
        text(&out)
    );
    assert_eq!(
        server
            .kubectl_ok(&["auth", "can-i", "list", "pods", "--as=jane"])
            .trim(),
        "yes"
    );
    // Only in the binding's namespace, and reading only.
    refused_with(
        &server.kubectl(&["get", "pods", "-n", "kube-system", "--as=jane"]),
        r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "kube-system""#,
    );
    refused_with(
        &server.kubectl(&["delete", "pod", "p", "--as=jane"]),
        r#"pods "p" is forbidden: User "jane" cannot delete resource "pods" in API group "" in the namespace "default""#,
    );
    refused_with(
        &server.kubectl(&["get", "secrets", "--as=jane"]),
        r#"secrets is forbidden: User "jane" cannot list resource "secrets" in API group "" in the namespace "default""#,
    );
    let no = server.kubectl(&["auth", "can-i", "create", "deployments", "--as=jane"]);
    assert_eq!(stdout(&no).trim(), "no", "{}", text(&no));
    assert_eq!(
        server
            .kubectl_ok(&[
                "auth",
                "can-i",
                "get",
                "pods",
                "--subresource=log",
                "--as=jane"
            ])
            .trim(),
        "yes"
    );

    // A group gets what its binding grants, through --as-group.
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "devs-nodes",
        "--clusterrole=system:node-proxier",
        "--group=devs",
    ]);
    refused_with(
        &server.kubectl(&["get", "nodes", "--as=bob"]),
        r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#,
    );
    let out = server.kubectl(&["get", "nodes", "--as=bob", "--as-group=devs"]);
    assert!(out.status.success(), "{}", text(&out));

    // The admin credentials are system:masters: everything.
    assert_eq!(
        server.kubectl_ok(&["auth", "can-i", "*", "*"]).trim(),
        "yes"
    );
}

#[test]
fn can_i_list_shows_the_rules_held() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "namespace", "team"]);
    server.kubectl_ok(&[
        "create",
        "role",
        "cm-reader",
        "-n",
        "team",
        "--verb=get,list",
        "--resource=configmaps",
        "--resource-name=settings",
    ]);
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-cm",
        "-n",
        "team",
        "--role=cm-reader",
        "--user=jane",
    ]);
    let list = server.kubectl_ok(&["auth", "can-i", "--list", "-n", "team", "--as=jane"]);
    let line = |needle: &str| {
        list.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line in:\n{list}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("configmaps "), "configmaps [] [settings] [get list]");
    assert_eq!(
        line("selfsubjectaccessreviews.authorization.k8s.io"),
        "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]"
    );
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["[/api/*]", "[]", "[get]"]),
        "{list}"
    );
    // Another namespace holds nothing of the role.
    let elsewhere = server.kubectl_ok(&["auth", "can-i", "--list", "-n", "default", "--as=jane"]);
    assert!(!elsewhere.contains("configmaps"), "{elsewhere}");
    let yes = |args: &[&str]| stdout(&server.kubectl(args)).trim().to_string();
    assert_eq!(
        yes(&[
            "auth",
            "can-i",
            "get",
            "configmap/settings",
            "-n",
            "team",
            "--as=jane"
        ]),
        "yes"
    );
    assert_eq!(
        yes(&[
            "auth",
            "can-i",
            "get",
            "configmap/other",
            "-n",
            "team",
            "--as=jane"
        ]),
        "no"
    );
}

#[test]
fn a_binding_to_a_missing_role_grants_nothing_and_is_no_error() {
    let server = ApiServer::start();
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "ghost",
        "--role=nothere",
        "--user=jane",
    ]);
    refused_with(
        &server.kubectl(&["get", "secrets", "--as=jane"]),
        r#"secrets is forbidden: User "jane" cannot list resource "secrets" in API group "" in the namespace "default": RBAC: role.rbac.authorization.k8s.io "nothere" not found"#,
    );
    let out = server.kubectl(&["auth", "can-i", "get", "secrets", "--as=jane"]);
    assert_eq!(
        stdout(&out).trim(),
        r#"no - RBAC: role.rbac.authorization.k8s.io "nothere" not found"#
    );
    // The role arriving later is enough.
    server.kubectl_ok(&[
        "create",
        "role",
        "nothere",
        "--verb=list",
        "--resource=secrets",
    ]);
    let out = server.kubectl(&["get", "secrets", "--as=jane"]);
    assert!(out.status.success(), "{}", text(&out));
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const GADGET_VIEWER: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: gadgets-view
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: [example.com]
  resources: [gadgets]
  verbs: [get, list, watch]
"#;

#[test]
fn view_aggregates_a_custom_resource_role() {
    let server = ApiServer::start();
    let out = server.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the CRD to be served", Duration::from_secs(30), || {
        server.kubectl(&["get", "gadgets"]).status.success()
    });
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    refused_with(
        &server.kubectl(&["get", "gadgets", "--as=jane"]),
        r#"gadgets.example.com is forbidden: User "jane" cannot list resource "gadgets" in API group "example.com" in the namespace "default""#,
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], GADGET_VIEWER);
    assert!(out.status.success(), "{}", text(&out));
    let rules_of = |role: &str| -> Value {
        serde_json::from_str::<Value>(&server.kubectl_ok(&[
            "get",
            "clusterrole",
            role,
            "-o",
            "json",
        ]))
        .expect("kubectl printed JSON")["rules"]
            .clone()
    };
    let has_gadgets = |rules: &Value| {
        rules.as_array().is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r["resources"] == serde_json::json!(["gadgets"]))
        })
    };
    // view, and through the chain edit and admin, pick the role up.
    for role in ["view", "edit", "admin"] {
        wait_for(
            &format!("{role} to aggregate gadgets-view"),
            Duration::from_secs(30),
            || has_gadgets(&rules_of(role)),
        );
    }
    let out = server.kubectl(&["get", "gadgets", "--as=jane"]);
    assert!(out.status.success(), "{}", text(&out));

    // Removing the label takes the rules away again.
    server.kubectl_ok(&[
        "label",
        "clusterrole",
        "gadgets-view",
        "rbac.authorization.k8s.io/aggregate-to-view-",
    ]);
    wait_for("view to drop gadgets-view", Duration::from_secs(30), || {
        !has_gadgets(&rules_of("view"))
    });
    refused_with(
        &server.kubectl(&["get", "gadgets", "--as=jane"]),
        r#"cannot list resource "gadgets" in API group "example.com""#,
    );
}

#[test]
fn nobody_grants_what_they_do_not_hold() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "namespace", "team"]);
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-admin",
        "-n",
        "team",
        "--clusterrole=admin",
        "--user=jane",
    ]);
    // What admin holds, jane may hand on.
    server.kubectl_ok(&[
        "create",
        "role",
        "pod-reader",
        "-n",
        "team",
        "--verb=get,list",
        "--resource=pods",
        "--as=jane",
    ]);
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "bob-reads",
        "-n",
        "team",
        "--role=pod-reader",
        "--user=bob",
        "--as=jane",
    ]);
    refused_with(
        &server.kubectl(&[
            "create",
            "role",
            "node-reader",
            "-n",
            "team",
            "--verb=get",
            "--resource=nodes",
            "--as=jane",
        ]),
        "roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"jane\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}",
    );
    refused_with(
        &server.kubectl(&[
            "create",
            "rolebinding",
            "jane-root",
            "-n",
            "team",
            "--clusterrole=cluster-admin",
            "--user=jane",
            "--as=jane",
        ]),
        "rolebindings.rbac.authorization.k8s.io \"jane-root\" is forbidden: user \"jane\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}",
    );
    // Neither refused write changed anything.
    assert!(gone(&server.kubectl(&[
        "get",
        "role",
        "node-reader",
        "-n",
        "team"
    ])));
    assert!(gone(&server.kubectl(&[
        "get",
        "rolebinding",
        "jane-root",
        "-n",
        "team"
    ])));
    // Nor may a role be widened by an update.
    let out = server.kubectl(&[
        "patch",
        "role",
        "pod-reader",
        "-n",
        "team",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["nodes"],"verbs":["list"]}}]"#,
        "--as=jane",
    ]);
    refused_with(
        &out,
        r#"{APIGroups:[""], Resources:["nodes"], Verbs:["list"]}"#,
    );

    // The escalate and bind verbs lift the checks.
    server.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: role-granter}\nrules:\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [roles]\n  verbs: [escalate]\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [clusterroles]\n  verbs: [bind]\n  resourceNames: [view]\n",
    );
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-granter",
        "-n",
        "team",
        "--clusterrole=role-granter",
        "--user=jane",
    ]);
    server.kubectl_ok(&[
        "create",
        "role",
        "node-reader",
        "-n",
        "team",
        "--verb=get",
        "--resource=nodes",
        "--as=jane",
    ]);
    refused_with(
        &server.kubectl(&[
            "create",
            "rolebinding",
            "bob-edit",
            "-n",
            "team",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "--as=jane",
        ]),
        "is attempting to grant RBAC permissions not currently held",
    );
}

#[test]
fn impersonation_needs_the_impersonate_verb() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let token = server
        .kubectl_ok(&["create", "token", "robot"])
        .trim()
        .to_string();
    // Raw requests: kubectl's discovery reports a refusal as "unknown", as it does against
    // kube-apiserver, so the answer is read where kubectl prints it.
    let pods = "/api/v1/namespaces/default/pods";
    refused_with(
        &kubectl_with_token(&server, &token, &["get", "--raw", pods, "--as=jane"]),
        r#"users "jane" is forbidden: User "system:serviceaccount:default:robot" cannot impersonate resource "users" in API group "" at the cluster scope"#,
    );
    server.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: jane-impersonator}\nrules:\n- apiGroups: [\"\"]\n  resources: [users]\n  verbs: [impersonate]\n  resourceNames: [jane]\n",
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "robot-impersonates",
        "--clusterrole=jane-impersonator",
        "--serviceaccount=default:robot",
    ]);
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    let out = kubectl_with_token(&server, &token, &["get", "pods", "--as=jane"]);
    assert!(out.status.success(), "{}", text(&out));
    let who = kubectl_with_token(
        &server,
        &token,
        &["auth", "can-i", "list", "pods", "--as=jane"],
    );
    assert_eq!(stdout(&who).trim(), "yes", "{}", text(&who));
    // Only jane, and no groups.
    refused_with(
        &kubectl_with_token(&server, &token, &["get", "--raw", pods, "--as=bob"]),
        r#"users "bob" is forbidden"#,
    );
    refused_with(
        &kubectl_with_token(
            &server,
            &token,
            &[
                "get",
                "--raw",
                pods,
                "--as=jane",
                "--as-group=system:masters",
            ],
        ),
        r#"groups "system:masters" is forbidden: User "system:serviceaccount:default:robot" cannot impersonate resource "groups" in API group "" at the cluster scope"#,
    );
}

/// A SelfSubjectReview POSTed with curl, the token and the given `Impersonate-*` headers:
/// (HTTP code, body).
fn self_subject_review(server: &ApiServer, token: &str, headers: &[&str]) -> (String, Value) {
    let ca = server.sandbox.path().join("data/pki/ca.crt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args([
            "-X",
            "POST",
            "--data",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
            &format!(
                "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                server.url.trim_end_matches('/')
            ),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run curl");
    assert!(out.status.success(), "curl failed: {}", text(&out));
    let all = stdout(&out);
    let (body, code) = all
        .trim_end()
        .rsplit_once('\n')
        .expect("curl's status line");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code.to_string(), body)
}

/// `Impersonate-Uid` and `Impersonate-Extra-<key>` need the `impersonate` verb on `uids` and
/// `userextras/<key>` (authentication.k8s.io), and the user then acts with them: `kubectl auth
/// whoami` and SelfSubjectReview show the uid and extra.
#[test]
fn impersonation_carries_uid_and_extra() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let token = server
        .kubectl_ok(&["create", "token", "robot"])
        .trim()
        .to_string();
    server.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: jane-impersonator}\nrules:\n- apiGroups: [\"\"]\n  resources: [users]\n  verbs: [impersonate]\n  resourceNames: [jane]\n",
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "robot-impersonates",
        "--clusterrole=jane-impersonator",
        "--serviceaccount=default:robot",
    ]);
    let whoami = |extra: &[&str]| {
        let mut args = vec!["auth", "whoami", "--as=jane"];
        args.extend_from_slice(extra);
        kubectl_with_token(&server, &token, &args)
    };
    let out = whoami(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stdout(&out).contains("UID"), "{}", text(&out));
    // kubectl's whoami reports any refusal in its own words: the raw request shows the server's.
    let raw_as = |uid: &str| {
        let uid = format!("--as-uid={uid}");
        kubectl_with_token(
            &server,
            &token,
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods",
                "--as=jane",
                &uid,
            ],
        )
    };
    refused_with(
        &raw_as("1234"),
        r#"uids.authentication.k8s.io "1234" is forbidden: User "system:serviceaccount:default:robot" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#,
    );
    let extra_headers = [
        "Impersonate-User: jane",
        "Impersonate-Extra-Scopes: view",
        "Impersonate-Extra-Scopes: edit",
        "Impersonate-Extra-acme.example%2Fproject: apollo",
    ];
    let (code, status) = self_subject_review(&server, &token, &extra_headers);
    assert_eq!(code, "403", "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains(r#"cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io""#)),
        "{status}"
    );

    server.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: jane-details}\nrules:\n- apiGroups: [authentication.k8s.io]\n  resources: [uids]\n  verbs: [impersonate]\n  resourceNames: [\"1234\"]\n- apiGroups: [authentication.k8s.io]\n  resources: [userextras/scopes]\n  verbs: [impersonate]\n  resourceNames: [view, edit]\n- apiGroups: [authentication.k8s.io]\n  resources: [userextras/acme.example/project]\n  verbs: [impersonate]\n",
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "robot-impersonates-details",
        "--clusterrole=jane-details",
        "--serviceaccount=default:robot",
    ]);
    let out = whoami(&["--as-uid=1234"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = stdout(&out);
    let uid_line = printed
        .lines()
        .find(|l| l.starts_with("UID"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(uid_line, ["UID", "1234"], "{}", text(&out));
    refused_with(
        &raw_as("5678"),
        r#"uids.authentication.k8s.io "5678" is forbidden"#,
    );

    let mut with_uid = extra_headers.to_vec();
    with_uid.push("Impersonate-Uid: 1234");
    let (code, review) = self_subject_review(&server, &token, &with_uid);
    assert_eq!(code, "201", "{review}");
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], "jane", "{review}");
    assert_eq!(user["uid"], "1234", "{review}");
    assert_eq!(
        user["groups"],
        serde_json::json!(["system:authenticated"]),
        "{review}"
    );
    assert_eq!(
        user["extra"],
        serde_json::json!({"acme.example/project": ["apollo"], "scopes": ["view", "edit"]}),
        "{review}"
    );
    // A value the role does not name is refused, and so is an extra without a user.
    let (code, status) = self_subject_review(
        &server,
        &token,
        &["Impersonate-User: jane", "Impersonate-Extra-Scopes: admin"],
    );
    assert_eq!(code, "403", "{status}");
    let (code, status) = self_subject_review(&server, &token, &["Impersonate-Extra-Scopes: view"]);
    assert_eq!(code, "500", "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("without impersonating a user")),
        "{status}"
    );
}

#[test]
fn service_account_tokens_get_only_their_role() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "serviceaccount", "app"]);
    let token = server
        .kubectl_ok(&["create", "token", "app"])
        .trim()
        .to_string();
    refused_with(
        &kubectl_with_token(&server, &token, &["get", "configmaps"]),
        r#"configmaps is forbidden: User "system:serviceaccount:default:app" cannot list resource "configmaps" in API group "" in the namespace "default""#,
    );
    server.kubectl_ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "app-cm",
        "--role=cm-reader",
        "--serviceaccount=default:app",
    ]);
    let out = kubectl_with_token(&server, &token, &["get", "configmaps"]);
    assert!(out.status.success(), "{}", text(&out));
    refused_with(
        &kubectl_with_token(&server, &token, &["get", "secrets"]),
        r#"User "system:serviceaccount:default:app" cannot list resource "secrets""#,
    );
    refused_with(
        &kubectl_with_token(&server, &token, &["create", "configmap", "x"]),
        r#"User "system:serviceaccount:default:app" cannot create resource "configmaps""#,
    );
    let out = kubectl_with_token(&server, &token, &["auth", "can-i", "--list"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["configmaps", "[]", "[]", "[get", "list]"]),
        "{}",
        text(&out)
    );
    // The whole account group may be bound too.
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "all-accounts-view",
        "--clusterrole=view",
        "--group=system:serviceaccounts",
    ]);
    let out = kubectl_with_token(&server, &token, &["get", "pods"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_default_roles_exist() {
    let server = ApiServer::start();
    let names = server.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:node",
        "system:node-proxier",
        "system:kube-scheduler",
        "system:volume-scheduler",
        "system:kube-controller-manager",
    ] {
        assert!(
            names
                .lines()
                .any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{role}")),
            "{role} missing from:\n{names}"
        );
    }
    let admin: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "cluster-admin",
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(admin["roleRef"]["name"], "cluster-admin");
    assert_eq!(admin["subjects"][0]["name"], "system:masters");
    assert_eq!(
        admin["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
        "true"
    );
}

/// Each built-in component authenticates as itself and holds only its roles: the scheduler
/// Kubernetes' `system:kube-scheduler` and `system:volume-scheduler`, the Ingress controller,
/// cluster DNS settings and host-port publisher their own `system:kcluster:<component>`.
#[test]
fn components_hold_only_their_own_roles() {
    let server = ApiServer::start();
    let can = |user: &str, args: &[&str]| -> String {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let who = format!("--as={user}");
        all.push(&who);
        let out = server.kubectl(&all);
        stdout(&out).trim().to_string()
    };
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "system:kube-scheduler",
            &["create", "pods", "--subresource=binding"],
            "yes",
        ),
        ("system:kube-scheduler", &["delete", "pods"], "yes"),
        (
            "system:kube-scheduler",
            &["patch", "pods", "--subresource=status"],
            "yes",
        ),
        (
            "system:kube-scheduler",
            &["update", "persistentvolumeclaims"],
            "yes",
        ),
        (
            "system:kube-scheduler",
            &["list", "storageclasses.storage.k8s.io"],
            "yes",
        ),
        ("system:kube-scheduler", &["delete", "nodes"], "no"),
        (
            "system:kube-scheduler",
            &["create", "deployments.apps"],
            "no",
        ),
        ("system:kube-scheduler", &["get", "secrets"], "no"),
        (
            "system:kcluster-ingress",
            &[
                "update",
                "ingresses.networking.k8s.io",
                "--subresource=status",
            ],
            "yes",
        ),
        ("system:kcluster-ingress", &["list", "secrets", "-A"], "yes"),
        (
            "system:kcluster-ingress",
            &["create", "ingressclasses.networking.k8s.io"],
            "yes",
        ),
        (
            "system:kcluster-ingress",
            &["update", "ingresses.networking.k8s.io"],
            "no",
        ),
        ("system:kcluster-ingress", &["delete", "pods"], "no"),
        (
            "system:kcluster-dns",
            &[
                "update",
                "endpointslices.discovery.k8s.io",
                "-n",
                "kube-system",
            ],
            "yes",
        ),
        (
            "system:kcluster-dns",
            &["delete", "services", "-n", "kube-system"],
            "no",
        ),
        (
            "system:kcluster-dns",
            &["get", "secrets", "-n", "kube-system"],
            "no",
        ),
        (
            "system:kcluster-ports",
            &["patch", "services", "--subresource=status"],
            "yes",
        ),
        ("system:kcluster-ports", &["get", "secrets"], "no"),
        // Kubernetes' own role for it: reads everything, writes almost nothing; the
        // controllers write as their own accounts.
        ("system:kube-controller-manager", &["create", "pods"], "no"),
        (
            "system:kube-controller-manager",
            &["list", "secrets", "-A"],
            "yes",
        ),
        (
            "system:kube-controller-manager",
            &[
                "create",
                "serviceaccounts",
                "--subresource=token",
                "-n",
                "kube-system",
            ],
            "yes",
        ),
        (
            "system:serviceaccount:kube-system:replicaset-controller",
            &["create", "pods"],
            "yes",
        ),
        (
            "system:serviceaccount:kube-system:replicaset-controller",
            &["delete", "nodes"],
            "no",
        ),
        (
            "system:serviceaccount:kube-system:deployment-controller",
            &["patch", "deployments.apps"],
            "no",
        ),
        (
            "system:serviceaccount:kube-system:generic-garbage-collector",
            &["delete", "configmaps", "-A"],
            "yes",
        ),
        (
            "system:serviceaccount:kube-system:node-controller",
            &["patch", "nodes", "--subresource=status"],
            "yes",
        ),
        (
            "system:kube-controller-manager",
            &["impersonate", "users"],
            "no",
        ),
        (
            "system:kube-controller-manager",
            &["escalate", "clusterroles.rbac.authorization.k8s.io"],
            "no",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(user, args, want)| {
            let got = can(user, args);
            (got != *want).then(|| format!("{user} {args:?}: {got:?}, want {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let names = server.kubectl_ok(&["get", "clusterrolebindings", "-o", "name"]);
    for binding in [
        "system:volume-scheduler",
        "system:kcluster:ingress",
        "system:kcluster:dns",
        "system:controller:replicaset-controller",
        "system:controller:ttl-after-finished-controller",
    ] {
        assert!(
            names
                .lines()
                .any(|l| l == format!("clusterrolebinding.rbac.authorization.k8s.io/{binding}")),
            "{binding} missing from:\n{names}"
        );
    }
}

/// kube-controller-manager's `--use-service-account-credentials`: each controller writes as its
/// own account in kube-system. A ValidatingAdmissionPolicy lets only the replicaset controller's
/// account create pods in one namespace and names whoever else tried: the admin is refused,
/// a ReplicaSet's pods are created, and a Job's pods are refused in the job controller's name.
#[test]
fn each_controller_writes_as_its_own_service_account() {
    let server = ApiServer::start_with(&["--controllers"]);
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "pods-from-replica-sets"},
        "spec": {"matchConstraints": {"resourceRules": [{"operations": ["CREATE"],
                    "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
                 "validations": [{
                    "expression": "request.userInfo.username == 'system:serviceaccount:kube-system:replicaset-controller' && 'system:serviceaccounts:kube-system' in request.userInfo.groups",
                    "messageExpression": "'pods here come from replica sets, not from ' + request.userInfo.username"}]}});
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "pods-from-replica-sets"},
        "spec": {"policyName": "pods-from-replica-sets", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"creators": "checked"}}}}});
    for obj in [policy, binding] {
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &obj.to_string());
        assert!(out.status.success(), "apply failed: {}", text(&out));
    }
    server.kubectl_ok(&["create", "namespace", "owned"]);
    server.kubectl_ok(&["label", "namespace", "owned", "creators=checked"]);
    wait_until(
        "the policy to refuse the admin",
        Duration::from_secs(10),
        || {
            let out = server.kubectl(&[
                "run",
                "direct",
                "-n",
                "owned",
                "--image=example/x:1",
                "--dry-run=server",
            ]);
            let t = text(&out);
            if !out.status.success()
                && t.contains("pods here come from replica sets, not from kubernetes-admin")
            {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    let rs = r#"{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "owned"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "example/x:1"}]}}}}"#;
    let out = server.kubectl_stdin(&["apply", "-f", "-"], rs);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    let wait_pods = |what: &str, timeout: u64, want: usize| {
        wait_until(what, Duration::from_secs(timeout), || {
            let names =
                server.kubectl_ok(&["get", "pods", "-n", "owned", "-l", "app=web", "-o", "name"]);
            if names.lines().count() == want {
                Ok(())
            } else {
                Err(names)
            }
        });
    };
    wait_pods("the replica set's two pods", 30, 2);
    // A deleted account takes its token with it; the controller gets both back (checked
    // every 30 s, the token file re-read within a minute) and goes on.
    let uid_of = || {
        let out = server.kubectl(&[
            "get",
            "serviceaccount",
            "-n",
            "kube-system",
            "replicaset-controller",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        stdout(&out).trim().to_string()
    };
    let first_uid = uid_of();
    assert!(!first_uid.is_empty(), "no account replicaset-controller");
    server.kubectl_ok(&[
        "delete",
        "serviceaccount",
        "-n",
        "kube-system",
        "replicaset-controller",
    ]);
    server.kubectl_ok(&["scale", "replicaset", "web", "-n", "owned", "--replicas=3"]);
    wait_pods(
        "the replica set's third pod, made with a new account",
        150,
        3,
    );
    let second_uid = uid_of();
    assert!(
        !second_uid.is_empty() && second_uid != first_uid,
        "the account was not made again: {first_uid:?} then {second_uid:?}"
    );
    let job = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": "owned"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "example/x:1"}]}}}}"#;
    let out = server.kubectl_stdin(&["apply", "-f", "-"], job);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    wait_until(
        "the job controller's refused create",
        Duration::from_secs(30),
        || {
            let events = server.kubectl_ok(&[
                "get",
                "events",
                "-n",
                "owned",
                "--field-selector",
                "involvedObject.name=once,reason=FailedCreate",
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            if events.contains("not from system:serviceaccount:kube-system:job-controller") {
                Ok(())
            } else {
                Err(events)
            }
        },
    );
    let accounts =
        server.kubectl_ok(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    for account in [
        "replicaset-controller",
        "job-controller",
        "generic-garbage-collector",
    ] {
        assert!(
            accounts
                .lines()
                .any(|l| l == format!("serviceaccount/{account}")),
            "{account} missing from:\n{accounts}"
        );
    }
    // The broad role every controller once shared is gone.
    let out = server.kubectl(&["get", "clusterrolebinding", "system:kcluster:controllers"]);
    refused_with(&out, "NotFound");
}

/// A pod of a real cluster reaching the API server through `kubernetes.default` with its
/// projected service-account token (this build's binary as the in-cluster client, as
/// client-go's InClusterConfig would): `path` answered, or the client's failure.
fn in_pod_get(
    cluster: &Cluster,
    pod: &str,
    account: &str,
    image: &str,
    path: &str,
) -> (String, String) {
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  serviceAccountName: {account}
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    imagePullPolicy: Never
    command: ["/kcluster-client", "node", "incluster-get", "{path}", "--by-name"]
    volumeMounts: [{{name: bin, mountPath: /kcluster-client}}]
  volumes:
  - {{name: bin, hostPath: {{path: /kcluster, type: File}}}}
"#
    );
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(out.status.success(), "{}", text(&out));
    let phase = cluster.wait_for(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(90),
        |s| s == "Succeeded" || s == "Failed",
    );
    (phase, cluster.kubectl_ok(&["logs", pod]))
}

#[test]
fn a_pods_token_reaches_only_what_its_role_grants() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let image = "kcluster-e2e/rbac:1";
    let _image = images::build_busybox_image(&sandbox, image, "");
    let name = unique_name("rbac");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(image);
    cluster.kubectl_ok(&["create", "serviceaccount", "reader"]);
    cluster.kubectl_ok(&["create", "configmap", "settings", "--from-literal=k=v"]);
    cluster.kubectl_ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "reader-cm",
        "--role=cm-reader",
        "--serviceaccount=default:reader",
    ]);

    let (phase, logs) = in_pod_get(
        &cluster,
        "reads-cm",
        "reader",
        image,
        "/api/v1/namespaces/default/configmaps/settings",
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains(r#""k":"v""#), "{logs}");

    let (phase, logs) = in_pod_get(
        &cluster,
        "reads-secrets",
        "reader",
        image,
        "/api/v1/namespaces/default/secrets",
    );
    assert_eq!(phase, "Failed", "{logs}");
    assert!(
        logs.contains(r#"secrets is forbidden: User \"system:serviceaccount:default:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""#)
            || logs.contains(r#"secrets is forbidden: User "system:serviceaccount:default:reader" cannot list resource "secrets" in API group "" in the namespace "default""#),
        "{logs}"
    );

    // The default account holds nothing but discovery.
    let (phase, logs) = in_pod_get(
        &cluster,
        "default-cm",
        "default",
        image,
        "/api/v1/namespaces/default/configmaps",
    );
    assert_eq!(phase, "Failed", "{logs}");
    assert!(logs.contains(r#"cannot list resource"#), "{logs}");
    let (phase, logs) = in_pod_get(&cluster, "default-api", "default", image, "/api");
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("APIVersions"), "{logs}");

    // The cluster's own components keep working under enforcement: nodes Ready, and the
    // server's log shows no request of theirs refused.
    let nodes = cluster.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert!(
        nodes
            .lines()
            .all(|l| l.split_whitespace().nth(1) == Some("Ready")),
        "{nodes}"
    );
    for container in docker_objects("container", &name) {
        let logs = text(&docker(&["logs", &container]));
        let refused: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("request forbidden") && l.contains("system:"))
            .filter(|l| !l.contains("system:serviceaccount:"))
            .collect();
        assert!(refused.is_empty(), "{container} was refused: {refused:#?}");
    }

    node_credentials_reach_only_their_pods_objects(&cluster, &sandbox, &name, image);
}

/// The Node authorizer and NodeRestriction with a node's own credentials (copied out of the
/// node container): a Secret a pod on the node refers to is readable, another is not; its own
/// Node is, other nodes and leases are not for writing; it creates no pods.
fn node_credentials_reach_only_their_pods_objects(
    cluster: &Cluster,
    sandbox: &Sandbox,
    name: &str,
    image: &str,
) {
    let node = format!("{name}-server-0");
    let dir = sandbox.path().join("node-pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    for file in ["ca.crt", "node.crt", "node.key"] {
        let out = docker(&[
            "cp",
            &format!("{node}:/etc/kcluster/pki/{file}"),
            &dir.join(file).display().to_string(),
        ]);
        assert!(out.status.success(), "docker cp {file}: {}", text(&out));
    }
    let server = cluster.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    // kubectl with the node's certificate and nothing else, `stdin` fed to it.
    let as_node_with = |args: &[&str], stdin: &str| -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg(format!("--server={}", server.trim()))
            .arg(format!(
                "--certificate-authority={}",
                dir.join("ca.crt").display()
            ))
            .arg(format!(
                "--client-certificate={}",
                dir.join("node.crt").display()
            ))
            .arg(format!("--client-key={}", dir.join("node.key").display()))
            .arg("--kubeconfig=/dev/null")
            .args(args)
            .env("HOME", sandbox.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write to kubectl");
        child.wait_with_output().expect("kubectl")
    };
    let as_node = |args: &[&str]| as_node_with(args, "");
    cluster.kubectl_ok(&["create", "secret", "generic", "used", "--from-literal=k=v"]);
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "unused",
        "--from-literal=k=v",
    ]);
    let pod = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "uses-secret"}},
            "spec": {{"containers": [{{"name": "c", "image": "{image}", "imagePullPolicy": "Never",
              "command": ["sleep", "3600"],
              "env": [{{"name": "K", "valueFrom": {{"secretKeyRef": {{"name": "used", "key": "k"}}}}}}]}}]}}}}"#
    );
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &pod);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the pod bound to the node", Duration::from_secs(60), || {
        stdout(&cluster.kubectl(&[
            "get",
            "pod",
            "uses-secret",
            "-o",
            "jsonpath={.spec.nodeName}",
        ])) == node
    });

    let out = as_node(&["get", "secret", "used", "-o", "jsonpath={.data.k}"]);
    assert!(out.status.success(), "its pod's secret: {}", text(&out));
    let out = as_node(&["get", "secret", "unused"]);
    let user = format!("system:node:{node}");
    assert!(
        !out.status.success()
            && text(&out).contains(&format!(
                r#"secrets "unused" is forbidden: User "{user}" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node '{node}' and this object"#
            )),
        "{}",
        text(&out)
    );
    let out = as_node(&["get", "secrets"]);
    assert!(
        !out.status.success()
            && text(&out).contains("can only read individual resources of this type"),
        "{}",
        text(&out)
    );
    let out = as_node(&["get", "node", &node]);
    assert!(out.status.success(), "its own Node: {}", text(&out));
    let out = as_node(&["label", "node", &node, "by-node=yes"]);
    assert!(out.status.success(), "its own Node: {}", text(&out));
    let other_node = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "impostor"}}"#;
    let out = as_node_with(&["create", "-f", "-"], other_node);
    assert!(
        !out.status.success()
            && text(&out).contains(&format!(
                r#"nodes "impostor" is forbidden: node "{node}" is not allowed to modify node "impostor""#
            )),
        "{}",
        text(&out)
    );
    let out = as_node(&[
        "-n",
        "kube-node-lease",
        "annotate",
        "lease",
        &node,
        "touched=yes",
    ]);
    assert!(out.status.success(), "its own Lease: {}", text(&out));
    let out = as_node(&["run", "sneaky", &format!("--image={image}")]);
    assert!(
        !out.status.success() && text(&out).contains("can only create mirror pods"),
        "{}",
        text(&out)
    );
}
