//! kube-controller-manager's csrsigning controller: approved CertificateSigningRequests for the
//! `kubernetes.io/kube-apiserver-client` and `kubernetes.io/kube-apiserver-client-kubelet`
//! signers get a certificate from the cluster CA in `status.certificate`; a request the signer
//! cannot honour (wrong usages, a kubelet request that does not name a node) gets a Failed
//! condition with Kubernetes' reason and message. Requests for other signers are left for
//! whoever implements them, as Kubernetes leaves them. Run by the server node, the only
//! process holding the CA key.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use tracing::info;

use super::runtime::queue::WorkQueue;
use super::runtime::{Informer, ObjKey, is_not_found};
use crate::pki::{CertificateAuthority, CertificateRequest};

const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// kube-controller-manager's `--cluster-signing-duration` default: a year. A request's
/// expirationSeconds may only shorten it.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Twice the signer's backdate: the shortest certificate it issues.
const MIN_DURATION: Duration = Duration::from_secs(10 * 60);

/// The lifetime of the certificate for a request asking for `expiration_seconds`.
pub fn lifetime(expiration_seconds: Option<i32>) -> Duration {
    match expiration_seconds {
        None => MAX_DURATION,
        Some(s) => {
            Duration::from_secs(u64::try_from(s).unwrap_or(0)).clamp(MIN_DURATION, MAX_DURATION)
        }
    }
}

/// Whether the signer may issue what is asked: Err is the Failed condition's message.
pub fn check_request(
    signer: &str,
    request: &CertificateRequest,
    usages: &[String],
) -> Result<(), String> {
    match signer {
        KUBE_APISERVER_CLIENT => {
            let mut client_auth = false;
            for usage in usages {
                match usage.as_str() {
                    "digital signature" | "key encipherment" => {}
                    "client auth" => client_auth = true,
                    other => return Err(format!("invalid usage for client certificate: {other}")),
                }
            }
            if !client_auth {
                return Err("missing required usage for client certificate: client auth".into());
            }
            Ok(())
        }
        KUBE_APISERVER_CLIENT_KUBELET => {
            if request.organizations != ["system:nodes"] {
                return Err("subject organization is not system:nodes".into());
            }
            if !request.dns_names.is_empty() {
                return Err("DNS subjectAltNames are not allowed".into());
            }
            if !request.emails.is_empty() {
                return Err("Email subjectAltNames are not allowed".into());
            }
            if !request.ips.is_empty() {
                return Err("IP subjectAltNames are not allowed".into());
            }
            if !request.uris.is_empty() {
                return Err("URI subjectAltNames are not allowed".into());
            }
            if !request.common_name.starts_with("system:node:") {
                return Err("subject common name does not begin with system:node:".into());
            }
            let mut set: Vec<&str> = usages.iter().map(String::as_str).collect();
            set.sort_unstable();
            set.dedup();
            let with_rsa = ["client auth", "digital signature", "key encipherment"];
            let without_rsa = ["client auth", "digital signature"];
            if set != with_rsa && set != without_rsa {
                // Go prints the list with %v: no quotes, spaces between.
                return Err(format!("usages did not match [{}]", with_rsa.join(" ")));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// API times carry whole seconds.
fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

fn has_true(csr: &CertificateSigningRequest, ty: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == ty && c.status == "True"))
}

pub async fn run(client: kube::Client, ca: CertificateAuthority) -> Result<()> {
    let ca = Arc::new(ca);
    let requests = Informer::<CertificateSigningRequest>::new(client.clone());
    let queue = WorkQueue::<ObjKey>::new();
    {
        let queue = queue.clone();
        requests.add_handler(move |change| queue.add(ObjKey::of(change.object().as_ref())));
    }
    tokio::spawn(requests.clone().run());
    requests.wait_synced().await;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    queue
        .run_workers(2, "csrsigning", |key| {
            let requests = requests.clone();
            let api = api.clone();
            let ca = ca.clone();
            async move { sync(&requests, &api, &ca, &key.name).await }
        })
        .await;
    Ok(())
}

async fn sync(
    requests: &Informer<CertificateSigningRequest>,
    api: &Api<CertificateSigningRequest>,
    ca: &CertificateAuthority,
    name: &str,
) -> Result<()> {
    let Some(cached) = requests.get(&ObjKey::new("", name)) else {
        return Ok(());
    };
    let mut csr = (*cached).clone();
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let signer = csr.spec.signer_name.clone();
    if issued
        || !has_true(&csr, "Approved")
        || has_true(&csr, "Failed")
        || (signer != KUBE_APISERVER_CLIENT && signer != KUBE_APISERVER_CLIENT_KUBELET)
    {
        return Ok(());
    }
    // The API server checked the request on create; a request that no longer parses is not
    // something a retry fixes.
    let request = match crate::pki::parse_request(&csr.spec.request.0) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(
                csr = name,
                error = why,
                "unable to parse the approved request"
            );
            return Ok(());
        }
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let status = csr.status.get_or_insert_with(Default::default);
    match check_request(&signer, &request, &usages) {
        Err(message) => {
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(message.clone()),
                    last_update_time: Some(Time(now_seconds())),
                    last_transition_time: None,
                },
            );
            info!(csr = name, signer, reason = message, "refused to sign");
        }
        Ok(()) => {
            let pem = ca
                .sign_request(&request, &usages, lifetime(csr.spec.expiration_seconds))
                .with_context(|| format!("signing the certificate for CSR {name}"))?;
            status.certificate = Some(ByteString(pem.into_bytes()));
            info!(
                csr = name,
                signer,
                user = request.common_name,
                "issued a certificate"
            );
        }
    }
    match api.replace_status(name, &PostParams::default(), &csr).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("writing the status of CSR {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_capped_as_kubernetes_caps_them() {
        assert_eq!(lifetime(None), MAX_DURATION);
        assert_eq!(lifetime(Some(600)), Duration::from_secs(600));
        assert_eq!(lifetime(Some(3600)), Duration::from_secs(3600));
        assert_eq!(lifetime(Some(60)), MIN_DURATION);
        assert_eq!(lifetime(Some(i32::MAX)), MAX_DURATION);
    }

    fn request(subject: &str, org: Option<&str>) -> CertificateRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, subject);
        if let Some(org) = org {
            name.push(rcgen::DnType::OrganizationName, org);
        }
        params.distinguished_name = name;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        crate::pki::parse_request(pem.as_bytes()).unwrap()
    }

    fn usages(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn client_signer_takes_only_client_usages() {
        let jane = request("jane", Some("system:masters"));
        // Kubernetes' signer does not look at the groups: approving is the decision.
        assert_eq!(
            check_request(KUBE_APISERVER_CLIENT, &jane, &usages(&["client auth"])),
            Ok(())
        );
        assert_eq!(
            check_request(
                KUBE_APISERVER_CLIENT,
                &jane,
                &usages(&["digital signature", "server auth"])
            ),
            Err("invalid usage for client certificate: server auth".into())
        );
        assert_eq!(
            check_request(
                KUBE_APISERVER_CLIENT,
                &jane,
                &usages(&["digital signature"])
            ),
            Err("missing required usage for client certificate: client auth".into())
        );
    }

    #[test]
    fn kubelet_signer_takes_only_node_identities() {
        let node_usages = usages(&["digital signature", "client auth"]);
        let node = request("system:node:w1", Some("system:nodes"));
        assert_eq!(
            check_request(KUBE_APISERVER_CLIENT_KUBELET, &node, &node_usages),
            Ok(())
        );
        assert_eq!(
            check_request(
                KUBE_APISERVER_CLIENT_KUBELET,
                &request("jane", Some("system:nodes")),
                &node_usages
            ),
            Err("subject common name does not begin with system:node:".into())
        );
        assert_eq!(
            check_request(
                KUBE_APISERVER_CLIENT_KUBELET,
                &request("system:node:w1", None),
                &node_usages
            ),
            Err("subject organization is not system:nodes".into())
        );
        assert_eq!(
            check_request(
                KUBE_APISERVER_CLIENT_KUBELET,
                &node,
                &usages(&["client auth"])
            ),
            Err("usages did not match [client auth digital signature key encipherment]".into())
        );
    }
}
