//! The workshop flow with nothing but openssl and kubectl against a real cluster: a key and a
//! CertificateSigningRequest for jane, `kubectl certificate approve`, the issued certificate in a
//! kubeconfig of her own, `kubectl auth whoami` answering as jane of devs. Also denial, a
//! malformed request, a request the signer refuses, TokenReview, and anonymous access.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const SIGNER: &str = "kubernetes.io/kube-apiserver-client";

fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let out = run(program, args, dir);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        text(&out)
    );
    stdout(&out)
}

/// A key and a PEM request for `subject`, made by openssl; returns the request's base64.
fn openssl_request(dir: &Path, name: &str, subject: &str) -> String {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    run_ok("openssl", &["genrsa", "-out", &key, "2048"], dir);
    run_ok(
        "openssl",
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
        dir,
    );
    let pem = std::fs::read(dir.join(&csr)).expect("the request openssl wrote");
    base64::engine::general_purpose::STANDARD.encode(pem)
}

fn csr_yaml(name: &str, request_b64: &str, usages: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request_b64}\n  signerName: {SIGNER}\n  usages: {usages}\n{extra_spec}"
    )
}

fn csr_json(cluster: &Cluster, name: &str) -> Value {
    let out = cluster.kubectl_ok(&["get", "csr", name, "-o", "json"]);
    serde_json::from_str(&out).expect("a CSR as JSON")
}

fn conditions(csr: &Value) -> Vec<(String, String)> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or_default().to_string(),
                        c["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `kubectl get csr NAME` row, split into columns.
fn csr_row(cluster: &Cluster, name: &str) -> Vec<String> {
    let out = cluster.kubectl_ok(&["get", "csr", name]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ],
        "{out}"
    );
    lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A GET with no credentials at all (curl: kubectl without credentials would prompt for a
/// password): the status code and the body.
fn anonymous(cluster: &Cluster, path: &str) -> (String, String) {
    let server = cluster.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}"])
        .arg(format!("{}{path}", server.trim()))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run curl");
    let body = stdout(&out);
    let (body, code) = body.rsplit_once('\n').unwrap_or_default();
    (code.to_string(), body.to_string())
}

#[test]
fn a_user_from_a_signing_request() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let cluster = Cluster::create(&sandbox, &unique_name("csr"), &[]);
    let dir = sandbox.path();

    // Anonymous clients see only the public-info paths.
    for path in ["/version", "/healthz", "/livez", "/readyz"] {
        let (code, body) = anonymous(&cluster, path);
        assert_eq!(code, "200", "anonymous {path}: {body}");
    }
    for path in ["/api", "/apis", "/api/v1/namespaces"] {
        let (code, body) = anonymous(&cluster, path);
        assert_eq!(code, "401", "anonymous {path}: {body}");
        let status: Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(status["reason"], "Unauthorized", "{body}");
    }

    // The admin is in system:masters and, like every authenticated user, system:authenticated.
    let whoami = cluster.kubectl_ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("kubernetes-admin")
            && whoami.contains("[system:masters system:authenticated]"),
        "{whoami}"
    );
    // Impersonating, whoami answers as the impersonated user, as Kubernetes does.
    let whoami = cluster.kubectl_ok(&["auth", "whoami", "--as=jane", "--as-group=devs"]);
    assert!(
        whoami
            .lines()
            .any(|l| l.starts_with("Username") && l.ends_with(" jane"))
            && whoami.contains("[devs system:authenticated]"),
        "{whoami}"
    );

    // Jane asks for a certificate; the requester recorded is whoever created the object, not
    // what the object claims.
    let request = openssl_request(dir, "jane", "/CN=jane/O=devs");
    let forged = "  expirationSeconds: 3600\n  username: mallory\n  groups: [system:masters]\n";
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &csr_yaml("jane", &request, "[client auth]", forged),
    );
    assert!(out.status.success(), "create the CSR: {}", text(&out));
    let csr = csr_json(&cluster, "jane");
    assert_eq!(csr["spec"]["username"], "kubernetes-admin", "{csr}");
    assert_eq!(
        csr["spec"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(
        csr_row(&cluster, "jane")[2..],
        [SIGNER, "kubernetes-admin", "60m", "Pending"]
    );

    // Bob's request is denied and never signed.
    let bob = openssl_request(dir, "bob", "/CN=bob/O=devs");
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &csr_yaml("bob", &bob, "[client auth]", ""),
    );
    assert!(out.status.success(), "create bob's CSR: {}", text(&out));
    let out = cluster.kubectl_ok(&["certificate", "deny", "bob"]);
    assert!(out.contains("denied"), "{out}");
    assert_eq!(
        conditions(&csr_json(&cluster, "bob")),
        [("Denied".to_string(), "KubectlDeny".to_string())]
    );

    // A request the signer cannot honour fails with Kubernetes' reason.
    let server_use = openssl_request(dir, "web", "/CN=web");
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &csr_yaml("web", &server_use, "[server auth]", ""),
    );
    assert!(out.status.success(), "create web's CSR: {}", text(&out));
    cluster.kubectl_ok(&["certificate", "approve", "web"]);

    let out = cluster.kubectl_ok(&["certificate", "approve", "jane"]);
    assert!(out.contains("approved"), "{out}");
    wait_for("jane's certificate", Duration::from_secs(30), || {
        csr_json(&cluster, "jane")
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty())
    });
    assert_eq!(csr_row(&cluster, "jane")[5], "Approved,Issued");
    wait_for("web's Failed condition", Duration::from_secs(30), || {
        conditions(&csr_json(&cluster, "web"))
            .iter()
            .any(|(t, _)| t == "Failed")
    });
    let web = csr_json(&cluster, "web");
    let failed = web["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed["reason"], "SignerValidationFailure", "{web}");
    assert_eq!(
        failed["message"],
        "invalid usage for client certificate: server auth"
    );
    assert!(web.pointer("/status/certificate").is_none(), "{web}");
    assert_eq!(csr_row(&cluster, "web")[5], "Approved,Failed");
    let bob = csr_json(&cluster, "bob");
    assert!(
        bob.pointer("/status/certificate").is_none(),
        "a denied request is never signed: {bob}"
    );
    assert_eq!(csr_row(&cluster, "bob")[5], "Denied");

    // An approved request cannot be denied any more.
    // kubectl refuses by itself.
    let out = cluster.kubectl(&["certificate", "deny", "jane"]);
    assert!(
        !out.status.success() && text(&out).contains("is already Approved"),
        "{}",
        text(&out)
    );
    // The server refuses too: the same update through /approval as kubectl would send it.
    let mut denied = csr_json(&cluster, "jane");
    denied["status"]["conditions"]
        .as_array_mut()
        .expect("jane's conditions")
        .push(
            serde_json::json!({"type": "Denied", "status": "True", "reason": "KubectlDeny",
            "message": "This CSR was denied by kubectl certificate deny."}),
        );
    std::fs::write(dir.join("deny.json"), denied.to_string()).expect("write the update");
    let out = cluster.kubectl(&[
        "replace",
        "--raw",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/jane/approval",
        "-f",
        &dir.join("deny.json").to_string_lossy(),
    ]);
    assert!(!out.status.success(), "deny after approve must fail");
    assert!(
        text(&out).contains(
            "status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
        ),
        "{}",
        text(&out)
    );

    // The certificate: jane of devs, for the hour she asked for.
    let cert = csr_json(&cluster, "jane")["status"]["certificate"]
        .as_str()
        .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
        .expect("a certificate")
        .expect("base64");
    std::fs::write(dir.join("jane.crt"), cert).expect("write jane.crt");
    let subject = run_ok(
        "openssl",
        &["x509", "-in", "jane.crt", "-noout", "-subject", "-enddate"],
        dir,
    );
    assert!(
        subject.contains("CN = jane") && subject.contains("O = devs"),
        "{subject}"
    );
    // Valid for more than 55 minutes from now, but not past the hour asked for.
    assert!(
        run(
            "openssl",
            &["x509", "-in", "jane.crt", "-noout", "-checkend", "3300"],
            dir
        )
        .status
        .success(),
        "the certificate ends too soon: {subject}"
    );
    assert!(
        !run(
            "openssl",
            &["x509", "-in", "jane.crt", "-noout", "-checkend", "3700"],
            dir
        )
        .status
        .success(),
        "the certificate outlives expirationSeconds: {subject}"
    );

    // Jane's own kubeconfig, as the workshop builds it.
    let admin_config = std::fs::read_to_string(sandbox.kubeconfig()).expect("the kubeconfig");
    std::fs::write(dir.join("jane-config"), admin_config).expect("write jane's kubeconfig");
    let cluster_name = cluster
        .kubectl_ok(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].name}",
        ])
        .trim()
        .to_string();
    let jane = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", "jane-config"];
        all.extend_from_slice(args);
        run("kubectl", &all, dir)
    };
    for args in [
        vec![
            "config",
            "set-credentials",
            "jane",
            "--client-certificate=jane.crt",
            "--client-key=jane.key",
            "--embed-certs=true",
        ],
        vec![
            "config",
            "set-context",
            "jane",
            "--cluster",
            cluster_name.as_str(),
            "--user",
            "jane",
        ],
        vec!["config", "use-context", "jane"],
    ] {
        let out = jane(&args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    }
    let out = jane(&["auth", "whoami"]);
    assert!(out.status.success(), "jane's whoami: {}", text(&out));
    let whoami = stdout(&out);
    let line = |key: &str| {
        whoami
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(line("Username"), "jane", "{whoami}");
    assert_eq!(line("Groups"), "[devs system:authenticated]", "{whoami}");

    // The rest of the workshop: jane may do nothing until a binding lets her read.
    let out = jane(&["get", "pods", "-n", "default"]);
    assert!(
        !out.status.success()
            && text(&out).contains(
                r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
            ),
        "jane may not list pods yet: {}",
        text(&out)
    );
    assert_eq!(
        stdout(&jane(&["auth", "can-i", "list", "pods"])).trim(),
        "no"
    );
    cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--group=devs",
        "-n",
        "default",
    ]);
    wait_for("jane allowed to list pods", Duration::from_secs(10), || {
        jane(&["get", "pods", "-n", "default"]).status.success()
    });
    assert_eq!(
        stdout(&jane(&["auth", "can-i", "list", "pods"])).trim(),
        "yes"
    );
    assert_eq!(
        stdout(&jane(&["auth", "can-i", "create", "pods"])).trim(),
        "no",
        "view grants no writes"
    );
    // Reading is not approving: approval needs `approve` on the signer.
    let carol = openssl_request(dir, "carol", "/CN=carol/O=devs");
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &csr_yaml("carol", &carol, "[client auth]", ""),
    );
    assert!(out.status.success(), "create carol's CSR: {}", text(&out));
    cluster.kubectl_ok(&[
        "create",
        "clusterrole",
        "csr-updater",
        "--verb=get,list,update",
        "--resource=certificatesigningrequests,certificatesigningrequests/approval",
    ]);
    cluster.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "jane-csr-updater",
        "--clusterrole=csr-updater",
        "--user=jane",
    ]);
    let refused = wait_output(
        "jane's approval refused for want of the signer",
        || text(&jane(&["certificate", "approve", "carol"])),
        &["is forbidden"],
    );
    assert!(
        refused.contains(&format!(
            r#"certificatesigningrequests.certificates.k8s.io "carol" is forbidden: user not permitted to approve requests with signerName "{SIGNER}""#
        )),
        "{refused}"
    );
    assert_eq!(csr_row(&cluster, "carol")[5], "Pending", "nothing changed");
    // `signers` is no served resource, so the role is written out (as Kubernetes' docs do).
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: client-approver}}\n\
             rules:\n- apiGroups: [certificates.k8s.io]\n  resources: [signers]\n  resourceNames: [{SIGNER}]\n  verbs: [approve]\n"
        ),
    );
    assert!(out.status.success(), "the approver role: {}", text(&out));
    cluster.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "jane-client-approver",
        "--clusterrole=client-approver",
        "--user=jane",
    ]);
    wait_output(
        "jane approving with the signer's approve verb",
        || text(&jane(&["certificate", "approve", "carol"])),
        &["approved"],
    );
    wait_for("carol's certificate", Duration::from_secs(30), || {
        csr_row(&cluster, "carol")[5] == "Approved,Issued"
    });

    // No signer hands out system:masters, whoever asks and whoever would approve.
    let masters = openssl_request(dir, "root", "/CN=root/O=system:masters");
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &csr_yaml("root", &masters, "[client auth]", ""),
    );
    assert!(
        !out.status.success()
            && text(&out).contains(&format!(
                r#"certificatesigningrequests.certificates.k8s.io "root" is forbidden: use of {SIGNER} signer with system:masters group is not allowed"#
            )),
        "{}",
        text(&out)
    );

    // A malformed request changes nothing and is refused in Kubernetes' words.
    let garbage = base64::engine::general_purpose::STANDARD.encode("not a request");
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &csr_yaml(
            "broken",
            &garbage,
            "[client auth]",
            "  expirationSeconds: 60\n",
        ),
    );
    assert!(!out.status.success(), "a malformed CSR must be refused");
    let message = text(&out);
    assert!(
        message.contains("The CertificateSigningRequest \"broken\" is invalid")
            && message.contains("spec.request: Invalid value: []byte{0x6e, 0x6f, 0x74")
            && message.contains("PEM block type must be CERTIFICATE REQUEST")
            && message.contains(
                "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)"
            ),
        "{message}"
    );
    assert!(gone(&cluster.kubectl(&["get", "csr", "broken"])));

    // TokenReview: a service account's token authenticates, garbage does not.
    wait_for(
        "the default service account",
        Duration::from_secs(30),
        || {
            cluster
                .kubectl(&["get", "serviceaccount", "default"])
                .status
                .success()
        },
    );
    let token = cluster.kubectl_ok(&["create", "token", "default"]);
    let review = |token: &str| -> Value {
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview", "spec": {"token": token}});
        // kubectl validates kinds without a PATCH operation against OpenAPI v2, which this
        // server does not serve.
        let out = cluster.kubectl_stdin(
            &["create", "--validate=false", "-f", "-", "-o", "json"],
            &body.to_string(),
        );
        assert!(out.status.success(), "create a TokenReview: {}", text(&out));
        serde_json::from_str(&stdout(&out)).expect("a TokenReview")
    };
    let resources = cluster.kubectl_ok(&["api-resources", "--api-group", "authentication.k8s.io"]);
    assert!(
        resources.contains("selfsubjectreviews") && resources.contains("tokenreviews"),
        "{resources}"
    );
    let resources = cluster.kubectl_ok(&["api-resources", "--api-group", "authorization.k8s.io"]);
    for review in [
        "localsubjectaccessreviews",
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
        "subjectaccessreviews",
    ] {
        assert!(resources.contains(review), "{review} listed:\n{resources}");
    }
    let good = review(token.trim());
    assert_eq!(good["status"]["authenticated"], true, "{good}");
    assert_eq!(
        good["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        good["status"]["user"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert!(
        good["status"]["user"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{good}"
    );
    assert_eq!(
        good["status"]["audiences"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    // The service account itself asks who it is: its uid comes from the token.
    let server = cluster.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = cluster.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .expect("the cluster CA");
    std::fs::write(dir.join("ca.crt"), ca).expect("write ca.crt");
    std::fs::write(dir.join("empty-config"), "apiVersion: v1\nkind: Config\n").expect("write");
    let whoami = run_ok(
        "kubectl",
        &[
            "--kubeconfig",
            "empty-config",
            "--server",
            server.trim(),
            "--certificate-authority",
            "ca.crt",
            "--token",
            token.trim(),
            "auth",
            "whoami",
        ],
        dir,
    );
    let uid = good["status"]["user"]["uid"].as_str().unwrap_or_default();
    assert!(
        whoami.contains("system:serviceaccount:default:default") && whoami.contains(uid),
        "{whoami}"
    );

    let bad = review("garbage");
    assert!(bad["status"].get("authenticated").is_none(), "{bad}");
    assert_eq!(bad["status"]["user"], serde_json::json!({}));
}
