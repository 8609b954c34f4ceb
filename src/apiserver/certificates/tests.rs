use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde_json::{Value, json};

use super::*;

const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

fn request_pem(cn: &str, org: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name.push(DnType::OrganizationName, org);
    params.distinguished_name = name;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn csr(pem: &str) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "jane"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                 "signerName": KUBE_APISERVER_CLIENT, "usages": ["client auth"]}})
}

fn messages(obj: &Value) -> Vec<String> {
    let mut errs = Errors::new();
    validate(obj, &mut errs);
    errs.0.iter().map(|e| e.message()).collect()
}

#[test]
fn a_signed_request_is_valid() {
    assert_eq!(
        messages(&csr(&request_pem("jane", "devs"))),
        Vec::<String>::new()
    );
}

#[test]
fn bad_requests_are_refused_in_kubernetes_words() {
    let mut obj = csr("hi");
    obj["spec"]["expirationSeconds"] = json!(599);
    obj["spec"]["usages"] = json!(["client auth", "flying", "client auth"]);
    obj["spec"]["signerName"] = json!("nodomain");
    let m = messages(&obj);
    assert_eq!(
        m[0],
        "spec.request: Invalid value: []byte{0x68, 0x69}: PEM block type must be CERTIFICATE REQUEST"
    );
    assert!(
        m[1].starts_with(
            "spec.usages[1]: Unsupported value: \"flying\": supported values: \"any\""
        ),
        "{m:?}"
    );
    assert_eq!(m[2], "spec.usages[2]: Duplicate value: \"client auth\"");
    assert_eq!(
        m[3],
        "spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form 'example.com/signer-name'"
    );
    assert_eq!(
        m[4],
        "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"
    );
}

#[test]
fn a_tampered_request_fails_its_signature_check() {
    let pem = request_pem("jane", "devs");
    let der = crate::pki::parse_request(pem.as_bytes());
    assert!(der.is_ok());
    // Flip one byte of the subject inside the DER: the signature no longer matches.
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let at = bytes.windows(4).position(|w| w == b"jane").unwrap();
    bytes[at] = b'J';
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    assert_eq!(
        crate::pki::parse_request(tampered.as_bytes()).unwrap_err(),
        "x509: ECDSA verification failure"
    );
}

#[test]
fn approved_and_denied_exclude_each_other_and_stay() {
    let mut obj = csr(&request_pem("jane", "devs"));
    obj["status"] = json!({"conditions": [
        {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
    assert_eq!(
        messages(&obj),
        vec![
            "status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
        ]
    );
    let old = json!({"status": {"conditions": [{"type": "Approved", "status": "True"}],
                                "certificate": "YQ=="}});
    let new = json!({"status": {"conditions": [], "certificate": "Yg=="}});
    let mut errs = Errors::new();
    validate_update(&old, &new, &mut errs);
    let m: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
    assert_eq!(
        m,
        vec![
            "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\"",
            "status.certificate: Forbidden: updates may not modify existing certificate content"
        ]
    );
}

#[test]
fn each_update_path_changes_only_its_part() {
    let old = json!({"spec": {"username": "jane"},
        "status": {"conditions": [{"type": "Approved", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z",
                                   "lastUpdateTime": "2026-01-01T00:00:00Z"}]}});
    // A signer cannot take the approval back, and its Failed condition gets times.
    let mut merged = old.clone();
    merged["status"] = json!({"certificate": "YQ==",
        "conditions": [{"type": "Failed", "status": "True"}]});
    prepare_subresource("status", &old, &mut merged);
    let types: Vec<&str> = merged["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Failed", "Approved"]);
    assert_eq!(merged["status"]["certificate"], "YQ==");
    assert!(merged["status"]["conditions"][0]["lastUpdateTime"].is_string());
    // An approver cannot write a certificate.
    let mut merged = old.clone();
    merged["status"] = json!({"certificate": "YQ==", "conditions": old["status"]["conditions"]});
    prepare_subresource("approval", &old, &mut merged);
    assert!(merged["status"].get("certificate").is_none());
    // The object itself keeps its spec.
    let mut new = json!({"spec": {"username": "mallory"}});
    prepare_update(&old, &mut new);
    assert_eq!(new["spec"]["username"], "jane");
}

#[test]
fn the_ca_signs_the_requested_subject() {
    let ca = crate::pki::CertificateAuthority::generate("kubernetes").unwrap();
    let pem = request_pem("jane", "devs");
    let request = crate::pki::parse_request(pem.as_bytes()).unwrap();
    assert_eq!(
        (
            request.common_name.as_str(),
            request.organizations.as_slice()
        ),
        ("jane", &["devs".to_string()][..])
    );
    let cert = ca
        .sign_request(
            &request,
            &["client auth".into()],
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    let x509 = pem.parse_x509().unwrap();
    let identity = crate::pki::identity_from_der(&pem.contents).unwrap();
    assert_eq!(identity.user, "jane");
    assert_eq!(identity.groups, ["devs"]);
    let lifetime = x509.validity().not_after.timestamp() - jiff::Timestamp::now().as_second();
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
}

#[test]
fn the_printer_shows_kubectl_columns() {
    let obj = json!({"spec": {"signerName": KUBE_APISERVER_CLIENT, "username": "kubernetes-admin",
                              "expirationSeconds": 86400},
                     "status": {"conditions": [{"type": "Approved", "status": "True"}],
                                "certificate": "YQ=="}});
    let row = cells(&obj, json!("jane"), json!("5s"));
    assert_eq!(
        row,
        vec![
            json!("jane"),
            json!("5s"),
            json!(KUBE_APISERVER_CLIENT),
            json!("kubernetes-admin"),
            json!("24h"),
            json!("Approved,Issued")
        ]
    );
}
