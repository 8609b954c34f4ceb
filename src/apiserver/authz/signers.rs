//! The certificates.k8s.io admission plugins that depend on who is asking, as kube-apiserver
//! runs them: CertificateApproval (adding an Approved or Denied condition needs the `approve`
//! verb on the request's signer), CertificateSigning (setting `status.certificate` needs
//! `sign`), and CertificateSubjectRestriction (no `system:masters` certificates from the
//! `kubernetes.io/kube-apiserver-client` signer, whoever asks). Signers are the resource
//! `signers` of group certificates.k8s.io, named by signerName or by `<domain>/*`.

use serde_json::Value;

use super::rbac::Index;
use super::{Attributes, MASTERS, REQUESTER, User, forbidden_status};
use crate::apiserver::certificates::{self, GROUP, PLURAL};
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::status::ApiError;
use crate::store::Store;

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

fn signer_name(csr: &Value) -> &str {
    csr.pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn name_of(csr: &Value) -> &str {
    csr.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The Approved and Denied conditions, which only approvers may add.
fn approval_conditions(csr: &Value) -> Vec<Value> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter(|c| {
                    matches!(
                        c.get("type").and_then(Value::as_str),
                        Some("Approved" | "Denied")
                    )
                })
                .map(|c| serde_json::json!({"type": c.get("type"), "status": c.get("status")}))
                .collect()
        })
        .unwrap_or_default()
}

fn certificate(csr: &Value) -> Option<&str> {
    csr.pointer("/status/certificate")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
}

/// Checks a create (`old` None) or update of a CertificateSigningRequest.
pub fn check(
    store: &Store,
    def: &ResourceDef,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    if (def.group, def.plural) != (GROUP, PLURAL) {
        return Ok(());
    }
    let Some(old) = old else {
        return restrict_subject(new);
    };
    // The server's own writes (the signing controller runs with its own credentials, so it
    // has a requester too) carry none only when made in-process.
    let Ok(user) = REQUESTER.try_with(User::clone) else {
        return Ok(());
    };
    let signer = signer_name(new);
    if approval_conditions(old) != approval_conditions(new)
        && !may(store, &user, "approve", signer)?
    {
        return Err(forbidden_status(
            GROUP,
            PLURAL,
            name_of(new),
            &format!("user not permitted to approve requests with signerName {signer:?}"),
        ));
    }
    if certificate(old) != certificate(new) && !may(store, &user, "sign", signer)? {
        return Err(forbidden_status(
            GROUP,
            PLURAL,
            name_of(new),
            &format!("user not permitted to sign requests with signerName {signer:?}"),
        ));
    }
    Ok(())
}

/// Whether `user` holds `verb` on the signer, by its name or its domain's wildcard.
fn may(store: &Store, user: &User, verb: &str, signer: &str) -> Result<bool, ApiError> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(true);
    }
    let index = Index::build(store)
        .map_err(|e| ApiError::internal(format!("cannot read RBAC objects: {e}")))?;
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    Ok(names.into_iter().any(|name| {
        let a = Attributes {
            user: user.name.clone(),
            groups: user.groups.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: GROUP.into(),
            api_version: "*".into(),
            resource: "signers".into(),
            name,
            ..Attributes::default()
        };
        index.evaluate(&a).allowed_by.is_some()
    }))
}

fn restrict_subject(csr: &Value) -> Result<(), ApiError> {
    if signer_name(csr) != CLIENT_SIGNER {
        return Ok(());
    }
    // A request that does not parse is refused by validation with its own message.
    let Ok(request) = crate::pki::parse_request(&certificates::request_bytes(csr)) else {
        return Ok(());
    };
    if request.organizations.iter().any(|o| o == MASTERS) {
        return Err(forbidden_status(
            GROUP,
            PLURAL,
            name_of(csr),
            &format!("use of {CLIENT_SIGNER} signer with {MASTERS} group is not allowed"),
        ));
    }
    Ok(())
}
