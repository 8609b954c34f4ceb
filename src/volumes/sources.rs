//! The files of the API-backed volumes (configMap, secret, downwardAPI, projected): each
//! source read from the API server and turned into a payload for the atomic writer.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Node, Pod, Secret, ServiceAccount,
    ServiceAccountTokenProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};

use super::VolumeContext;
use super::atomic::{FileProjection, Payload};
use super::downward;

pub const DEFAULT_MODE: i32 = 0o644;
/// Tokens are fetched again once this share of their lifetime has passed, as kubelet does.
const TOKEN_REFRESH_SHARE: f64 = 0.8;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

fn api_error(kind: &str, name: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!("{kind} \"{name}\" not found"),
        other => format!("cannot read {kind} \"{name}\": {other}"),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn mode_of(mode: Option<i32>, default_mode: i32) -> u32 {
    (mode.unwrap_or(default_mode) & 0o7777) as u32
}

/// Keys → files: every key when `items` is empty, else just the listed ones.
fn project_keys(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    missing_key: impl Fn(&str) -> String,
    payload: &mut Payload,
) -> Result<(), String> {
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, value) in data {
                payload.insert(
                    key.clone(),
                    FileProjection {
                        data: value.clone(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        payload.insert(
                            item.path.clone(),
                            FileProjection {
                                data: value.clone(),
                                mode: mode_of(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => return Err(missing_key(&item.key)),
                }
            }
        }
    }
    Ok(())
}

pub async fn config_map(
    ctx: &VolumeContext,
    namespace: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    payload: &mut Payload,
) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let cm = match api.get(name).await {
        Ok(cm) => cm,
        Err(e) if optional && is_not_found(&e) => return Ok(()),
        Err(e) => return Err(api_error("configmap", name, e)),
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        data.insert(k, v.0);
    }
    project_keys(
        &data,
        items,
        default_mode,
        optional,
        |k| format!("configmap references non-existent config key: {k}"),
        payload,
    )
}

pub async fn secret(
    ctx: &VolumeContext,
    namespace: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    payload: &mut Payload,
) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = match api.get(name).await {
        Ok(s) => s,
        Err(e) if optional && is_not_found(&e) => return Ok(()),
        Err(e) => return Err(api_error("secret", name, e)),
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    project_keys(
        &data,
        items,
        default_mode,
        optional,
        |k| format!("references non-existent secret key: {k}"),
        payload,
    )
}

pub async fn node_allocatable(ctx: &VolumeContext) -> BTreeMap<String, Quantity> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api.get(&ctx.node_name).await {
        Ok(node) => node.status.and_then(|s| s.allocatable).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(node = %ctx.node_name, error = %e, "cannot read the node's allocatable resources for the downward API");
            BTreeMap::new()
        }
    }
}

pub async fn downward_api(
    ctx: &VolumeContext,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    payload: &mut Payload,
) -> Result<(), String> {
    let mut allocatable = None;
    for item in items {
        let text = if let Some(field) = &item.field_ref {
            downward::field_value(pod, field)?
        } else if let Some(resource) = &item.resource_field_ref {
            if allocatable.is_none() {
                allocatable = Some(node_allocatable(ctx).await);
            }
            downward::resource_value(
                pod,
                resource,
                allocatable.as_ref().unwrap_or(&BTreeMap::new()),
            )?
        } else {
            continue;
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: text.into_bytes(),
                mode: mode_of(item.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// (issued at, expires) of a JWT, read without verifying it: only to decide when to renew.
fn token_times(token: &[u8]) -> Option<(i64, i64)> {
    let text = std::str::from_utf8(token).ok()?;
    let claims = text.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((v.get("iat")?.as_i64()?, v.get("exp")?.as_i64()?))
}

fn still_fresh(token: &[u8], now: i64) -> bool {
    match token_times(token) {
        Some((iat, exp)) if exp > iat => {
            now < iat + ((exp - iat) as f64 * TOKEN_REFRESH_SHARE) as i64
        }
        _ => false,
    }
}

/// A service account token bound to the pod, reusing the one already in the volume while it is
/// fresh.
pub async fn service_account_token(
    ctx: &VolumeContext,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
    volume_dir: &Path,
    mode: i32,
    payload: &mut Payload,
) -> Result<(), String> {
    let existing = std::fs::read(
        volume_dir
            .join(super::atomic::DATA_DIR)
            .join(&projection.path),
    );
    if let Ok(token) = &existing
        && still_fresh(token, jiff::Timestamp::now().as_second())
    {
        payload.insert(
            projection.path.clone(),
            FileProjection {
                data: token.clone(),
                mode: mode_of(None, mode),
            },
        );
        return Ok(());
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: Some(
                projection
                    .expiration_seconds
                    .unwrap_or(DEFAULT_TOKEN_SECONDS),
            ),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let issued = api
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                format!("failed to fetch token: serviceaccounts \"{account}\" not found")
            }
            other => format!("failed to fetch token: {other}"),
        })?;
    let token = issued
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "failed to fetch token: the API server returned no token".to_string())?;
    payload.insert(
        projection.path.clone(),
        FileProjection {
            data: token.into_bytes(),
            mode: mode_of(None, mode),
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ])
    }

    #[test]
    fn keys_project_with_items_and_modes() {
        let mut all = Payload::new();
        project_keys(&data(), None, 0o600, false, |k| k.into(), &mut all).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["a"].mode, 0o600);

        let items = vec![KeyToPath {
            key: "b".into(),
            path: "dir/bee".into(),
            mode: Some(0o400),
        }];
        let mut some = Payload::new();
        project_keys(&data(), Some(&items), 0o644, false, |k| k.into(), &mut some).unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), vec!["dir/bee"]);
        assert_eq!(some["dir/bee"].data, b"2");
        assert_eq!(some["dir/bee"].mode, 0o400);

        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "z".into(),
            mode: None,
        }];
        let err = project_keys(
            &data(),
            Some(&missing),
            0o644,
            false,
            |k| format!("configmap references non-existent config key: {k}"),
            &mut Payload::new(),
        )
        .unwrap_err();
        assert_eq!(err, "configmap references non-existent config key: zz");
        // Optional: a missing key is skipped.
        let mut p = Payload::new();
        project_keys(&data(), Some(&missing), 0o644, true, |k| k.into(), &mut p).unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn tokens_renew_after_most_of_their_life() {
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"iat":1000,"exp":2000}"#);
        let token = format!("h.{claims}.s");
        assert!(still_fresh(token.as_bytes(), 1500));
        assert!(!still_fresh(token.as_bytes(), 1850));
        assert!(!still_fresh(b"garbage", 0));
    }
}
