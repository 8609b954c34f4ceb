//! The garbage collector, as kube-controller-manager's: a graph of every object's
//! ownerReferences, built from a watch of every deletable kind that discovery lists, and three
//! jobs on it.
//! - An object whose owners are all gone is deleted (Background deletion of dependents): a
//!   deleted Deployment takes its ReplicaSets, and they their pods.
//! - An owner deleted with propagationPolicy Foreground (finalizer foregroundDeletion) has its
//!   dependents deleted first; the finalizer goes, and the owner with it, once no dependent with
//!   blockOwnerDeletion remains.
//! - An owner deleted with Orphan (finalizer orphan) has its ownerReference removed from every
//!   dependent, then the finalizer.
//!
//! Owners are always checked with a live GET before anything is deleted, as Kubernetes does, so a
//! watch that lags never makes the collector delete what still has an owner.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tracing::{debug, info, warn};

use super::runtime::queue::WorkQueue;
use super::runtime::{api_code, is_not_found};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
const WORKERS: usize = 8;
const REDISCOVER: Duration = Duration::from_secs(30);
/// Kinds the collector never watches: events are many, short-lived and never owners.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

/// One object in the graph (or a "virtual" one: an owner named by a reference, not yet seen).
struct Node {
    kind: Option<Kind>,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    dependents: HashSet<String>,
    deleting: bool,
    deleting_dependents: bool,
    virtual_: bool,
    /// For a virtual node: how its dependents refer to it.
    reference: Option<OwnerReference>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// Owners known not to exist (uid), so late dependents are collected without a GET.
    absent: HashSet<String>,
}

pub struct GarbageCollector {
    client: kube::Client,
    graph: Mutex<Graph>,
    kinds: Mutex<HashMap<(String, String), Kind>>,
    watched: Mutex<HashSet<(String, String)>>,
    attempt_to_delete: Arc<WorkQueue<String>>,
    attempt_to_orphan: Arc<WorkQueue<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

impl GarbageCollector {
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(GarbageCollector {
            client,
            graph: Mutex::new(Graph::default()),
            kinds: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashSet::new()),
            attempt_to_delete: WorkQueue::new(),
            attempt_to_orphan: WorkQueue::new(),
        })
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        let discoverer = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = discoverer.discover().await {
                    warn!(
                        error = format!("{e:#}"),
                        "garbage collector discovery failed"
                    );
                }
                tokio::time::sleep(REDISCOVER).await;
            }
        });
        info!("garbage collector started");
        let deleters = (0..WORKERS).map(|_| {
            let this = self.clone();
            async move {
                loop {
                    let uid = this.attempt_to_delete.get().await;
                    match this.attempt_to_delete_item(&uid).await {
                        Ok(()) => this.attempt_to_delete.forget(&uid),
                        Err(e) => {
                            debug!(uid, error = format!("{e:#}"), "garbage collection retry");
                            this.attempt_to_delete.add_rate_limited(uid.clone());
                        }
                    }
                    this.attempt_to_delete.done(&uid);
                }
            }
        });
        let orphaners = (0..2).map(|_| {
            let this = self.clone();
            async move {
                loop {
                    let uid = this.attempt_to_orphan.get().await;
                    match this.orphan_dependents(&uid).await {
                        Ok(()) => this.attempt_to_orphan.forget(&uid),
                        Err(e) => {
                            debug!(uid, error = format!("{e:#}"), "orphaning retry");
                            this.attempt_to_orphan.add_rate_limited(uid.clone());
                        }
                    }
                    this.attempt_to_orphan.done(&uid);
                }
            }
        });
        futures::future::join(join_all(deleters), join_all(orphaners)).await;
        Ok(())
    }

    /// Finds every deletable kind and starts watching the ones not watched yet (CRDs appear
    /// over time).
    async fn discover(self: &Arc<Self>) -> Result<()> {
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .context("cannot discover the served resources")?;
        let mut found = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let kind = Kind {
                    resource: ar.clone(),
                    namespaced: caps.scope == Scope::Namespaced,
                };
                lock(&self.kinds).insert((ar.group.clone(), ar.kind.clone()), kind.clone());
                let watchable = caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE);
                if watchable && !IGNORED.contains(&(ar.group.as_str(), ar.plural.as_str())) {
                    found.push(kind);
                }
            }
        }
        for kind in found {
            let id = (kind.resource.group.clone(), kind.resource.plural.clone());
            if lock(&self.watched).insert(id) {
                tokio::spawn(self.clone().watch(kind));
            }
        }
        Ok(())
    }

    fn kind_for(&self, api_version: &str, kind: &str) -> Option<Kind> {
        lock(&self.kinds)
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .cloned()
    }

    fn api(&self, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        }
    }

    async fn watch(self: Arc<Self>, kind: Kind) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource);
        let config = watcher::Config::default().timeout(25);
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listed = Some(HashSet::new()),
                Ok(Event::InitApply(obj)) => {
                    if let (Some(l), Some(uid)) = (listed.as_mut(), obj.metadata.uid.clone()) {
                        l.insert(uid);
                    }
                    self.observe(&kind, &obj);
                }
                Ok(Event::InitDone) => {
                    // Whatever of this kind the fresh list lacks was deleted meanwhile.
                    let seen = listed.take().unwrap_or_default();
                    let gone: Vec<String> = lock(&self.graph)
                        .nodes
                        .iter()
                        .filter(|(uid, n)| {
                            !n.virtual_
                                && n.kind.as_ref().is_some_and(|k| {
                                    k.resource.plural == kind.resource.plural
                                        && k.resource.group == kind.resource.group
                                })
                                && !seen.contains(*uid)
                        })
                        .map(|(uid, _)| uid.clone())
                        .collect();
                    for uid in gone {
                        self.removed(&uid);
                    }
                }
                Ok(Event::Apply(obj)) => self.observe(&kind, &obj),
                Ok(Event::Delete(obj)) => {
                    if let Some(uid) = obj.metadata.uid.as_deref() {
                        self.removed(uid);
                    }
                }
                Err(e) => {
                    debug!(kind = %kind.resource.plural, error = %e, "watch failed; retrying")
                }
            }
        }
    }

    /// An object was added or changed: update the graph and queue what its change calls for.
    fn observe(&self, kind: &Kind, obj: &DynamicObject) {
        let Some(uid) = obj.metadata.uid.clone() else {
            return;
        };
        let owners = obj.metadata.owner_references.clone().unwrap_or_default();
        let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
        let deleting = obj.metadata.deletion_timestamp.is_some();
        let deleting_dependents = deleting && finalizers.iter().any(|f| f == FOREGROUND);
        let orphaning = deleting && finalizers.iter().any(|f| f == ORPHAN);
        let mut to_delete: Vec<String> = Vec::new();
        {
            let mut g = lock(&self.graph);
            let previous = g.nodes.get(&uid).map(|n| {
                (
                    n.owners
                        .iter()
                        .map(|o| o.uid.clone())
                        .collect::<HashSet<_>>(),
                    n.deleting_dependents,
                )
            });
            let old_owners = previous.as_ref().map(|p| p.0.clone()).unwrap_or_default();
            let new_owners: HashSet<String> = owners.iter().map(|o| o.uid.clone()).collect();
            let node = g.nodes.entry(uid.clone()).or_insert_with(|| Node {
                kind: None,
                namespace: String::new(),
                name: String::new(),
                owners: Vec::new(),
                dependents: HashSet::new(),
                deleting: false,
                deleting_dependents: false,
                virtual_: false,
                reference: None,
            });
            node.kind = Some(kind.clone());
            node.namespace = obj.metadata.namespace.clone().unwrap_or_default();
            node.name = obj.metadata.name.clone().unwrap_or_default();
            node.owners = owners.clone();
            node.deleting = deleting;
            node.deleting_dependents = deleting_dependents;
            node.virtual_ = false;
            node.reference = None;
            for gone in old_owners.difference(&new_owners) {
                if let Some(o) = g.nodes.get_mut(gone) {
                    o.dependents.remove(&uid);
                    // A foreground owner waits on fewer dependents now.
                    if o.deleting_dependents {
                        to_delete.push(gone.clone());
                    }
                }
            }
            for owner in &owners {
                if g.absent.contains(&owner.uid) {
                    to_delete.push(uid.clone());
                }
                let o = g.nodes.entry(owner.uid.clone()).or_insert_with(|| {
                    // Not seen (yet): verify it exists, or collect its dependents.
                    to_delete.push(owner.uid.clone());
                    Node {
                        kind: None,
                        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                        name: owner.name.clone(),
                        owners: Vec::new(),
                        dependents: HashSet::new(),
                        deleting: false,
                        deleting_dependents: false,
                        virtual_: true,
                        reference: Some(owner.clone()),
                    }
                });
                o.dependents.insert(uid.clone());
            }
            let was_deleting_dependents = previous.as_ref().is_some_and(|p| p.1);
            if deleting_dependents && !was_deleting_dependents {
                to_delete.push(uid.clone());
                if let Some(n) = g.nodes.get(&uid) {
                    to_delete.extend(n.dependents.iter().cloned());
                }
            }
            // A new dependent of an owner being deleted in the foreground is collected too.
            for owner in &owners {
                if g.nodes
                    .get(&owner.uid)
                    .is_some_and(|o| o.deleting_dependents)
                {
                    to_delete.push(uid.clone());
                }
            }
        }
        if orphaning {
            self.attempt_to_orphan.add(uid.clone());
        }
        for u in to_delete {
            self.attempt_to_delete.add(u);
        }
    }

    /// An object is gone: its dependents may have no owner left.
    fn removed(&self, uid: &str) {
        let mut to_delete = Vec::new();
        {
            let mut g = lock(&self.graph);
            let Some(node) = g.nodes.remove(uid) else {
                return;
            };
            g.absent.insert(uid.to_string());
            if g.absent.len() > 100_000 {
                g.absent.clear();
            }
            for owner in &node.owners {
                if let Some(o) = g.nodes.get_mut(&owner.uid) {
                    o.dependents.remove(uid);
                    if o.deleting_dependents {
                        to_delete.push(owner.uid.clone());
                    }
                    if o.virtual_ && o.dependents.is_empty() {
                        g.nodes.remove(&owner.uid);
                    }
                }
            }
            to_delete.extend(node.dependents.iter().cloned());
            if !node.dependents.is_empty() {
                // Keep a virtual stand-in so the dependents' references still resolve to it.
                g.nodes.insert(
                    uid.to_string(),
                    Node {
                        dependents: node.dependents,
                        virtual_: true,
                        reference: None,
                        owners: Vec::new(),
                        deleting: false,
                        deleting_dependents: false,
                        ..node
                    },
                );
            }
        }
        for u in to_delete {
            self.attempt_to_delete.add(u);
        }
    }

    /// Whether an owner reference still points at a live object: Ok(None) when it is gone.
    async fn owner(
        &self,
        reference: &OwnerReference,
        namespace: &str,
    ) -> Result<Option<DynamicObject>> {
        if lock(&self.graph).absent.contains(&reference.uid) {
            return Ok(None);
        }
        let Some(kind) = self.kind_for(&reference.api_version, &reference.kind) else {
            // A kind the server does not serve cannot have a live owner.
            return Ok(None);
        };
        match self.api(&kind, namespace).get_opt(&reference.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(reference.uid.as_str()) => Ok(Some(o)),
            _ => {
                lock(&self.graph).absent.insert(reference.uid.clone());
                Ok(None)
            }
        }
    }

    async fn attempt_to_delete_item(self: &Arc<Self>, uid: &str) -> Result<()> {
        let (kind, namespace, name, virtual_, reference, deleting, deleting_dependents) = {
            let g = lock(&self.graph);
            let Some(n) = g.nodes.get(uid) else {
                return Ok(());
            };
            (
                n.kind.clone(),
                n.namespace.clone(),
                n.name.clone(),
                n.virtual_,
                n.reference.clone(),
                n.deleting,
                n.deleting_dependents,
            )
        };
        if virtual_ {
            return self
                .check_virtual(uid, &namespace, reference.as_ref())
                .await;
        }
        let Some(kind) = kind else {
            return Ok(());
        };
        if deleting_dependents {
            return self
                .process_deleting_dependents(uid, &kind, &namespace, &name)
                .await;
        }
        if deleting {
            return Ok(());
        }
        let api = self.api(&kind, &namespace);
        let Some(latest) = api.get_opt(&name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        let owners = latest.metadata.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for reference in &owners {
            match self.owner(reference, &namespace).await? {
                None => dangling.push(reference.uid.clone()),
                Some(o) => {
                    let foreground = o.metadata.deletion_timestamp.is_some()
                        && o.metadata
                            .finalizers
                            .iter()
                            .flatten()
                            .any(|f| f == FOREGROUND);
                    if foreground {
                        waiting.push(reference.uid.clone());
                    } else {
                        solid.push(reference.uid.clone());
                    }
                }
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Still owned: only the references to gone (or going) owners are dropped.
            let keep: Vec<&OwnerReference> = owners
                .iter()
                .filter(|o| !dangling.contains(&o.uid) && !waiting.contains(&o.uid))
                .collect();
            debug!(object = %name, "removing references to deleted owners");
            return self.set_owners(&api, &latest, json!(keep)).await;
        }
        let has_dependents = lock(&self.graph)
            .nodes
            .get(uid)
            .is_some_and(|n| !n.dependents.is_empty());
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let policy = if !waiting.is_empty() && has_dependents {
            // Deleting in the foreground all the way down.
            PropagationPolicy::Foreground
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        debug!(object = %name, kind = %kind.resource.kind, ?policy, "collecting object whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {name}")),
        }
    }

    /// An owner we only know by reference: if it does not exist, its dependents are orphans.
    async fn check_virtual(
        &self,
        uid: &str,
        namespace: &str,
        reference: Option<&OwnerReference>,
    ) -> Result<()> {
        let Some(reference) = reference else {
            // A deleted object kept for its dependents: they need another look.
            let deps: Vec<String> = lock(&self.graph)
                .nodes
                .get(uid)
                .map(|n| n.dependents.iter().cloned().collect())
                .unwrap_or_default();
            for d in deps {
                self.attempt_to_delete.add(d);
            }
            return Ok(());
        };
        if self.owner(reference, namespace).await?.is_some() {
            // It exists: its own watch will fill in the node.
            return Ok(());
        }
        let deps: Vec<String> = {
            let mut g = lock(&self.graph);
            g.nodes
                .remove(uid)
                .map(|n| n.dependents.into_iter().collect())
                .unwrap_or_default()
        };
        for d in deps {
            self.attempt_to_delete.add(d);
        }
        Ok(())
    }

    /// Foreground deletion: dependents that block the owner are deleted; when none is left the
    /// owner's foregroundDeletion finalizer is removed and the API server lets it go.
    async fn process_deleting_dependents(
        &self,
        uid: &str,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        let blocking: Vec<(String, bool)> = {
            let g = lock(&self.graph);
            let Some(n) = g.nodes.get(uid) else {
                return Ok(());
            };
            n.dependents
                .iter()
                .filter_map(|d| {
                    let dep = g.nodes.get(d)?;
                    let blocks = dep
                        .owners
                        .iter()
                        .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
                    blocks.then(|| (d.clone(), dep.deleting_dependents))
                })
                .collect()
        };
        if blocking.is_empty() {
            let api = self.api(kind, namespace);
            let Some(latest) = api.get_opt(name).await? else {
                return Ok(());
            };
            if latest.metadata.uid.as_deref() != Some(uid) {
                return Ok(());
            }
            debug!(object = %name, "dependents gone: finishing foreground deletion");
            return self.remove_finalizer(&api, &latest, FOREGROUND).await;
        }
        for (dep, dep_deleting_dependents) in blocking {
            if !dep_deleting_dependents {
                self.attempt_to_delete.add(dep);
            }
        }
        Ok(())
    }

    /// Orphan deletion: every dependent loses its reference to the owner, then the owner loses
    /// its orphan finalizer.
    async fn orphan_dependents(&self, uid: &str) -> Result<()> {
        let (kind, namespace, name, dependents) = {
            let g = lock(&self.graph);
            let Some(n) = g.nodes.get(uid) else {
                return Ok(());
            };
            let deps: Vec<(Option<Kind>, String, String)> = n
                .dependents
                .iter()
                .filter_map(|d| g.nodes.get(d))
                .map(|d| (d.kind.clone(), d.namespace.clone(), d.name.clone()))
                .collect();
            (n.kind.clone(), n.namespace.clone(), n.name.clone(), deps)
        };
        let Some(kind) = kind else {
            return Ok(());
        };
        for (dep_kind, dep_ns, dep_name) in dependents {
            let Some(dep_kind) = dep_kind else {
                continue;
            };
            let api = self.api(&dep_kind, &dep_ns);
            let Some(latest) = api.get_opt(&dep_name).await? else {
                continue;
            };
            let owners = latest.metadata.owner_references.clone().unwrap_or_default();
            if !owners.iter().any(|o| o.uid == uid) {
                continue;
            }
            let keep: Vec<&OwnerReference> = owners.iter().filter(|o| o.uid != uid).collect();
            self.set_owners(&api, &latest, json!(keep)).await?;
        }
        let api = self.api(&kind, &namespace);
        let Some(latest) = api.get_opt(&name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        debug!(object = %name, "dependents orphaned: removing the orphan finalizer");
        self.remove_finalizer(&api, &latest, ORPHAN).await
    }

    /// ownerReferences replaced as a whole, guarded by uid and resourceVersion: a merge patch
    /// that works for every kind, custom ones included.
    async fn set_owners(
        &self,
        api: &Api<DynamicObject>,
        latest: &DynamicObject,
        owners: serde_json::Value,
    ) -> Result<()> {
        let owners = if owners.as_array().is_some_and(|a| a.is_empty()) {
            serde_json::Value::Null
        } else {
            owners
        };
        let patch = json!({"metadata": {
            "ownerReferences": owners,
            "uid": latest.metadata.uid,
            "resourceVersion": latest.metadata.resource_version,
        }});
        let name = latest.metadata.name.clone().unwrap_or_default();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot update the owners of {name}")),
        }
    }

    async fn remove_finalizer(
        &self,
        api: &Api<DynamicObject>,
        latest: &DynamicObject,
        finalizer: &str,
    ) -> Result<()> {
        let finalizers: Vec<String> = latest
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .cloned()
            .collect();
        let value = if finalizers.is_empty() {
            serde_json::Value::Null
        } else {
            json!(finalizers)
        };
        let patch = json!({"metadata": {
            "finalizers": value,
            "uid": latest.metadata.uid,
            "resourceVersion": latest.metadata.resource_version,
        }});
        let name = latest.metadata.name.clone().unwrap_or_default();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot remove finalizer {finalizer} from {name}"))
            }
        }
    }
}
