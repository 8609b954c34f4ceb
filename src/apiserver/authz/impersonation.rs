//! Impersonation (`kubectl --as`, `--as-group`): the `Impersonate-*` headers switch the user a
//! request acts as, each one allowed by the `impersonate` verb on users, groups,
//! serviceaccounts, uids or userextras, in the order Kubernetes' impersonation filter checks them.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::{AUTHENTICATED, Attributes, Authorizer, User};
use crate::apiserver::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// One thing asked to be impersonated: (kind, namespace, name, extra key).
struct Wanted {
    kind: &'static str,
    namespace: String,
    name: String,
    field_path: String,
}

impl Wanted {
    /// Go's %v of the ObjectReference Kubernetes builds for it.
    fn go_value(&self) -> String {
        let api_version = if matches!(self.kind, "UserExtra" | "UID") {
            "authentication.k8s.io/v1"
        } else {
            ""
        };
        format!(
            "{{{} {} {}  {}  {}}}",
            self.kind, self.namespace, self.name, api_version, self.field_path
        )
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// Kubernetes escapes extra keys with percent-encoding (header names cannot hold `/`).
fn unescape(key: &str) -> String {
    percent_decode(key).unwrap_or_else(|| key.to_string())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The user the request acts as: `requester` itself without impersonation headers.
pub fn impersonate(
    authz: &Authorizer,
    headers: &HeaderMap,
    requester: User,
) -> Result<User, ApiError> {
    let mut wanted = Vec::new();
    let user = headers
        .get(USER)
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty());
    if let Some(user) = user {
        match user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
        {
            Some((ns, name)) => wanted.push(Wanted {
                kind: "ServiceAccount",
                namespace: ns.to_string(),
                name: name.to_string(),
                field_path: String::new(),
            }),
            None => wanted.push(Wanted {
                kind: "User",
                namespace: String::new(),
                name: user.to_string(),
                field_path: String::new(),
            }),
        }
    }
    let groups_specified = headers.contains_key(GROUP);
    for group in values(headers, GROUP) {
        wanted.push(Wanted {
            kind: "Group",
            namespace: String::new(),
            name: group.to_string(),
            field_path: String::new(),
        });
    }
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX)
            && let Ok(value) = value.to_str()
        {
            wanted.push(Wanted {
                kind: "UserExtra",
                namespace: String::new(),
                name: value.to_string(),
                field_path: unescape(key),
            });
        }
    }
    if let Some(uid) = headers
        .get(UID)
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty())
    {
        wanted.push(Wanted {
            kind: "UID",
            namespace: String::new(),
            name: uid.to_string(),
            field_path: String::new(),
        });
    }
    if wanted.is_empty() {
        return Ok(requester);
    }
    if user.is_none() {
        let list: Vec<String> = wanted.iter().map(Wanted::go_value).collect();
        return Err(ApiError::internal(format!(
            "requested [{}] without impersonating a user",
            list.join(" ")
        )));
    }
    let mut name = String::new();
    let mut groups: Vec<String> = Vec::new();
    let mut uid = None;
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in &wanted {
        let mut a = Attributes {
            user: requester.name.clone(),
            groups: requester.groups.clone(),
            verb: "impersonate".into(),
            resource_request: true,
            api_version: "v1".into(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            ..Attributes::default()
        };
        match w.kind {
            "ServiceAccount" => {
                a.resource = "serviceaccounts".into();
                name = format!("system:serviceaccount:{}:{}", w.namespace, w.name);
                if !groups_specified {
                    groups = vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{}", w.namespace),
                    ];
                }
            }
            "User" => {
                a.resource = "users".into();
                name = w.name.clone();
            }
            "Group" => {
                a.resource = "groups".into();
                groups.push(w.name.clone());
            }
            "UserExtra" => {
                a.api_group = "authentication.k8s.io".into();
                a.resource = "userextras".into();
                a.subresource = w.field_path.clone();
                extra
                    .entry(w.field_path.clone())
                    .or_default()
                    .push(w.name.clone());
            }
            _ => {
                a.api_group = "authentication.k8s.io".into();
                a.resource = "uids".into();
                uid = Some(w.name.clone());
            }
        }
        authz.check(&a)?;
    }
    if name == "system:anonymous" {
        if !groups.iter().any(|g| g == "system:unauthenticated") {
            groups.push("system:unauthenticated".into());
        }
    } else if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    Ok(User {
        name,
        groups,
        uid,
        extra,
    })
}
