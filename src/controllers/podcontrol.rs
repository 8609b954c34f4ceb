//! What every pod-owning controller does to pods (kube's controller.PodControl and
//! ControllerRefManager): create one from a template with a controller reference and say so in
//! an event, delete one and say so, adopt a matching orphan, release one that stopped matching.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::runtime::events::{NORMAL, Recorder, WARNING};
use super::runtime::{error_message, is_conflict, is_not_found};

/// GetPodFromTemplate: the template's labels, annotations, finalizers and spec under a
/// generated name, owned by `owner`. `adjust` sets what is particular to this pod (an index).
pub async fn create<O: Resource<DynamicType = ()>>(
    client: &kube::Client,
    recorder: &Recorder,
    owner: &O,
    owner_ref: OwnerReference,
    template: &PodTemplateSpec,
    generate_name: String,
    adjust: impl FnOnce(&mut Pod),
) -> anyhow::Result<Pod> {
    let ns = owner.namespace().unwrap_or_default();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: Some(ns.clone()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_ref]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    adjust(&mut pod);
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &pod).await {
        Ok(created) => {
            recorder.event(
                owner,
                NORMAL,
                "SuccessfulCreate",
                "Create",
                format!("Created pod: {}", created.name_any()),
            );
            Ok(created)
        }
        Err(e) => {
            recorder.event(
                owner,
                WARNING,
                "FailedCreate",
                "Create",
                format!("Error creating: {}", error_message(&e)),
            );
            Err(anyhow::Error::new(e).context(format!(
                "cannot create a pod for {} {}",
                O::kind(&()),
                owner.name_any()
            )))
        }
    }
}

/// Deletes a pod (a pod already gone is fine).
pub async fn delete<O: Resource<DynamicType = ()>>(
    client: &kube::Client,
    recorder: &Recorder,
    owner: &O,
    pod: &Pod,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => {
            recorder.event(
                owner,
                NORMAL,
                "SuccessfulDelete",
                "Delete",
                format!("Deleted pod: {}", pod.name_any()),
            );
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => {
            recorder.event(
                owner,
                WARNING,
                "FailedDelete",
                "Delete",
                format!("Error deleting: {}", error_message(&e)),
            );
            Err(anyhow::Error::new(e).context(format!("cannot delete pod {}", pod.name_any())))
        }
    }
}

/// Adopts an orphan: our controller reference goes on (guarded by the pod's uid). False when the
/// pod changed or went meanwhile.
pub async fn adopt(
    client: &kube::Client,
    owner_ref: OwnerReference,
    pod: &Pod,
) -> anyhow::Result<bool> {
    let patch = json!({"metadata": {"ownerReferences": [owner_ref], "uid": pod.metadata.uid}});
    patch_owner(client, pod, &patch).await
}

/// Releases a pod that no longer matches: our reference comes off.
pub async fn release(client: &kube::Client, owner_uid: &str, pod: &Pod) -> anyhow::Result<()> {
    let patch = json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
        "uid": pod.metadata.uid,
    }});
    patch_owner(client, pod, &patch).await.map(|_| ())
}

async fn patch_owner(
    client: &kube::Client,
    pod: &Pod,
    patch: &serde_json::Value,
) -> anyhow::Result<bool> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(false),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot change the owner of pod {}", pod.name_any()))),
    }
}
