//! Who is asking, as authentication.k8s.io/v1 tells it: the user a request carries through
//! the handlers (Kubernetes keeps it in the request context; here a task-local of the request's
//! task), SelfSubjectReview (`kubectl auth whoami`) and TokenReview (what in-cluster proxies
//! such as kube-rbac-proxy ask about the bearer tokens they receive).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use super::serviceaccount;
use super::status::ApiError;
use crate::pki::ClientIdentity;
use crate::store::Store;

pub const GROUP: &str = "authentication.k8s.io";
/// Every authenticated user is in this group, whatever proved who they are.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Kubernetes' user.Info: what SelfSubjectReview, TokenReview and a CSR's spec show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn from_identity(identity: &ClientIdentity) -> Self {
        UserInfo {
            username: identity.user.clone(),
            uid: None,
            groups: identity.groups.clone(),
            extra: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut user = json!({"username": self.username});
        if let Some(uid) = &self.uid {
            user["uid"] = json!(uid);
        }
        if !self.groups.is_empty() {
            user["groups"] = json!(self.groups);
        }
        if !self.extra.is_empty() {
            user["extra"] = json!(self.extra);
        }
        user
    }
}

/// What a request proved: its identity and, for a service account, the token, whose claims
/// (uid, pod) are read only when something asks for the full user — most requests never do.
#[derive(Clone)]
pub struct Credentials {
    pub identity: ClientIdentity,
    pub token: Option<String>,
    pub signer: Option<Arc<serviceaccount::Signer>>,
}

tokio::task_local! {
    static REQUESTER: Credentials;
}

/// `identity` with the group every authenticated user has, as Kubernetes' authenticators add it.
pub fn authenticated(identity: &ClientIdentity) -> ClientIdentity {
    let mut identity = identity.clone();
    if !identity.groups.iter().any(|g| g == AUTHENTICATED) {
        identity.groups.push(AUTHENTICATED.to_string());
    }
    identity
}

/// Runs a request's handling with its user known to whatever needs it (a CSR's create strategy).
pub async fn serve_as<F: Future>(credentials: Option<Credentials>, handling: F) -> F::Output {
    match credentials {
        Some(credentials) => REQUESTER.scope(credentials, handling).await,
        None => handling.await,
    }
}

/// The user of the request being handled, if any: the impersonated one when the request
/// impersonates (as Kubernetes' SelfSubjectReview and a CSR's requester show it).
pub fn requester() -> Option<UserInfo> {
    let authenticated = REQUESTER
        .try_with(|c| user_of(&c.identity, c.token.as_deref(), c.signer.as_deref()))
        .ok();
    match super::authz::REQUESTER.try_with(super::authz::User::clone) {
        Ok(acting)
            if acting.uid.is_some()
                || !acting.extra.is_empty()
                || authenticated
                    .as_ref()
                    .is_none_or(|a| a.username != acting.name || a.groups != acting.groups) =>
        {
            Some(UserInfo {
                username: acting.name,
                uid: acting.uid,
                groups: acting.groups,
                extra: acting.extra,
            })
        }
        _ => authenticated,
    }
}

/// The full user of a request: a client certificate's CN and O, or a service-account token's
/// account with its uid and, for a bound token, the pod it was issued for.
pub fn user_of(
    identity: &ClientIdentity,
    token: Option<&str>,
    signer: Option<&serviceaccount::Signer>,
) -> UserInfo {
    let mut user = UserInfo::from_identity(identity);
    if let (Some(token), Some(signer)) = (token, signer)
        && let Ok(claims) = signer.verify(token, jiff::Timestamp::now().as_second())
        && identity.user.starts_with("system:serviceaccount:")
    {
        add_token_claims(&mut user, &claims);
    }
    user
}

/// What Kubernetes' service-account authenticator reads from a verified token besides the name.
fn add_token_claims(user: &mut UserInfo, claims: &Value) {
    let private = claims.get("kubernetes.io").cloned().unwrap_or_default();
    if let Some(uid) = private
        .pointer("/serviceaccount/uid")
        .and_then(Value::as_str)
    {
        user.uid = Some(uid.to_string());
    }
    let mut extra = |key: &str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            user.extra.insert(
                format!("authentication.kubernetes.io/{key}"),
                vec![v.into()],
            );
        }
    };
    extra(
        "pod-name",
        private.pointer("/pod/name").and_then(Value::as_str),
    );
    extra(
        "pod-uid",
        private.pointer("/pod/uid").and_then(Value::as_str),
    );
    extra(
        "node-name",
        private.pointer("/node/name").and_then(Value::as_str),
    );
    extra(
        "node-uid",
        private.pointer("/node/uid").and_then(Value::as_str),
    );
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .map(|j| format!("JTI={j}"));
    extra("credential-id", jti.as_deref());
}

/// Whether `path` is one of this group's review endpoints.
pub fn owns(path: &str) -> Option<&'static str> {
    match path.trim_end_matches('/') {
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some("SelfSubjectReview"),
        "/apis/authentication.k8s.io/v1/tokenreviews" => Some("TokenReview"),
        _ => None,
    }
}

/// A review is created and answered, never stored: only POST.
pub fn check_method(kind: &str, method: &Method) -> Result<(), ApiError> {
    if method == Method::POST {
        return Ok(());
    }
    let plural = format!("{}s", kind.to_lowercase());
    Err(ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({plural}.{GROUP})"
    )))
}

/// Checks that the body is the kind the endpoint takes.
fn decode_review(kind: &str, content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    let review = super::handlers::decode(content_type, body)?;
    let given_kind = review.get("kind").and_then(Value::as_str).unwrap_or(kind);
    let given_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("authentication.k8s.io/v1");
    if given_kind != kind || given_version != "authentication.k8s.io/v1" {
        return Err(ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (expected {kind} of authentication.k8s.io/v1, got {given_kind} of {given_version})"
        )));
    }
    Ok(review)
}

/// POST selfsubjectreviews: the asking user, as the server sees them.
pub fn self_subject_review(
    user: &UserInfo,
    content_type: &str,
    body: &Bytes,
) -> Result<Value, ApiError> {
    if !body.is_empty() {
        decode_review("SelfSubjectReview", content_type, body)?;
    }
    Ok(json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": super::object::now_rfc3339()},
        "status": {"userInfo": user.to_json()},
    }))
}

/// POST tokenreviews: whether `spec.token` authenticates here, and as whom. Only
/// service-account tokens are bearer credentials on this server.
pub fn token_review(
    store: &Store,
    signer: Option<&serviceaccount::Signer>,
    content_type: &str,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let mut review = decode_review("TokenReview", content_type, body)?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let wanted = crate::apiserver::kinds::json::strings(
        review.get("spec").unwrap_or(&Value::Null),
        "audiences",
    );
    // The tokens this server signs are for its own audience only.
    let ours = serviceaccount::jwt::ISSUER.to_string();
    let status = match signer.map(|s| serviceaccount::authenticate(store, s, &token)) {
        Some(Ok(identity)) if wanted.is_empty() || wanted.contains(&ours) => {
            let user = user_of(&identity, Some(&token), signer);
            json!({"authenticated": true, "user": user.to_json(), "audiences": [ours]})
        }
        Some(Ok(_)) => json!({"user": {},
            "error": format!("token audiences [{ours:?}] is invalid for the target audiences {wanted:?}")}),
        // A token that is not one of ours is simply not authenticated, as Kubernetes answers
        // for a token no authenticator recognises.
        _ => json!({"user": {}}),
    };
    review["kind"] = json!("TokenReview");
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    let meta = super::kinds::json::obj(&mut review, "metadata");
    meta["creationTimestamp"] = json!(super::object::now_rfc3339());
    review["status"] = status;
    Ok(review)
}

#[cfg(test)]
mod tests;
