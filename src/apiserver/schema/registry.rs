//! The schema registry: every built-in kind's schema as k8s-openapi generates it through schemars,
//! reshaped the way Kubernetes serves OpenAPI v3 (a field that refers to a type is
//! `{"allOf": [{"$ref": …}], "description": …}`) and completed with the patch and list metadata
//! schemars does not carry (`patchmeta`). It is built once, on first use: the API server starts
//! without paying for it, and the first request that needs a schema pays a few milliseconds.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use super::{enums, kinds, patchmeta};

/// Where OpenAPI v3 documents keep named schemas; every `$ref` in the registry points there.
pub const REF_PREFIX: &str = "#/components/schemas/";

pub struct Registry {
    /// Named schemas by their Kubernetes name (`io.k8s.api.apps.v1.Deployment`), as served.
    schemas: Map<String, Value>,
    /// "group/version/Kind" → the kind's schema name and its list's, if it has one.
    kinds: HashMap<String, KindNames>,
}

struct KindNames {
    schema: String,
    list: Option<String>,
}

/// One group-version-kind, as `x-kubernetes-group-version-kind` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

fn kind_key(group: &str, version: &str, kind: &str) -> String {
    format!("{group}/{version}/{kind}")
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The registry, built on first use.
pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(build)
}

/// Collects the kinds `kinds::register` names while schemars generates their schemas.
pub struct Builder {
    generator: SchemaGenerator,
    kinds: Vec<(Gvk, String, bool)>,
}

impl Builder {
    /// Registers a kind; `listable` kinds also get a `<Kind>List` schema.
    pub(super) fn kind<T: k8s_openapi::Resource + JsonSchema>(&mut self, listable: bool) {
        self.generator.subschema_for::<T>();
        let gvk = Gvk {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
        };
        self.kinds
            .push((gvk, T::schema_name().into_owned(), listable));
    }

    fn extra<T: JsonSchema>(&mut self) {
        self.generator.subschema_for::<T>();
    }
}

fn build() -> Registry {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut builder = Builder {
        generator: settings.into_generator(),
        kinds: Vec::new(),
    };
    kinds::register(&mut builder);
    // What every group-version's operations refer to besides the kinds themselves.
    builder.extra::<meta::Status>();
    builder.extra::<meta::DeleteOptions>();
    builder.extra::<meta::Patch>();
    builder.extra::<meta::ListMeta>();
    builder.extra::<meta::WatchEvent<()>>();

    let mut schemas = builder.generator.take_definitions(false);
    for schema in schemas.values_mut() {
        reshape(schema);
    }
    patchmeta::apply(&mut schemas);
    enums::apply(&mut schemas);

    let mut kinds = HashMap::new();
    for (gvk, name, listable) in builder.kinds {
        let list = if listable {
            let list_name = format!("{name}List");
            let list = list_schema(&schemas, &gvk, &name);
            schemas.insert(list_name.clone(), list);
            Some(list_name)
        } else {
            None
        };
        if let Some(schema) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": gvk.group, "kind": gvk.kind, "version": gvk.version}]),
            );
            // k8s-openapi marks metadata required because its Rust field is not an Option;
            // Kubernetes' own schemas never require it.
            strip_required(schema, "metadata");
        }
        kinds.insert(
            kind_key(gvk.group, gvk.version, gvk.kind),
            KindNames { schema: name, list },
        );
    }
    patchmeta::fix_required(&mut schemas);
    Registry { schemas, kinds }
}

/// A field that refers to a named type carries its own description beside the `$ref`; OpenAPI
/// 3.0 ignores siblings of `$ref`, so Kubernetes wraps the reference in `allOf`, and kubectl
/// explain prints the field's description and then the type's.
fn reshape(node: &mut Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for prop in props.values_mut() {
            if let Some(p) = prop.as_object_mut()
                && p.len() > 1
                && let Some(reference) = p.remove("$ref")
            {
                p.insert("allOf".into(), json!([{ "$ref": reference }]));
            }
            reshape(prop);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get_mut(key) {
            reshape(child);
        }
    }
}

fn strip_required(schema: &mut Map<String, Value>, field: &str) {
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|f| f != field);
        if required.is_empty() {
            schema.remove("required");
        }
    }
}

/// k8s-openapi has no schema for lists (its `List<T>` is generic); Kubernetes names one per kind.
fn list_schema(schemas: &Map<String, Value>, gvk: &Gvk, item: &str) -> Value {
    let described = |field: &str| {
        schemas
            .get(item)
            .and_then(|s| s.pointer(&format!("/properties/{field}")))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{}List is a list of {} objects.", gvk.kind, gvk.kind),
        "type": "object",
        "properties": {
            "apiVersion": described("apiVersion"),
            "items": {
                "description": format!("List of {} objects.", gvk.kind),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item}")},
            },
            "kind": described("kind"),
            "metadata": {
                "allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [{"group": gvk.group, "kind": format!("{}List", gvk.kind), "version": gvk.version}],
    })
}

impl Registry {
    /// Every named schema, as OpenAPI documents serve them.
    pub fn schemas(&self) -> &Map<String, Value> {
        &self.schemas
    }

    /// A named schema, resolved.
    pub fn schema(&self, name: &str) -> Option<Schema<'_>> {
        let (name, node) = self.schemas.get_key_value(name)?;
        Some(Schema {
            registry: self,
            node,
            name: Some(name),
        })
    }

    /// The schema name of a built-in kind, if k8s-openapi knows it.
    pub fn kind_schema_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .get(&kind_key(group, version, kind))
            .map(|k| k.schema.as_str())
    }

    /// The schema name of a built-in kind's list.
    pub fn list_schema_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .get(&kind_key(group, version, kind))?
            .list
            .as_deref()
    }

    /// A schema kept outside the registry: a custom resource's, which refers to nothing.
    pub fn inline<'a>(&'a self, node: &'a Value) -> Schema<'a> {
        Schema::resolve(self, node)
    }

    /// The root schema of a built-in kind.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<Schema<'_>> {
        self.schema(self.kind_schema_name(group, version, kind)?)
    }

    /// The names of `roots` and of every schema they refer to, directly or not.
    pub fn closure<'a>(&'a self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = roots.into_iter().collect();
        while let Some(name) = todo.pop() {
            let Some((name, schema)) = self.schemas.get_key_value(name) else {
                continue;
            };
            if seen.insert(name.as_str()) {
                collect_refs(schema, &mut todo);
            }
        }
        seen
    }
}

fn collect_refs<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref"
                    && let Some(name) = value.as_str().and_then(|r| r.strip_prefix(REF_PREFIX))
                {
                    out.push(name);
                } else {
                    collect_refs(value, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// What a value of a schema looks like, which decides how validation and patching walk it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A struct: only its declared properties are allowed.
    Object,
    /// A map with string keys; `values()` is the values' schema.
    Map,
    /// A list; `items()` is the elements' schema.
    List,
    /// An object that holds anything (RawExtension, FieldsV1): no field is unknown in it.
    FreeForm,
    /// A string, number, boolean, int-or-string or quantity.
    Scalar,
}

/// A schema node with its `$ref` / single `allOf` followed.
#[derive(Clone, Copy)]
pub struct Schema<'r> {
    registry: &'r Registry,
    node: &'r Value,
    name: Option<&'r str>,
}

impl std::fmt::Debug for Schema<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.name)
            .field("shape", &self.shape())
            .finish()
    }
}

// The navigation API is whole for its users (validation, patching, OpenAPI and what comes next);
// in a binary crate the accessors no caller uses yet would warn.
#[allow(dead_code)]
impl<'r> Schema<'r> {
    fn resolve(registry: &'r Registry, mut node: &'r Value) -> Self {
        let mut name = None;
        // A reference leads to a named schema, which never is a reference itself; the bound
        // only guards against a malformed table.
        for _ in 0..8 {
            if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
                match reference
                    .strip_prefix(REF_PREFIX)
                    .and_then(|n| registry.schemas.get_key_value(n))
                {
                    Some((n, target)) => {
                        name = Some(n.as_str());
                        node = target;
                        continue;
                    }
                    None => break,
                }
            }
            match node.get("allOf") {
                // Built-in fields refer to their type as a lone allOf; a structural schema's
                // allOf (which always sits beside a type) only adds value rules.
                Some(Value::Array(all))
                    if all.len() == 1
                        && node.get("properties").is_none()
                        && node.get("type").is_none() =>
                {
                    node = &all[0];
                }
                _ => break,
            }
        }
        Schema {
            registry,
            node,
            name,
        }
    }

    /// The Kubernetes name of the type, when it is a named one.
    pub fn name(&self) -> Option<&'r str> {
        self.name
    }

    /// The raw JSON schema node.
    pub fn node(&self) -> &'r Value {
        self.node
    }

    pub fn description(&self) -> Option<&'r str> {
        self.node.get("description").and_then(Value::as_str)
    }

    pub fn shape(&self) -> Shape {
        let obj = self.node.as_object();
        let has = |key: &str| obj.is_some_and(|o| o.contains_key(key));
        if has("properties") {
            Shape::Object
        } else if has("items") {
            Shape::List
        } else if self
            .node
            .get("additionalProperties")
            .is_some_and(Value::is_object)
        {
            Shape::Map
        } else if self.node.get("type").and_then(Value::as_str) == Some("object") {
            Shape::FreeForm
        } else {
            Shape::Scalar
        }
    }

    /// A struct's field by its JSON name.
    pub fn field(&self, name: &str) -> Option<Field<'r>> {
        let node = self.node.get("properties")?.get(name)?;
        Some(Field {
            schema: Schema::resolve(self.registry, node),
            meta: FieldMeta { node },
        })
    }

    /// A struct's fields, in name order.
    pub fn fields(&self) -> impl Iterator<Item = (&'r str, Field<'r>)> + 'r {
        let registry = self.registry;
        self.node
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(move |(name, node)| {
                (
                    name.as_str(),
                    Field {
                        schema: Schema::resolve(registry, node),
                        meta: FieldMeta { node },
                    },
                )
            })
    }

    /// The element schema of a list.
    pub fn items(&self) -> Option<Schema<'r>> {
        Some(Schema::resolve(self.registry, self.node.get("items")?))
    }

    /// The value schema of a map.
    pub fn values(&self) -> Option<Schema<'r>> {
        let values = self.node.get("additionalProperties")?;
        values
            .is_object()
            .then(|| Schema::resolve(self.registry, values))
    }

    /// `x-kubernetes-map-type` of a type (`atomic` for structs Kubernetes replaces whole).
    pub fn map_type(&self) -> Option<&'r str> {
        self.node
            .get("x-kubernetes-map-type")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-preserve-unknown-fields: true`.
    pub fn preserves_unknown(&self) -> bool {
        self.node
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// Fields a struct requires.
    pub fn required(&self) -> impl Iterator<Item = &'r str> + 'r {
        self.node
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

/// One field of a struct: its type and the metadata Kubernetes attaches to the field.
#[derive(Debug, Clone, Copy)]
pub struct Field<'r> {
    pub schema: Schema<'r>,
    pub meta: FieldMeta<'r>,
}

/// A field's patch and list metadata (the x-kubernetes-* extensions on the property).
#[derive(Debug, Clone, Copy)]
pub struct FieldMeta<'r> {
    node: &'r Value,
}

static NO_META: Value = Value::Null;

// The navigation API is whole for its users (validation, patching, OpenAPI and what comes next);
// in a binary crate the accessors no caller uses yet would warn.
#[allow(dead_code)]
impl<'r> FieldMeta<'r> {
    /// No metadata: what a map's values or an undeclared field have.
    pub fn none() -> Self {
        FieldMeta { node: &NO_META }
    }

    fn ext(&self, key: &str) -> Option<&'r str> {
        self.node.get(key).and_then(Value::as_str)
    }

    /// `x-kubernetes-patch-strategy`: merge, retainKeys, "merge,retainKeys" or replace.
    pub fn patch_strategy(&self) -> Option<&'r str> {
        self.ext("x-kubernetes-patch-strategy")
    }

    /// `x-kubernetes-patch-merge-key`: the field that identifies a list element.
    pub fn merge_key(&self) -> Option<&'r str> {
        self.ext("x-kubernetes-patch-merge-key")
    }

    /// `x-kubernetes-list-type`: atomic, set or map.
    pub fn list_type(&self) -> Option<&'r str> {
        self.ext("x-kubernetes-list-type")
    }

    /// `x-kubernetes-list-map-keys` of a `map` list.
    pub fn list_map_keys(&self) -> impl Iterator<Item = &'r str> + 'r {
        self.node
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    /// `x-kubernetes-map-type` of the field: atomic or granular.
    pub fn map_type(&self) -> Option<&'r str> {
        self.ext("x-kubernetes-map-type")
    }

    fn strategies(&self) -> impl Iterator<Item = &'r str> {
        self.patch_strategy()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
    }

    /// Strategic merge patch merges this list (by `merge_key` for lists of objects).
    pub fn merges(&self) -> bool {
        self.strategies().any(|s| s == "merge")
    }

    /// Strategic merge patch replaces this map whole.
    pub fn replaces(&self) -> bool {
        self.strategies().any(|s| s == "replace")
    }

    /// kubectl sends `$retainKeys` for this field (a union whose other members it clears).
    pub fn retains_keys(&self) -> bool {
        self.strategies().any(|s| s == "retainKeys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigates_from_a_kind_to_nested_fields() {
        let reg = registry();
        let deploy = reg.kind("apps", "v1", "Deployment").expect("Deployment");
        assert_eq!(deploy.name(), Some("io.k8s.api.apps.v1.Deployment"));
        assert_eq!(deploy.shape(), Shape::Object);
        let spec = deploy.field("spec").expect("spec").schema;
        assert_eq!(spec.name(), Some("io.k8s.api.apps.v1.DeploymentSpec"));
        let strategy = spec.field("strategy").expect("strategy");
        assert_eq!(strategy.meta.patch_strategy(), Some("retainKeys"));
        assert!(strategy.meta.retains_keys() && !strategy.meta.merges());
        let pod_spec = spec
            .field("template")
            .and_then(|t| t.schema.field("spec"))
            .expect("template.spec")
            .schema;
        let containers = pod_spec.field("containers").expect("containers");
        assert_eq!(containers.schema.shape(), Shape::List);
        assert_eq!(containers.meta.merge_key(), Some("name"));
        assert_eq!(containers.meta.list_type(), Some("map"));
        assert_eq!(
            containers.meta.list_map_keys().collect::<Vec<_>>(),
            ["name"]
        );
        let container = containers.schema.items().expect("items");
        assert_eq!(container.name(), Some("io.k8s.api.core.v1.Container"));
        assert_eq!(container.required().collect::<Vec<_>>(), ["name"]);
        let ports = container.field("ports").expect("ports");
        assert_eq!(
            ports.meta.list_map_keys().collect::<Vec<_>>(),
            ["containerPort", "protocol"]
        );
        let limits = container
            .field("resources")
            .and_then(|r| r.schema.field("limits"))
            .expect("limits")
            .schema;
        assert_eq!(limits.shape(), Shape::Map);
        assert_eq!(
            limits.values().and_then(|v| v.name()),
            Some("io.k8s.apimachinery.pkg.api.resource.Quantity")
        );
    }

    #[test]
    fn metadata_is_optional_and_kinds_carry_their_gvk() {
        let reg = registry();
        let cm = reg.kind("", "v1", "ConfigMap").expect("ConfigMap");
        assert_eq!(cm.required().count(), 0);
        assert_eq!(
            cm.node()["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "ConfigMap", "version": "v1"}])
        );
        let meta = cm.field("metadata").expect("metadata");
        assert!(meta.meta.node.get("allOf").is_some());
        assert!(meta.meta.node.get("description").is_some());
        let finalizers = meta.schema.field("finalizers").expect("finalizers");
        assert!(finalizers.meta.merges());
        assert_eq!(finalizers.meta.list_type(), Some("set"));
        let owners = meta
            .schema
            .field("ownerReferences")
            .expect("ownerReferences");
        assert_eq!(owners.meta.merge_key(), Some("uid"));
        let managed = meta.schema.field("managedFields").expect("managedFields");
        let fields_v1 = managed.schema.items().and_then(|i| i.field("fieldsV1"));
        assert_eq!(fields_v1.map(|f| f.schema.shape()), Some(Shape::FreeForm));
        let list = reg.list_schema_name("", "v1", "ConfigMap");
        assert_eq!(list, Some("io.k8s.api.core.v1.ConfigMapList"));
        assert_eq!(
            reg.kind("", "v1", "Pod")
                .and_then(|p| p.field("spec"))
                .and_then(|s| s.schema.field("nodeSelector"))
                .and_then(|f| f.meta.map_type()),
            Some("atomic")
        );
        assert_eq!(
            reg.schema("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
                .and_then(|s| s.map_type()),
            Some("atomic")
        );
    }

    #[test]
    fn closure_follows_references() {
        let reg = registry();
        let names = reg.closure(["io.k8s.api.core.v1.ConfigMap"]);
        assert!(names.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(names.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"));
        assert!(!names.contains("io.k8s.api.core.v1.PodSpec"));
    }
}
