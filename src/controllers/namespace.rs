//! Namespace deletion, as kube-controller-manager's namespace controller does it: a Terminating
//! namespace has everything in it deleted through the API (every namespaced resource that
//! discovery lists), and once nothing is left its `kubernetes` finalizer is removed with
//! namespaces/finalize, which lets the API server delete it.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::json;
use tracing::{info, warn};

const PERIOD: Duration = Duration::from_secs(1);

pub async fn run(client: kube::Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    loop {
        if let Err(e) = pass(&client, &namespaces).await {
            warn!(error = format!("{e:#}"), "namespace controller pass failed");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

async fn pass(client: &kube::Client, namespaces: &Api<Namespace>) -> Result<()> {
    let terminating: Vec<Namespace> = namespaces
        .list(&ListParams::default())
        .await
        .context("cannot list namespaces")?
        .items
        .into_iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_some())
        .collect();
    if terminating.is_empty() {
        return Ok(());
    }
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("cannot discover resources")?;
    for ns in terminating {
        let Some(name) = ns.metadata.name.clone() else {
            continue;
        };
        let mut remaining = 0usize;
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                    continue;
                }
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &name, &resource);
                let items = api
                    .list(&ListParams::default())
                    .await
                    .with_context(|| format!("cannot list {} in {name}", resource.plural))?;
                if items.items.is_empty() {
                    continue;
                }
                remaining += items.items.len();
                if caps.supports_operation(verbs::DELETE_COLLECTION) {
                    api.delete_collection(&DeleteParams::background(), &ListParams::default())
                        .await
                        .with_context(|| format!("cannot delete {} in {name}", resource.plural))?;
                }
            }
        }
        if remaining == 0 {
            finalize(client, &name).await?;
            info!(namespace = %name, "namespace emptied and finalized");
        }
    }
    Ok(())
}

async fn finalize(client: &kube::Client, name: &str) -> Result<()> {
    let body = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {"finalizers": []}}),
    )?;
    let request = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .context("cannot build the finalize request")?;
    match client.request::<Namespace>(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot finalize namespace {name}")),
    }
}
