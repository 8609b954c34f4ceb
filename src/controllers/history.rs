//! ControllerRevisions, the history DaemonSets and StatefulSets keep of their pod templates
//! (kube's controller/history): each revision's data is the patch that puts its template back
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`, what `kubectl rollout undo` applies), its
//! labels are the template's plus `controller-revision-hash`, and it is owned by its controller.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::deployment::util::equal_ignore_hash;
use super::runtime::{Informer, controller_of, is_conflict, is_not_found};

pub const HASH_LABEL: &str = "controller-revision-hash";

/// The template as Go serializes it: an unset creationTimestamp is written as null, so the
/// data matches what kubectl computes when it compares a revision with the live object.
fn template_value(template: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(map) = v.as_object_mut() {
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
    v
}

/// The revision data for a template.
pub fn data_for(template: &PodTemplateSpec) -> Value {
    let mut t = template_value(template);
    if let Some(map) = t.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
pub fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(map) = t.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Whether a revision holds this template.
pub fn matches(cr: &ControllerRevision, template: &PodTemplateSpec) -> bool {
    template_of(cr).is_some_and(|t| equal_ignore_hash(&t, template))
}

/// Revisions whose controller is the object with `uid`, oldest revision first.
pub fn owned(
    revisions: &Informer<ControllerRevision>,
    namespace: &str,
    uid: &str,
) -> Vec<Arc<ControllerRevision>> {
    let mut owned: Vec<Arc<ControllerRevision>> = revisions
        .list_namespace(namespace)
        .into_iter()
        .filter(|cr| controller_of(&cr.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    owned.sort_by_key(|cr| {
        (
            cr.revision,
            cr.metadata.creation_timestamp.clone().map(|t| t.0),
        )
    });
    owned
}

pub fn max_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|cr| cr.revision).max().unwrap_or(0)
}

/// What a new revision is made of.
pub struct NewRevision<'a> {
    pub namespace: &'a str,
    pub name: String,
    pub hash: &'a str,
    pub owner: OwnerReference,
    pub template: &'a PodTemplateSpec,
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    pub revision: i64,
}

/// Outcome of creating a revision: made, or a different revision already holds the name (a
/// hash collision: the caller bumps its collisionCount and tries again).
pub enum Created {
    Made,
    Collision,
}

pub async fn create(client: &kube::Client, new: NewRevision<'_>) -> Result<Created> {
    let mut labels = new
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), new.hash.into());
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: Some(new.namespace.into()),
            labels: Some(labels),
            annotations: new.annotations,
            owner_references: Some(vec![new.owner.clone()]),
            ..Default::default()
        },
        data: Some(RawExtension(data_for(new.template))),
        revision: new.revision,
    };
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), new.namespace);
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => Ok(Created::Made),
        Err(e) if is_conflict(&e) => {
            // It exists: ours with the same template is as good as new (an informer lagging
            // behind our own write); anything else is a collision.
            let existing = api
                .get_opt(&new.name)
                .await
                .with_context(|| format!("cannot read controller revision {}", new.name))?;
            match existing {
                Some(cr)
                    if matches(&cr, new.template)
                        && controller_of(&cr.metadata).is_some_and(|r| r.uid == new.owner.uid) =>
                {
                    Ok(Created::Made)
                }
                _ => Ok(Created::Collision),
            }
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot create controller revision {}", new.name))),
    }
}

/// Makes an older revision the newest again (a rollback to its template).
pub async fn set_revision(
    client: &kube::Client,
    cr: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision> {
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &cr.namespace().unwrap_or_default());
    let mut updated = cr.clone();
    updated.revision = revision;
    api.replace(&cr.name_any(), &PostParams::default(), &updated)
        .await
        .with_context(|| format!("cannot update controller revision {}", cr.name_any()))
}

/// Deletes the oldest revisions beyond `limit` that no live pod uses and that are not `current`.
pub async fn clean_up(
    client: &kube::Client,
    revisions: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    current: &str,
    limit: i32,
) -> Result<()> {
    let candidates: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|cr| cr.name_any() != current)
        .filter(|cr| {
            let hash = cr.labels().get(HASH_LABEL).cloned().unwrap_or_default();
            !live.contains(&hash) && !live.contains(&cr.name_any())
        })
        .collect();
    let excess = candidates.len().saturating_sub(limit.max(0) as usize);
    for cr in candidates.into_iter().take(excess) {
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), &cr.namespace().unwrap_or_default());
        match api.delete(&cr.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot delete controller revision {}",
                    cr.name_any()
                )));
            }
        }
    }
    Ok(())
}

/// kube's HashControllerRevision: FNV-32 (not 1a) over the data, then the collision count in
/// decimal, safe-encoded.
pub fn hash_data(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 2_166_136_261;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(16_777_619);
            h ^= *b as u32;
        }
    };
    feed(data.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    super::deployment::util::safe_encode(&h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn revision_data_round_trips_and_replaces_the_template() {
        let t = template("a:1");
        let data = data_for(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert!(data["spec"]["template"]["metadata"]["creationTimestamp"].is_null());
        let cr = ControllerRevision {
            data: Some(RawExtension(data.clone())),
            ..Default::default()
        };
        assert!(matches(&cr, &t));
        assert!(!matches(&cr, &template("a:2")));
        assert_ne!(hash_data(&data, None), hash_data(&data, Some(1)));
        assert_eq!(hash_data(&data, None), hash_data(&data_for(&t), None));
    }
}
