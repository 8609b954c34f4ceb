//! Dynamic admission: Mutating- and ValidatingWebhookConfigurations, called as kube-apiserver
//! calls them. `config` validates and defaults the configurations; `Registry` keeps the
//! current webhooks, rebuilt from a store watch on every change; `matching` decides which
//! webhooks a request goes to; `review` builds the AdmissionReview and checks the answer;
//! `client` makes the HTTPS call.
//!
//! Admission (`admission.rs`) calls `mutate` after the built-in mutating plugins and before
//! validation, and `validate` after validation and before quota, as kube-apiserver orders its
//! plugins. Who is asking, what was asked (the URL's version, subresource, dry run) and the
//! warnings to send back are request-wide, so they ride in a task-local `Request` that the
//! server sets around each resource request, rather than through every handler's arguments.

pub mod client;
pub mod config;
pub mod matching;
pub mod policy;
pub mod review;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{debug, warn};

use super::crd;
use super::kinds::convert;
use super::object::meta_str;
use super::resources::{self, ResourceDef};
use super::status::ApiError;
use crate::pki::ClientIdentity;
use crate::store::Store;

const PREFIX: &str = "/registry/admissionregistration.k8s.io/";
const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// How long a failed watch waits before listing again.
const RETRY: Duration = Duration::from_secs(1);

/// One webhook of a configuration, with what calling it needs prepared.
struct Hook {
    name: String,
    spec: Value,
    tls: Result<Arc<rustls::ClientConfig>, String>,
    pool: client::Pool,
}

#[derive(Default)]
struct Hooks {
    mutating: Vec<Arc<Hook>>,
    validating: Vec<Arc<Hook>>,
    /// ValidatingAdmissionPolicies by name, and their bindings in name order.
    policies: std::collections::HashMap<String, Value>,
    bindings: Vec<Value>,
}

/// The webhooks in force, in kube-apiserver's order: configurations by name, then each
/// configuration's webhooks in order.
#[derive(Default)]
pub struct Registry {
    hooks: RwLock<Arc<Hooks>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    fn current(&self) -> Arc<Hooks> {
        match self.hooks.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn load(&self, store: &Store) -> Result<(), String> {
        let mut hooks = Hooks::default();
        for (plural, mutating) in [
            ("mutatingwebhookconfigurations", true),
            ("validatingwebhookconfigurations", false),
        ] {
            let def = resources::find("admissionregistration.k8s.io", "v1", plural)
                .ok_or_else(|| format!("{plural} are not served"))?;
            // Keys end in the configuration's name, so the list comes sorted by name.
            let (kvs, _) = store.list(&def.key_prefix()).map_err(|e| e.to_string())?;
            for kv in kvs {
                let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                    continue;
                };
                for spec in super::kinds::json::items(&obj, "webhooks") {
                    let ca = spec
                        .pointer("/clientConfig/caBundle")
                        .and_then(Value::as_str);
                    let hook = Arc::new(Hook {
                        name: super::kinds::json::str_or(spec, "name").to_string(),
                        spec: spec.clone(),
                        tls: client::tls_config(ca),
                        pool: client::Pool::default(),
                    });
                    if mutating {
                        hooks.mutating.push(hook);
                    } else {
                        hooks.validating.push(hook);
                    }
                }
            }
        }
        for (plural, is_policy) in [
            ("validatingadmissionpolicies", true),
            ("validatingadmissionpolicybindings", false),
        ] {
            let def = resources::find("admissionregistration.k8s.io", "v1", plural)
                .ok_or_else(|| format!("{plural} are not served"))?;
            let (kvs, _) = store.list(&def.key_prefix()).map_err(|e| e.to_string())?;
            for kv in kvs {
                let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                    continue;
                };
                if is_policy {
                    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
                    hooks.policies.insert(name, obj);
                } else {
                    hooks.bindings.push(obj);
                }
            }
        }
        let hooks = Arc::new(hooks);
        match self.hooks.write() {
            Ok(mut h) => *h = hooks,
            Err(poisoned) => *poisoned.into_inner() = hooks,
        }
        Ok(())
    }

    /// Loads the configurations, then again on every change of them, until the store goes.
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            let after = store.current_revision();
            if let Err(e) = self.load(&store) {
                warn!(error = %e, "admission webhooks: cannot load the configurations");
            }
            let mut watch = match store.watch(PREFIX, after) {
                Ok(w) => w,
                Err(e) => {
                    warn!(error = %e, "admission webhooks: cannot watch the configurations");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            loop {
                match watch.next_event().await {
                    Some(Ok(_)) => {
                        if let Err(e) = self.load(&store) {
                            warn!(error = %e, "admission webhooks: cannot load the configurations");
                        }
                    }
                    Some(Err(_)) => break,
                    None => return,
                }
            }
        }
    }
}

/// What the server knows of the request being served that admission needs.
pub struct Request {
    pub registry: Arc<Registry>,
    pub user: Option<ClientIdentity>,
    /// The resource as the URL named it (before any conversion to the stored version).
    pub requested: &'static ResourceDef,
    pub subresource: Option<String>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// The namespace and name a connect is to (its options object has no metadata).
    connect_target: Option<(String, String)>,
    warnings: Mutex<Vec<String>>,
}

impl Request {
    pub fn new(
        registry: Arc<Registry>,
        user: Option<ClientIdentity>,
        requested: &'static ResourceDef,
        subresource: Option<String>,
        dry_run: bool,
        field_manager: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Request {
            registry,
            user,
            requested,
            subresource,
            dry_run,
            field_manager,
            connect_target: None,
            warnings: Mutex::new(Vec::new()),
        })
    }

    /// The webhooks' warnings, for the response's Warning headers.
    pub fn take_warnings(&self) -> Vec<String> {
        match self.warnings.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn warn(&self, more: Vec<String>) {
        match self.warnings.lock() {
            Ok(mut w) => w.extend(more),
            Err(poisoned) => poisoned.into_inner().extend(more),
        }
    }
}

/// The options object of a connect request (`pods/exec`, `attach`, `portforward`, `proxy` of
/// pods, services and nodes), read from its query as kube-apiserver decodes it.
fn connect_options(kind_of: &str, sub: &str, query: Option<&str>) -> Option<Value> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let first = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let all = |k: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let flag = |k: &str| crate::apiserver::params::bool_param(first(k).as_deref());
    let mut options = match (kind_of, sub) {
        ("Pod", "exec") => json!({"kind": "PodExecOptions", "stdin": flag("stdin"),
            "stdout": flag("stdout"), "stderr": flag("stderr"), "tty": flag("tty"),
            "command": all("command")}),
        ("Pod", "attach") => json!({"kind": "PodAttachOptions", "stdin": flag("stdin"),
            "stdout": flag("stdout"), "stderr": flag("stderr"), "tty": flag("tty")}),
        ("Pod", "portforward") => {
            let ports: Vec<Value> = all("ports")
                .iter()
                .flat_map(|p| {
                    p.split(',')
                        .map(|x| x.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .filter_map(|p| p.parse::<i64>().ok())
                .map(Value::from)
                .collect();
            json!({"kind": "PodPortForwardOptions", "ports": ports})
        }
        ("Pod", "proxy") => json!({"kind": "PodProxyOptions"}),
        ("Service", "proxy") => json!({"kind": "ServiceProxyOptions"}),
        ("Node", "proxy") => json!({"kind": "NodeProxyOptions"}),
        _ => return None,
    };
    options["apiVersion"] = json!("v1");
    if let Some(c) = first("container") {
        options["container"] = json!(c);
    }
    Some(options)
}

/// Admission of a connect request (exec, attach, port-forward, proxy): CONNECT to the webhooks
/// and policies whose rules name it, with the request's options as the object. The webhooks'
/// warnings come back whatever the outcome, for the response's Warning headers.
pub async fn admit_connect(
    store: &Store,
    registry: Arc<Registry>,
    user: Option<ClientIdentity>,
    target: &super::request::ResourceRequest,
    query: Option<&str>,
    proxy_path: Option<&str>,
) -> (Result<(), ApiError>, Vec<String>) {
    let subresource = target.subresource.as_deref().unwrap_or_default();
    let Some(mut options) = connect_options(target.def.kind, subresource, query) else {
        return (Ok(()), Vec::new());
    };
    if let Some(path) = proxy_path.filter(|p| subresource == "proxy" && !p.is_empty()) {
        options["path"] = json!(path);
    }
    let request = Arc::new(Request {
        registry,
        user,
        requested: target.def,
        subresource: Some(subresource.to_string()),
        dry_run: false,
        field_manager: None,
        connect_target: Some((
            target.namespace.clone().unwrap_or_default(),
            target.name.clone().unwrap_or_default(),
        )),
        warnings: Mutex::new(Vec::new()),
    });
    let admitted = scope(
        request.clone(),
        validate(store, target.def, Operation::Connect, Some(&options), None),
    )
    .await;
    (admitted, request.take_warnings())
}

tokio::task_local! {
    static REQUEST: Arc<Request>;
}

/// Runs `serve` with `request` as the request admission sees.
pub async fn scope<F: Future>(request: Arc<Request>, serve: F) -> F::Output {
    REQUEST.scope(request, serve).await
}

fn current() -> Option<Arc<Request>> {
    REQUEST.try_with(Arc::clone).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// The options a review carries; a connect's options are its object instead.
    fn options_kind(self) -> Option<&'static str> {
        match self {
            Operation::Create => Some("CreateOptions"),
            Operation::Update => Some("UpdateOptions"),
            Operation::Delete => Some("DeleteOptions"),
            Operation::Connect => None,
        }
    }
}

/// Reasons are `&'static str` in `ApiError`; a webhook's own reason is kept once per text.
fn intern(reason: &str) -> &'static str {
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    const MAX: usize = 256;
    let mut guard = match SEEN.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let seen = guard.get_or_insert_with(HashSet::new);
    if let Some(r) = seen.get(reason) {
        return r;
    }
    if seen.len() >= MAX {
        // A webhook inventing endless reasons must not grow the server: the code still says it.
        return "";
    }
    let leaked: &'static str = Box::leak(reason.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// The kind of the object a subresource write carries when it is not its parent's:
/// kube-apiserver admits `pods/binding`, `pods/eviction` and `*/scale` with that object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubresourceKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

pub const BINDING: SubresourceKind = SubresourceKind {
    group: "",
    version: "v1",
    kind: "Binding",
};
pub const EVICTION: SubresourceKind = SubresourceKind {
    group: "policy",
    version: "v1",
    kind: "Eviction",
};
pub const SCALE: SubresourceKind = SubresourceKind {
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
};

/// One admission call: the object (in stored form), what it was, and where it lives.
struct Call<'a> {
    store: &'a Store,
    def: &'a ResourceDef,
    operation: Operation,
    request: &'a Request,
    name: String,
    namespace: String,
    /// Set when the object is a subresource's own kind, sent as the client wrote it.
    object_kind: Option<SubresourceKind>,
}

impl Call<'_> {
    fn target<'t>(&'t self, group: &'t str, version: &'t str) -> matching::Target<'t> {
        matching::Target {
            operation: self.operation.as_str(),
            group,
            version,
            resource: self.request.requested.plural,
            subresource: self.request.subresource.as_deref().unwrap_or_default(),
            namespaced: self.def.namespaced(),
        }
    }

    /// The labels namespaceSelector reads: the Namespace itself, or the object's namespace.
    fn namespace_labels(&self, obj: Option<&Value>, old: Option<&Value>) -> Option<Value> {
        if (self.def.group, self.def.plural) == ("", "namespaces") {
            let o = obj.or(old)?;
            return Some(o.pointer("/metadata/labels").cloned().unwrap_or(json!({})));
        }
        if !self.def.namespaced() {
            return None;
        }
        let labels = self
            .namespace_object()
            .and_then(|ns| ns.pointer("/metadata/labels").cloned());
        Some(labels.unwrap_or(json!({})))
    }

    /// The object's Namespace as stored (policies see it as `namespaceObject`).
    fn namespace_object(&self) -> Option<Value> {
        if !self.def.namespaced() {
            return None;
        }
        let ns_def = resources::find("", "v1", "namespaces")?;
        self.store
            .get(&ns_def.key(None, &self.namespace))
            .ok()
            .flatten()
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
    }

    /// The parameter objects a binding's paramRef names for a policy's paramKind (stored form
    /// converted to the kind's version); empty when none is found.
    fn params(&self, kind: &Value, binding: &Value) -> Result<Vec<Value>, String> {
        let api_version = kind
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name = kind.get("kind").and_then(Value::as_str).unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let def = resources::all()
            .into_iter()
            .find(|d| d.group == group && d.version == version && d.kind == kind_name)
            .ok_or_else(|| format!("failed to find resource referenced by paramKind: '{api_version}, Kind={kind_name}'"))?;
        let param_ref = binding
            .pointer("/spec/paramRef")
            .filter(|r| r.is_object())
            .ok_or("paramRef is required when the policy has a paramKind")?;
        let namespace = match param_ref.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() => Some(ns.to_string()),
            _ if def.namespaced() && !self.namespace.is_empty() => Some(self.namespace.clone()),
            _ if def.namespaced() => {
                return Err(
                    "cannot use a namespaced paramRef in a policy binding that matches a cluster-scoped resource"
                        .into(),
                );
            }
            _ => None,
        };
        let read = |bytes: &[u8]| {
            serde_json::from_slice::<Value>(bytes)
                .map(|o| convert::from_storage(def, o))
                .map_err(|e| format!("unreadable param: {e}"))
        };
        if let Some(name) = param_ref
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return match self
                .store
                .get(&def.key(namespace.as_deref(), name))
                .map_err(|e| e.to_string())?
            {
                Some(kv) => Ok(vec![read(&kv.value)?]),
                None => Ok(Vec::new()),
            };
        }
        let selector = param_ref.get("selector").cloned().unwrap_or(json!({}));
        let (kvs, _) = self
            .store
            .list(&def.list_prefix(namespace.as_deref()))
            .map_err(|e| e.to_string())?;
        let mut params = Vec::new();
        for kv in kvs {
            let obj = read(&kv.value)?;
            if super::kinds::meta::selector_matches(&selector, obj.pointer("/metadata/labels")) {
                params.push(obj);
            }
        }
        Ok(params)
    }

    /// The ValidatingAdmissionPolicies bound to this request: denials as errors (the first
    /// one wins), warnings to the client.
    fn run_policies(
        &self,
        hooks: &Hooks,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if hooks.bindings.is_empty() {
            return Ok(());
        }
        let requested = self.request.requested;
        let target = self.target(requested.group, requested.version);
        let equivalent = matching::equivalents(requested);
        let ns_labels = self.namespace_labels(obj, old);
        let mut prepared: Option<[Value; 4]> = None;
        for binding in &hooks.bindings {
            let policy_name = binding
                .pointer("/spec/policyName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(policy) = hooks.policies.get(policy_name) else {
                continue;
            };
            let selects = |mr: Option<&Value>| {
                policy::resources_match(
                    mr,
                    &target,
                    &equivalent,
                    &self.name,
                    obj,
                    old,
                    ns_labels.as_ref(),
                )
            };
            if !selects(policy.pointer("/spec/matchConstraints"))
                || !selects(binding.pointer("/spec/matchResources"))
            {
                continue;
            }
            let [object, old_object, request, namespace] = prepared.get_or_insert_with(|| {
                [
                    obj.cloned().unwrap_or(Value::Null),
                    old.cloned().unwrap_or(Value::Null),
                    self.review_request("", requested, obj, old),
                    self.namespace_object().unwrap_or(Value::Null),
                ]
            });
            let params = match policy.pointer("/spec/paramKind") {
                None => Ok(vec![Value::Null]),
                Some(kind) => self.params(kind, binding),
            };
            let mut decisions = Vec::new();
            match params {
                Ok(params) if params.is_empty() => {
                    let deny = binding
                        .pointer("/spec/paramRef/parameterNotFoundAction")
                        .and_then(Value::as_str)
                        == Some("Deny");
                    if deny {
                        decisions.extend(policy::configuration_failure(
                            policy,
                            binding,
                            "no params found for policy binding with `Deny` parameterNotFoundAction",
                        ));
                    }
                }
                Ok(params) => {
                    for param in &params {
                        let vars = [
                            ("object", &*object),
                            ("oldObject", &*old_object),
                            ("request", &*request),
                            ("namespaceObject", &*namespace),
                            ("params", param),
                        ];
                        decisions.extend(policy::evaluate(policy, binding, &vars));
                    }
                }
                Err(why) => {
                    if policy
                        .pointer("/spec/failurePolicy")
                        .and_then(Value::as_str)
                        != Some("Ignore")
                    {
                        decisions.extend(policy::configuration_failure(policy, binding, &why));
                    }
                }
            }
            for decision in decisions {
                match decision {
                    policy::Decision::Warn(w) => self.request.warn(vec![w]),
                    policy::Decision::Deny {
                        code,
                        reason,
                        message,
                    } => {
                        let forbidden = self.forbidden(message.clone());
                        return Err(ApiError {
                            code,
                            reason: intern(&reason),
                            message: forbidden.message,
                            details: Some(json!({
                                "name": self.name,
                                "group": self.def.group,
                                "kind": self.def.plural,
                                "causes": [{"message": message}],
                            })),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn review_request(
        &self,
        uid: &str,
        matched: &'static ResourceDef,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Value {
        let requested = self.request.requested;
        let mut req = json!({
            "uid": uid,
            "kind": {"group": matched.group, "version": matched.version, "kind": matched.kind},
            "resource": {"group": matched.group, "version": matched.version, "resource": matched.plural},
            "requestKind": {"group": requested.group, "version": requested.version, "kind": requested.kind},
            "requestResource": {"group": requested.group, "version": requested.version, "resource": requested.plural},
            "name": self.name,
            "operation": self.operation.as_str(),
            // The full user (impersonated uid and extra, a service account's pod) when the
            // request's handling knows it, as kube-apiserver sends it.
            "userInfo": match (crate::apiserver::authentication::requester(), &self.request.user) {
                (Some(full), _) => full.to_json(),
                (None, Some(u)) => json!({"username": u.user, "groups": u.groups}),
                (None, None) => json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
            },
            "object": obj.cloned().unwrap_or(Value::Null),
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": self.request.dry_run,
        });
        if let Some(sub) = &self.request.subresource {
            req["subResource"] = json!(sub);
            req["requestSubResource"] = json!(sub);
        }
        if self.def.namespaced() {
            req["namespace"] = json!(self.namespace);
        }
        if let Some(k) = self.object_kind {
            let kind = json!({"group": k.group, "version": k.version, "kind": k.kind});
            req["kind"] = kind.clone();
            req["requestKind"] = kind;
            req["object"] = obj.cloned().unwrap_or(Value::Null);
            req["oldObject"] = old.cloned().unwrap_or(Value::Null);
        }
        let Some(options_kind) = self.operation.options_kind() else {
            // A connect's object is its options (PodExecOptions, …), of the core group.
            let kind = obj
                .and_then(|o| o.get("kind"))
                .cloned()
                .unwrap_or(Value::Null);
            req["kind"] = json!({"group": "", "version": "v1", "kind": kind});
            req["requestKind"] = req["kind"].clone();
            req["object"] = obj.cloned().unwrap_or(Value::Null);
            return req;
        };
        let mut options = json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"});
        if self.request.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(m) = &self.request.field_manager
            && self.operation != Operation::Delete
        {
            options["fieldManager"] = json!(m);
        }
        req["options"] = options;
        req
    }

    /// Whether `hook` takes this request, and the version of the objects it wants.
    fn matches(
        &self,
        hook: &Hook,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Option<&'static ResourceDef> {
        let requested = self.request.requested;
        let equivalent = matching::equivalents(requested);
        let (group, version) = matching::rules_match(
            &hook.spec,
            &self.target(requested.group, requested.version),
            &equivalent,
        )?;
        if !matching::namespace_selector_matches(
            &hook.spec,
            self.namespace_labels(obj, old).as_ref(),
        ) || !matching::object_selector_matches(&hook.spec, obj, old)
        {
            return None;
        }
        resources::all()
            .into_iter()
            .find(|d| d.group == group && d.version == version && d.plural == requested.plural)
    }

    fn forbidden(&self, why: String) -> ApiError {
        let what = if self.def.group.is_empty() {
            self.def.plural.to_string()
        } else {
            format!("{}.{}", self.def.plural, self.def.group)
        };
        ApiError::forbidden(format!("{what} {:?} is forbidden: {why}", self.name))
    }

    /// A stored object at the version a webhook asked for: custom resources through their
    /// definition's conversion (a conversion webhook too) and pruned by that version's schema.
    async fn at_version(
        &self,
        matched: &'static ResourceDef,
        stored: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        if matched.custom.is_some() {
            return crd::versions::to_version(self.store, matched, stored.clone())
                .await
                .map(Some);
        }
        Ok(Some(convert::from_storage(matched, stored.clone())))
    }

    /// Calls one webhook that matched. `Ok(None)` is a webhook skipped by its matchConditions
    /// or ignored after failing under failurePolicy Ignore.
    async fn call(
        &self,
        hook: &Hook,
        mutating: bool,
        matched: &'static ResourceDef,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Option<review::Answer>, ApiError> {
        let uid = uuid::Uuid::new_v4().to_string();
        let (obj, old) = if self.object_kind.is_none() && self.operation.options_kind().is_some() {
            (
                self.at_version(matched, obj).await?,
                self.at_version(matched, old).await?,
            )
        } else {
            (obj.cloned(), old.cloned())
        };
        let request = self.review_request(&uid, matched, obj.as_ref(), old.as_ref());
        let ignore = hook.spec.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
        let null = Value::Null;
        match matching::conditions_match(
            &hook.spec,
            request.get("object").unwrap_or(&null),
            request.get("oldObject").unwrap_or(&null),
            &request,
        ) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) if ignore => return Ok(None),
            Err(e) => {
                return Err(self.forbidden(format!("failed calling webhook {:?}: {e}", hook.name)));
            }
        }
        let failed = |why: String| -> Result<Option<review::Answer>, ApiError> {
            let why = format!("failed calling webhook {:?}: {why}", hook.name);
            if ignore {
                warn!(webhook = %hook.name, error = %why, "admission webhook failed; ignored by its failurePolicy");
                Ok(None)
            } else {
                Err(ApiError::internal(why))
            }
        };
        let timeout = hook
            .spec
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let endpoint = match client::endpoint(self.store, &hook.spec["clientConfig"], timeout) {
            Ok(e) => e,
            Err(e) => return failed(format!("failed to call webhook: {e}")),
        };
        let tls = match &hook.tls {
            Ok(t) => t.clone(),
            Err(e) => {
                return failed(format!(
                    "failed to call webhook: Post {:?}: {e}",
                    endpoint.url
                ));
            }
        };
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(timeout),
            client::post(&hook.pool, tls, &endpoint, body),
        )
        .await;
        debug!(webhook = %hook.name, elapsed_ms = started.elapsed().as_millis() as u64, "admission webhook called");
        let bytes = match answer {
            Err(_) => {
                return failed(format!(
                    "failed to call webhook: Post {:?}: context deadline exceeded",
                    endpoint.url
                ));
            }
            Ok(Err(e)) => return failed(format!("failed to call webhook: {e}")),
            Ok(Ok(b)) => b,
        };
        match review::parse_answer(&bytes, &uid, mutating) {
            Ok(a) => Ok(Some(a)),
            Err(e) => failed(e),
        }
    }

    fn denied(&self, hook: &Hook, answer: &review::Answer) -> ApiError {
        let (code, reason, message, details) = review::denial(&hook.name, answer.status.as_ref());
        ApiError {
            code,
            reason: intern(&reason),
            message,
            details,
        }
    }
}

/// kube-apiserver never sends its admission configuration to webhooks or policies: a broken
/// webhook could otherwise never be removed.
fn exempt(def: &ResourceDef) -> bool {
    def.group == "admissionregistration.k8s.io"
}

fn call_for<'a>(
    store: &'a Store,
    def: &'a ResourceDef,
    operation: Operation,
    request: &'a Request,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Call<'a> {
    let of = |key| {
        obj.or(old)
            .and_then(|o| meta_str(o, key))
            .unwrap_or_default()
            .to_string()
    };
    Call {
        store,
        def,
        operation,
        request,
        name: of("name"),
        namespace: of("namespace"),
        object_kind: None,
    }
}

/// The mutating webhooks, in order, on a create or update of `obj` (stored form). A webhook
/// with reinvocationPolicy IfNeeded is called once more if a later one changed the object.
pub async fn mutate(
    store: &Store,
    def: &ResourceDef,
    operation: Operation,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(request) = current().filter(|_| !exempt(def)) else {
        return Ok(());
    };
    let hooks = request.registry.current();
    if hooks.mutating.is_empty() {
        return Ok(());
    }
    let call = call_for(store, def, operation, &request, Some(obj), old);
    mutate_with(&call, &hooks, obj, old).await
}

/// The mutating webhooks of `hooks` in order, then the IfNeeded ones again after a change.
async fn mutate_with(
    call: &Call<'_>,
    hooks: &Hooks,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let mut last_change: Option<usize> = None;
    for (i, hook) in hooks.mutating.iter().enumerate() {
        if mutate_once(call, hook, obj, old).await? {
            last_change = Some(i);
        }
    }
    if let Some(changed_at) = last_change {
        for hook in hooks.mutating.iter().take(changed_at) {
            if hook.spec.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded") {
                mutate_once(call, hook, obj, old).await?;
            }
        }
    }
    Ok(())
}

/// Calls one mutating webhook if it matches; whether it changed the object.
async fn mutate_once(
    call: &Call<'_>,
    hook: &Hook,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<bool, ApiError> {
    let Some(matched) = call.matches(hook, Some(obj), old) else {
        return Ok(false);
    };
    let Some(answer) = call.call(hook, true, matched, Some(obj), old).await? else {
        return Ok(false);
    };
    call.request.warn(answer.warnings.clone());
    if !answer.allowed {
        return Err(call.denied(hook, &answer));
    }
    let Some(patch) = &answer.patch else {
        return Ok(false);
    };
    if call.object_kind.is_some() {
        let mut patched = obj.clone();
        json_patch::patch(&mut patched, patch).map_err(|e| {
            ApiError::internal(format!(
                "failed calling webhook {:?}: the JSON patch could not be applied: {e}",
                hook.name
            ))
        })?;
        let changed = patched != *obj;
        *obj = patched;
        return Ok(changed);
    }
    let mut versioned = match call.at_version(matched, Some(obj)).await? {
        Some(v) => v,
        None => return Ok(false),
    };
    json_patch::patch(&mut versioned, patch).map_err(|e| {
        ApiError::internal(format!(
            "failed calling webhook {:?}: the JSON patch could not be applied: {e}",
            hook.name
        ))
    })?;
    let patched = if matched.custom.is_some() {
        crd::versions::convert(call.store, call.def, versioned).await?
    } else {
        convert::to_storage(matched, versioned)
    };
    if patched == *obj {
        return Ok(false);
    }
    *obj = patched;
    Ok(true)
}

/// The validating webhooks on a create, update or delete, all of them concurrently as
/// kube-apiserver calls them; the first denial or failure (in webhook order) is the answer.
pub async fn validate(
    store: &Store,
    def: &ResourceDef,
    operation: Operation,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(request) = current().filter(|_| !exempt(def)) else {
        return Ok(());
    };
    // An eviction's delete of its pod is not admitted again, as in Kubernetes.
    if operation == Operation::Delete && request.subresource.is_some() {
        return Ok(());
    }
    let hooks = request.registry.current();
    if hooks.validating.is_empty()
        && delete_mutating(&hooks, operation).is_empty()
        && hooks.bindings.is_empty()
    {
        return Ok(());
    }
    let mut call = call_for(store, def, operation, &request, obj, old);
    if let Some((namespace, name)) = request.connect_target.clone() {
        call.namespace = namespace;
        call.name = name;
    }
    validate_with(&call, &hooks, obj, old).await
}

/// A delete or connect reaches mutating webhooks too; they may deny it but have nothing to
/// change.
fn delete_mutating(hooks: &Hooks, operation: Operation) -> &[Arc<Hook>] {
    if matches!(operation, Operation::Delete | Operation::Connect) {
        &hooks.mutating
    } else {
        &[]
    }
}

/// The policies, then the validating webhooks of `hooks` (and the mutating ones for a delete
/// or connect).
async fn validate_with(
    call: &Call<'_>,
    hooks: &Hooks,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let request = call.request;
    // kube-apiserver's order: ValidatingAdmissionPolicy, then the validating webhooks.
    call.run_policies(hooks, obj, old)?;
    for hook in delete_mutating(hooks, call.operation) {
        if let Some(matched) = call.matches(hook, obj, old)
            && let Some(answer) = call.call(hook, true, matched, obj, old).await?
        {
            request.warn(answer.warnings.clone());
            if !answer.allowed {
                return Err(call.denied(hook, &answer));
            }
        }
    }
    let calls = hooks.validating.iter().filter_map(|hook| {
        let matched = call.matches(hook, obj, old)?;
        Some(async move { (hook, call.call(hook, false, matched, obj, old).await) })
    });
    let results = futures::future::join_all(calls).await;
    for (hook, result) in results {
        if let Some(answer) = result? {
            request.warn(answer.warnings.clone());
            if !answer.allowed {
                return Err(call.denied(hook, &answer));
            }
        }
    }
    Ok(())
}

/// Admission of a subresource write whose object is the subresource's own kind (`kind`):
/// `pods/binding` and `pods/eviction` (CREATE), `*/scale` (UPDATE, with the Scale before).
/// The mutating webhooks may patch `obj`; then the policies and validating webhooks judge it.
#[allow(clippy::too_many_arguments)]
pub async fn admit_subresource(
    store: &Store,
    def: &ResourceDef,
    operation: Operation,
    kind: SubresourceKind,
    namespace: &str,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(request) = current().filter(|_| !exempt(def)) else {
        return Ok(());
    };
    let hooks = request.registry.current();
    if hooks.mutating.is_empty() && hooks.validating.is_empty() && hooks.bindings.is_empty() {
        return Ok(());
    }
    let mut call = call_for(store, def, operation, &request, Some(&*obj), old);
    call.namespace = namespace.to_string();
    call.name = name.to_string();
    call.object_kind = Some(kind);
    mutate_with(&call, &hooks, obj, old).await?;
    validate_with(&call, &hooks, Some(&*obj), old).await
}
