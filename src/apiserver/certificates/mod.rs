//! certificates.k8s.io/v1 CertificateSigningRequests as kube-apiserver keeps them: the request
//! is checked (PEM, signature), the requester's identity is written into the spec on create so
//! nobody can ask in another's name, and the three update paths each change only their part —
//! the object itself nothing but metadata, `/approval` the Approved/Denied conditions, `/status`
//! the certificate and the other conditions. Signing is the controllers' job
//! (`controllers::csrsigning`).

use base64::Engine as _;
use serde_json::{Value, json};

use super::kinds::field::{Bad, Errors, Path};
use super::kinds::names;

pub const GROUP: &str = "certificates.k8s.io";
pub const PLURAL: &str = "certificatesigningrequests";

const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// Every key usage Kubernetes knows, sorted as its NotSupported message lists them.
const USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// The conditions only `/approval` may add.
const APPROVAL_CONDITIONS: &[&str] = &["Approved", "Denied"];

/// `spec.request`'s bytes. JSON carries them base64-encoded; what cannot be decoded is refused
/// earlier, while decoding the body (`decode_error`).
pub fn request_bytes(obj: &Value) -> Vec<u8> {
    obj.pointer("/spec/request")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// Go's decoding error for a `[]byte` field that is not base64, if any.
pub fn decode_error(obj: &Value) -> Option<String> {
    for pointer in ["/spec/request", "/status/certificate"] {
        if let Some(s) = obj.pointer(pointer).and_then(Value::as_str)
            && let Err(e) = base64::engine::general_purpose::STANDARD.decode(s)
        {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _)
                | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                _ => s.len(),
            };
            return Some(format!("illegal base64 data at input byte {at}"));
        }
    }
    None
}

/// How Go's `%#v` prints a `[]byte`, which is how Kubernetes shows a bad `spec.request`.
fn go_bytes(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "[]byte(nil)".into();
    }
    let items: Vec<String> = bytes.iter().map(|b| format!("{b:#04x}")).collect();
    format!("[]byte{{{}}}", items.join(", "))
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn condition_type(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn count_of(obj: &Value, ty: &str) -> usize {
    conditions(obj)
        .iter()
        .filter(|c| condition_type(c) == ty)
        .count()
}

/// The create strategy: status starts empty and the spec names whoever asked.
pub fn prepare_create(obj: &mut Value) {
    obj["status"] = json!({});
    let spec = super::kinds::json::obj(obj, "spec");
    for owned in ["username", "uid", "groups", "extra"] {
        if let Some(map) = spec.as_object_mut() {
            map.remove(owned);
        }
    }
    if let Some(user) = super::authentication::requester() {
        spec["username"] = json!(user.username);
        if let Some(uid) = user.uid {
            spec["uid"] = json!(uid);
        }
        if !user.groups.is_empty() {
            spec["groups"] = json!(user.groups);
        }
        if !user.extra.is_empty() {
            spec["extra"] = json!(user.extra);
        }
    }
}

/// An update of the object itself changes only metadata: spec and status stay as stored.
pub fn prepare_update(old: &Value, new: &mut Value) {
    match old.get("spec") {
        Some(spec) => new["spec"] = spec.clone(),
        None => {
            if let Some(map) = new.as_object_mut() {
                map.remove("spec");
            }
        }
    }
}

/// `/status` and `/approval`: `merged` is the stored object with the incoming status. Status
/// writers (signers) cannot touch approval, approvers cannot touch the certificate.
pub fn prepare_subresource(subresource: &str, old: &Value, merged: &mut Value) {
    let mut status = merged.get("status").cloned().unwrap_or_else(|| json!({}));
    if !status.is_object() {
        status = json!({});
    }
    match subresource {
        "approval" => match old.pointer("/status/certificate") {
            Some(cert) => status["certificate"] = cert.clone(),
            None => {
                if let Some(map) = status.as_object_mut() {
                    map.remove("certificate");
                }
            }
        },
        _ => {
            let is_approval = |c: &Value| APPROVAL_CONDITIONS.contains(&condition_type(c));
            let mut kept: Vec<Value> = conditions(merged)
                .into_iter()
                .filter(|c| !is_approval(c))
                .collect();
            kept.extend(conditions(old).into_iter().filter(is_approval));
            if kept.is_empty() {
                if let Some(map) = status.as_object_mut() {
                    map.remove("conditions");
                }
            } else {
                status["conditions"] = Value::Array(kept);
            }
        }
    }
    merged["status"] = status;
    populate_condition_timestamps(old, merged);
}

/// Conditions written without times get now; a lastTransitionTime is kept from the stored
/// condition of the same type and status.
fn populate_condition_timestamps(old: &Value, new: &mut Value) {
    let now = super::object::now_rfc3339();
    let old_conditions = conditions(old);
    let Some(list) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in list.iter_mut() {
        let Some(map) = c.as_object_mut() else {
            continue;
        };
        let unset = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
        if unset(map.get("lastUpdateTime")) {
            map.insert("lastUpdateTime".into(), json!(now));
        }
        if unset(map.get("lastTransitionTime")) {
            let ty = map.get("type").cloned();
            let status = map.get("status").cloned();
            let inherited = old_conditions
                .iter()
                .find(|o| {
                    o.get("type") == ty.as_ref()
                        && o.get("status") == status.as_ref()
                        && !unset(o.get("lastTransitionTime"))
                })
                .and_then(|o| o.get("lastTransitionTime").cloned());
            map.insert(
                "lastTransitionTime".into(),
                inherited.unwrap_or_else(|| json!(now)),
            );
        }
    }
}

pub fn validate(obj: &Value, errs: &mut Errors) {
    let spec = Path::root("spec");
    let request = request_bytes(obj);
    if let Err(why) = crate::pki::parse_request(&request) {
        errs.invalid(&spec.child("request"), Bad::Raw(go_bytes(&request)), why);
    }
    let usages: Vec<&str> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().map(|v| v.as_str().unwrap_or_default()).collect())
        .unwrap_or_default();
    if usages.is_empty() {
        errs.required(&spec.child("usages"), "");
    }
    for (i, usage) in usages.iter().enumerate() {
        if !USAGES.contains(usage) {
            errs.not_supported(&spec.child("usages").index(i), usage, USAGES);
        }
    }
    for (i, usage) in usages.iter().enumerate() {
        if usages[..i].contains(usage) {
            errs.duplicate(&spec.child("usages").index(i), Bad::str(usage));
        }
    }
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if signer == LEGACY_UNKNOWN {
        errs.invalid(
            &spec.child("signerName"),
            Bad::str(signer),
            "the legacy signerName is not allowed via this API version",
        );
    } else {
        validate_signer_name(&spec.child("signerName"), signer, errs);
    }
    if let Some(seconds) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && seconds < 600
    {
        errs.invalid(
            &spec.child("expirationSeconds"),
            Bad::Int(seconds),
            "may not specify a duration less than 600 seconds (10 minutes)",
        );
    }
    validate_conditions(obj, errs);
    if let Some(cert) = obj.pointer("/status/certificate").and_then(Value::as_str)
        && let Err(why) = check_certificate(cert)
    {
        errs.invalid(
            &Path::root("status").child("certificate"),
            Bad::str("<certificate data>"),
            why,
        );
    }
}

fn validate_conditions(obj: &Value, errs: &mut Errors) {
    let path = Path::root("status").child("conditions");
    let mut seen: Vec<String> = Vec::new();
    let (mut approved, mut denied) = (false, false);
    for (i, c) in conditions(obj).iter().enumerate() {
        let ty = condition_type(c);
        if ty.is_empty() {
            errs.required(&path.index(i).child("type"), "");
        }
        let only_true = matches!(ty, "Approved" | "Denied" | "Failed");
        match c.get("status").and_then(Value::as_str).unwrap_or_default() {
            "" => errs.required(&path.index(i).child("status"), ""),
            "True" => {}
            s if only_true => errs.not_supported(&path.index(i).child("status"), s, &["True"]),
            "False" | "Unknown" => {}
            s => errs.not_supported(
                &path.index(i).child("status"),
                s,
                &["False", "True", "Unknown"],
            ),
        }
        let exclusive = "Approved and Denied conditions are mutually exclusive";
        match ty {
            "Approved" => {
                approved = true;
                if denied {
                    errs.invalid(&path.index(i).child("type"), Bad::str(ty), exclusive);
                }
            }
            "Denied" => {
                denied = true;
                if approved {
                    errs.invalid(&path.index(i).child("type"), Bad::str(ty), exclusive);
                }
            }
            _ => {}
        }
        if seen.iter().any(|s| s == ty) {
            errs.duplicate(&path.index(i).child("type"), Bad::str(ty));
        }
        seen.push(ty.to_string());
    }
}

/// `status.certificate`: one or more PEM CERTIFICATE blocks, each a parsable certificate.
fn check_certificate(b64: &str) -> Result<(), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    if bytes.is_empty() {
        return Ok(());
    }
    let mut blocks = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let Ok(pem) = pem else { break };
        if pem.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                pem.label
            ));
        }
        if pem.parse_x509().is_err() {
            return Err("x509: malformed certificate".into());
        }
        blocks += 1;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// `example.com/signer-name`: a domain of DNS labels with at least one dot, then a path of
/// DNS subdomains separated by dots.
fn validate_signer_name(path: &Path, signer: &str, errs: &mut Errors) {
    if signer.is_empty() {
        errs.required(path, "");
        return;
    }
    let segments: Vec<&str> = signer.split('/').collect();
    let [domain, name] = segments.as_slice() else {
        errs.invalid(
            path,
            Bad::str(signer),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
        return;
    };
    if domain.len() > 253 {
        errs.push(
            super::kinds::field::ErrorType::TooLong,
            path,
            Bad::None,
            "may not be more than 253 bytes",
        );
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for label in &labels {
        let problems = names::dns1123_label(label);
        if !problems.is_empty() {
            for p in problems {
                errs.invalid(
                    path,
                    Bad::str(domain),
                    format!("validating label {label:?}: {p}"),
                );
            }
            break;
        }
    }
    if labels.len() < 2 {
        errs.invalid(
            path,
            Bad::str(domain),
            "should be a domain with at least two segments separated by dots",
        );
    }
    for label in name.split('.') {
        let problems = names::dns1123_subdomain(label);
        if !problems.is_empty() {
            for p in problems {
                errs.invalid(
                    path,
                    Bad::str(name),
                    format!("validating label {label:?}: {p}"),
                );
            }
            break;
        }
    }
    if signer.len() > 253 + 253 + 63 + 1 + 1 {
        errs.push(
            super::kinds::field::ErrorType::TooLong,
            path,
            Bad::None,
            "may not be more than 571 bytes",
        );
    }
}

/// What no update may do: drop an Approved, Denied or Failed condition, or replace an issued
/// certificate.
pub fn validate_update(old: &Value, new: &Value, errs: &mut Errors) {
    let path = Path::root("status").child("conditions");
    for ty in ["Approved", "Denied", "Failed"] {
        if count_of(new, ty) < count_of(old, ty) {
            errs.forbidden(
                &path,
                format!("updates may not remove a condition of type {ty:?}"),
            );
        }
    }
    let cert = |o: &Value| {
        o.pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if !cert(old).is_empty() && cert(old) != cert(new) {
        errs.forbidden(
            &Path::root("status").child("certificate"),
            "updates may not modify existing certificate content",
        );
    }
}

/// kubectl's CONDITION column: Denied beats Approved beats Pending, then Failed and Issued.
fn condition_summary(obj: &Value) -> String {
    let has = |ty: &str| conditions(obj).iter().any(|c| condition_type(c) == ty);
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        out.push_str(",Issued");
    }
    out
}

/// NAME AGE SIGNERNAME REQUESTOR REQUESTEDDURATION CONDITION.
pub fn cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    let requestor = obj
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let duration = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map(super::table::cells::human_duration)
        .unwrap_or_else(|| "<none>".into());
    vec![
        name,
        age,
        signer.into(),
        requestor.into(),
        duration.into(),
        condition_summary(obj).into(),
    ]
}

#[cfg(test)]
mod tests;
