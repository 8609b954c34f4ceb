//! OpenAPI v2 (/openapi/v2) with the real kubectl: client-side validation of kinds kubectl
//! validates from v2 (TokenReview), `kubectl explain` from v2 for a custom resource, and the
//! document itself (curl with the kubeconfig's client certificate) as JSON with ETag caching.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const TOKEN_REVIEW: &str =
    "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: not-a-token\n";

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab}
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
            description: What the CronTab runs.
            properties:
              schedule: {type: string, description: When it runs in cron syntax.}
"#;

/// curl with the kubeconfig's client certificate: kubectl cannot send If-None-Match.
struct Curl {
    server: String,
    dir: std::path::PathBuf,
}

impl Curl {
    fn new(api: &ApiServer) -> Self {
        let config: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(api.sandbox.kubeconfig()).expect("kubeconfig"),
        )
        .expect("kubeconfig is YAML");
        use base64::Engine as _;
        let field = |key: &str| {
            let b64 = config["users"][0]["user"][key].as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64")
        };
        let dir = api.sandbox.path().to_path_buf();
        std::fs::write(dir.join("v2-client.crt"), field("client-certificate-data")).unwrap();
        std::fs::write(dir.join("v2-client.key"), field("client-key-data")).unwrap();
        Curl {
            server: config["clusters"][0]["cluster"]["server"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            dir,
        }
    }

    /// (status code, headers, body) of a GET.
    fn get(&self, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
        let head = self.dir.join("v2-head.txt");
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-D"])
            .arg(&head)
            .arg("--cert")
            .arg(self.dir.join("v2-client.crt"))
            .arg("--key")
            .arg(self.dir.join("v2-client.key"));
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.server))
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl failed: {}", text(&out));
        let head = std::fs::read_to_string(head).expect("headers");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head}"));
        (code, head, out.stdout)
    }
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
        .unwrap_or_else(|| panic!("no {name} in {head}"))
        .trim()
        .to_string()
}

#[test]
fn kubectl_validates_token_reviews_from_openapi_v2() {
    let server = ApiServer::start();
    // Validation on (kubectl's default, strict): TokenReview has no PATCH operation, so kubectl
    // validates it client-side from the v2 document.
    let out = server.kubectl_stdin(&["create", "-f", "-", "-o", "json"], TOKEN_REVIEW);
    assert!(out.status.success(), "{}", text(&out));
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["kind"], "TokenReview");

    let bad = TOKEN_REVIEW.replace("  token:", "  bogus: 1\n  token:");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &bad);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains(r#"error validating data: ValidationError(TokenReview.spec): unknown field "bogus" in io.k8s.api.authentication.v1.TokenReviewSpec"#),
        "{t}"
    );
}

#[test]
fn openapi_v2_has_every_kind_and_custom_resources_with_etags() {
    let server = ApiServer::start();
    let curl = Curl::new(&server);
    let (code, head, body) = curl.get("/openapi/v2", &["Accept: application/json"]);
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-type"), "application/json");
    let etag = header(&head, "etag");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let pod = &doc["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod",
        "{pod}"
    );
    assert_eq!(
        pod["properties"]["spec"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );
    let containers = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
        "{patch}"
    );

    // Unchanged: 304 for the ETag the client holds.
    let (code, _, body) = curl.get(
        "/openapi/v2",
        &[
            "Accept: application/json",
            &format!("If-None-Match: {etag}"),
        ],
    );
    assert_eq!(code, 304, "etag {etag:?}");
    assert!(body.is_empty());

    // The protobuf form kubectl asks for.
    let (code, head, body) = curl.get(
        "/openapi/v2",
        &["Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf"],
    );
    assert_eq!(code, 200);
    assert_eq!(
        header(&head, "content-type"),
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    assert!(body.starts_with(b"\x0a\x032.0"), "not a v2 Document");

    // A new definition changes the document, and its schema is in it.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=30s",
    ]);
    wait_until(
        "the v2 document to change",
        std::time::Duration::from_secs(10),
        || {
            let (code, _, body) = curl.get(
                "/openapi/v2",
                &[
                    "Accept: application/json",
                    &format!("If-None-Match: {etag}"),
                ],
            );
            if code != 200 {
                return Err(format!("{code}"));
            }
            let doc: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let crontab = &doc["definitions"]["com.example.stable.v1.CronTab"];
            if crontab["properties"]["spec"]["properties"]["schedule"]["type"] == "string"
                && crontab["x-kubernetes-group-version-kind"][0]["kind"] == "CronTab"
            {
                Ok(())
            } else {
                Err(format!("no CronTab definition: {crontab}"))
            }
        },
    );

    // kubectl explain from v2 (and from v3, its default).
    let out = server.kubectl_ok(&["explain", "crontabs.spec", "--output=plaintext-openapiv2"]);
    for want in [
        "KIND:     CronTab",
        "What the CronTab runs.",
        "schedule\t<string>",
        "When it runs in cron syntax.",
    ] {
        assert!(out.contains(want), "no {want:?} in {out}");
    }
    let out = server.kubectl_ok(&["explain", "crontabs.spec"]);
    assert!(out.contains("When it runs in cron syntax."), "{out}");
}
