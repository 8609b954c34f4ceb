//! Builds `schema.txt` from the crates that already describe the built-in API, so the table is
//! derived rather than hand-written:
//! - `k8s-pb` (prost code generated from Kubernetes' generated.proto): field numbers, wire types,
//!   repeated/map, nested message types;
//! - `k8s-openapi`: the exact JSON property names (prost snake-cases the proto names, which ARE
//!   the JSON names, so `heck` snake case of a JSON name finds its field), which kinds exist,
//!   and which proto fields are Go `json:",inline"` (a message field with no JSON property of
//!   its own, whose message's properties sit in the parent's schema instead);
//! - `go_zero_fields.txt`: the scalar fields whose zero value Go's JSON writes (pointers and
//!   fields without `omitempty`), which neither crate records. It was listed from the struct
//!   tags in k8s.io/api and k8s.io/apimachinery `types.go`; entries for fields these crates do
//!   not have yet are ignored.
//!
//! `KCLUSTER_REGENERATE_PROTOBUF_SCHEMA=1 cargo test protobuf::generate` rewrites the table after
//! a k8s-pb or k8s-openapi upgrade; otherwise the test fails when the table is out of date.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use heck::ToSnakeCase;

/// CRD schemas (JSONSchemaProps and its JSON-or-bool unions) come from `kubectl apply -f` as
/// JSON, never from a typed protobuf client; leaving them out spares the table their unions.
const SKIPPED_MODULES: &[&str] = &["apiextensions_apiserver", "kube_aggregator", "metrics"];
/// Meta kinds clients send under whichever group-version they talk to.
const ANY_VERSION_ROOTS: &[(&str, &str)] = &[("DeleteOptions", "apimachinery/pkg/apis/meta/v1")];

#[derive(Debug, Clone)]
enum PbType {
    Scalar(String),
    Message { module: String, name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PbShape {
    Single,
    Repeated,
    Map,
}

#[derive(Debug, Clone)]
struct PbField {
    tag: u32,
    name: String,
    ty: PbType,
    shape: PbShape,
}

#[derive(Debug, Default)]
struct OpenApiType {
    /// The Go (and k8s-openapi) spelling, which prost may have re-cased.
    name: String,
    json: Vec<String>,
    root: Option<(String, String)>,
}

type Key = (String, String); // (module, lowercased name)

fn key(module: &str, name: &str) -> Key {
    (module.to_string(), name.to_lowercase())
}

fn crate_dirs() -> HashMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version=1", "--offline"])
        // Only the host's dependencies are downloaded; other platforms' would need the network.
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let mut dirs = HashMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().unwrap_or_default();
        if name == "k8s-pb" || name == "k8s-openapi" {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest path"));
            let dir = manifest.parent().expect("crate dir").to_path_buf();
            assert!(
                dirs.insert(name.to_string(), dir).is_none(),
                "two versions of {name} in the dependency graph"
            );
        }
    }
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read crate dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> String {
    let rel = file
        .parent()
        .expect("parent")
        .strip_prefix(root)
        .expect("under root");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// prost-build output is regular: `#[prost(...)]` then `pub name: Type,` inside brace-free
/// struct bodies, so a small scanner reads it.
fn parse_pb(root: &Path) -> BTreeMap<Key, (String, String, Vec<PbField>)> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut messages = BTreeMap::new();
    for file in files {
        let module = module_of(root, &file);
        let source = std::fs::read_to_string(&file).expect("read k8s-pb source");
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = code.as_str();
        while let Some(at) = rest.find("pub struct ") {
            rest = &rest[at + "pub struct ".len()..];
            let name_end = rest.find([' ', '{', '(']).expect("struct name");
            let name = rest[..name_end].to_string();
            let open = rest.find('{').expect("struct body");
            let close = rest.find('}').expect("struct end");
            let body = &rest[open + 1..close];
            let fields = parse_pb_fields(&module, body);
            messages.insert(key(&module, &name), (module.clone(), name, fields));
            rest = &rest[close..];
        }
    }
    messages
}

fn parse_pb_fields(module: &str, body: &str) -> Vec<PbField> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("#[prost(") {
        rest = &rest[at + "#[prost(".len()..];
        let attr_end = rest.find(")]").expect("prost attribute end");
        let attr = &rest[..attr_end];
        rest = &rest[attr_end + 2..];
        let decl_at = rest.find("pub ").expect("field after attribute");
        rest = &rest[decl_at + 4..];
        let colon = rest.find(':').expect("field name");
        let name = rest[..colon].trim().trim_start_matches("r#").to_string();
        rest = &rest[colon + 1..];
        let mut depth = 0i32;
        let ty_end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let rust_ty: String = rest[..ty_end].split_whitespace().collect();
        rest = &rest[ty_end..];

        let tag = attr
            .split("tag = \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .and_then(|t| t.parse().ok())
            .expect("prost tag");
        let (shape, kind) = if let Some(map) = attr.strip_prefix("btree_map = \"") {
            let value = map.split('"').next().expect("map types");
            let (k, v) = value.split_once(", ").expect("map key, value");
            assert_eq!(k, "string", "map keys are strings in Kubernetes");
            (PbShape::Map, v.to_string())
        } else {
            let kind = attr
                .split([',', ' '])
                .next()
                .expect("prost kind")
                .to_string();
            let shape = if attr.contains("repeated") {
                PbShape::Repeated
            } else {
                PbShape::Single
            };
            (shape, kind)
        };
        let ty = if kind == "message" {
            PbType::Message {
                module: String::new(),
                name: String::new(),
            }
            .resolved(module, &rust_ty)
        } else {
            PbType::Scalar(kind)
        };
        fields.push(PbField {
            tag,
            name,
            ty,
            shape,
        });
    }
    fields
}

impl PbType {
    /// The message named by the innermost type path of a Rust type (inside Option, Vec, Box or
    /// the map's value), relative to `module`.
    fn resolved(self, module: &str, rust_ty: &str) -> PbType {
        let mut ty = rust_ty;
        if let Some(inner) = ty.strip_prefix("::prost::alloc::collections::BTreeMap<") {
            ty = inner.split_once(',').expect("map value").1;
        }
        let path = ty
            .split(['<', '>', ','])
            .filter(|s| !s.is_empty())
            .rfind(|s| !s.starts_with("::"))
            .expect("message path");
        let mut segments: Vec<&str> = module.split('/').filter(|s| !s.is_empty()).collect();
        let parts: Vec<&str> = path.split("::").collect();
        let (name, prefix) = parts.split_last().expect("type name");
        for p in prefix {
            if *p == "super" {
                segments.pop();
            } else {
                segments.push(p);
            }
        }
        PbType::Message {
            module: segments.join("/"),
            name: name.to_string(),
        }
    }
}

fn parse_openapi(root: &Path) -> HashMap<Key, OpenApiType> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut types = HashMap::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        let module = module_of(root, &file);
        let source = std::fs::read_to_string(&file).expect("read k8s-openapi source");
        let Some(at) = source.find("pub struct ") else {
            continue;
        };
        let rest = &source[at + "pub struct ".len()..];
        let name = rest[..rest.find([' ', '{', '(', '<']).expect("struct name")].to_string();
        let json = source
            .lines()
            .filter_map(|l| {
                let (lhs, _) = l.trim().split_once(" => Field::Key_")?;
                Some(lhs.strip_prefix('"')?.strip_suffix('"')?.to_string())
            })
            .collect();
        let constant = |c: &str| {
            let at = source.find(&format!("const {c}: &'static str = \""))?;
            let rest = &source[at..];
            Some(rest.split('"').nth(1)?.to_string())
        };
        let root = match (constant("API_VERSION"), constant("KIND")) {
            (Some(v), Some(k)) if source.contains("impl crate::Resource for ") => Some((v, k)),
            _ => None,
        };
        types.insert(key(&module, &name), OpenApiType { name, json, root });
    }
    types
}

fn special(module: &str, name: &str) -> Option<&'static str> {
    Some(match (module, name) {
        ("apimachinery/pkg/apis/meta/v1", "Time") => "time",
        ("apimachinery/pkg/apis/meta/v1", "MicroTime") => "microtime",
        ("apimachinery/pkg/apis/meta/v1", "Duration") => "duration",
        ("apimachinery/pkg/apis/meta/v1", "FieldsV1") => "fieldsv1",
        ("apimachinery/pkg/util/intstr", "IntOrString") => "intstr",
        ("apimachinery/pkg/api/resource", "Quantity") => "quantity",
        ("apimachinery/pkg/runtime", "RawExtension") => "rawext",
        _ => return None,
    })
}

struct Generator {
    pb: BTreeMap<Key, (String, String, Vec<PbField>)>,
    openapi: HashMap<Key, OpenApiType>,
    zero: BTreeSet<String>,
    zero_used: BTreeSet<String>,
    /// JSON names for inline-embedded messages that have no k8s-openapi type of their own.
    inline_json: HashMap<Key, Vec<String>>,
    errors: Vec<String>,
}

impl Generator {
    fn table_name(&self, k: &Key) -> String {
        let (module, pb_name, _) = &self.pb[k];
        let name = self.openapi.get(k).map_or(pb_name.as_str(), |o| &o.name);
        format!("{}.{name}", module.replace('/', "."))
    }

    /// A list-of-strings wrapper (authentication's ExtraValue): JSON has only the array.
    fn is_strings_wrapper(&self, k: &Key) -> bool {
        let (_, _, fields) = &self.pb[k];
        !self.openapi.contains_key(k)
            && matches!(&fields[..], [f] if f.tag == 1 && f.shape == PbShape::Repeated
                && matches!(&f.ty, PbType::Scalar(s) if s == "string"))
    }

    fn type_name(&mut self, ty: &PbType, queue: &mut Vec<Key>) -> String {
        match ty {
            PbType::Scalar(s) => match s.as_str() {
                "string" | "bytes" | "bool" | "int32" | "int64" | "double" => s.clone(),
                other => {
                    self.errors.push(format!("unhandled scalar {other}"));
                    other.to_string()
                }
            },
            PbType::Message { module, name } => {
                if let Some(s) = special(module, name) {
                    return s.to_string();
                }
                let k = key(module, name);
                if !self.pb.contains_key(&k) {
                    self.errors
                        .push(format!("no k8s-pb message {module}/{name}"));
                    return name.clone();
                }
                if self.is_strings_wrapper(&k) {
                    return "strings".into();
                }
                queue.push(k.clone());
                self.table_name(&k)
            }
        }
    }

    fn message_lines(&mut self, k: &Key, queue: &mut Vec<Key>) -> String {
        let (module, pb_name, fields) = self.pb[k].clone();
        let name = self.table_name(k);
        let (json, go_name) = match (self.openapi.get(k), self.inline_json.get(k)) {
            (Some(o), _) => (o.json.clone(), o.name.clone()),
            // k8s-openapi flattens inline-only structs (IngressRuleValue) away.
            (None, Some(parent)) => (parent.clone(), pb_name),
            (None, None) => {
                self.errors.push(format!("{name} has no k8s-openapi type"));
                return String::new();
            }
        };
        let mut out = format!("={name}\n");
        for f in &fields {
            let json_name = match (find_json(&json, &f.name), &f.ty, f.shape) {
                (Some(j), _, _) => j.to_string(),
                (None, PbType::Message { module: m, name: n }, PbShape::Single)
                    if self.fits_inline(&key(m, n), &json) =>
                {
                    self.inline_json.insert(key(m, n), json.clone());
                    "+".into()
                }
                (None, _, _) => {
                    self.errors
                        .push(format!("{name}.{}: no JSON property matches", f.name));
                    continue;
                }
            };
            let ty = self.type_name(&f.ty, queue);
            let prefix = match f.shape {
                PbShape::Single => "",
                PbShape::Repeated => "[]",
                PbShape::Map => "{}",
            };
            let zero_key = format!("k8s.io.{}.{go_name}.{json_name}", module.replace('/', "."));
            let keep_zero = self.zero.contains(&zero_key);
            if keep_zero {
                self.zero_used.insert(zero_key);
            }
            let scalar = matches!(f.ty, PbType::Scalar(_)) && f.shape == PbShape::Single;
            let z = if keep_zero && scalar { " z" } else { "" };
            let _ = writeln!(out, "{} {json_name} {prefix}{ty}{z}", f.tag);
        }
        out
    }

    /// Go's `json:",inline"`: every field of the embedded message is a property of the parent.
    fn fits_inline(&self, child: &Key, parent_json: &[String]) -> bool {
        let Some((_, _, fields)) = self.pb.get(child) else {
            return false;
        };
        !fields.is_empty()
            && fields.iter().all(|f| {
                find_json(parent_json, &f.name).is_some()
                    || matches!(&f.ty, PbType::Message { module, name }
                        if f.shape == PbShape::Single
                            && self.fits_inline(&key(module, name), parent_json))
            })
    }
}

/// The JSON property a prost field came from. Proto names are the JSON names except where Go's
/// generator took the Go field name (`uID` for `uid`, `aPIGroup` for `apiGroup`), so a
/// case- and underscore-blind comparison is the fallback.
fn find_json<'j>(json: &'j [String], pb_name: &str) -> Option<&'j str> {
    if let Some(j) = json.iter().find(|j| j.to_snake_case() == pb_name) {
        return Some(j);
    }
    let flat = |s: &str| s.replace('_', "").to_lowercase();
    let mut matches = json.iter().filter(|j| flat(j) == flat(pb_name));
    match (matches.next(), matches.next()) {
        (Some(j), None) => Some(j),
        _ => None,
    }
}

fn generate() -> String {
    let dirs = crate_dirs();
    let pb_root = dirs["k8s-pb"].join("src");
    // k8s-pb follows a newer Kubernetes than the one we serve, and JSON names never change
    // between versions, so every version k8s-openapi carries contributes names and kinds.
    let mut openapi: HashMap<Key, OpenApiType> = HashMap::new();
    let mut versions: Vec<PathBuf> = std::fs::read_dir(dirs["k8s-openapi"].join("src"))
        .expect("k8s-openapi src")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("v1_"))
        })
        .collect();
    versions.sort();
    for version in versions {
        for (k, t) in parse_openapi(&version) {
            let entry = openapi.entry(k).or_default();
            entry.name = t.name;
            entry.json.extend(t.json);
            entry.json.sort();
            entry.json.dedup();
            entry.root = entry.root.take().or(t.root);
        }
    }
    let zero_list = include_str!("go_zero_fields.txt");
    let mut g = Generator {
        pb: parse_pb(&pb_root),
        openapi,
        zero: zero_list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        zero_used: BTreeSet::new(),
        inline_json: HashMap::new(),
        errors: Vec::new(),
    };

    let mut roots: BTreeMap<(String, String), Key> = BTreeMap::new();
    for (k, o) in &g.openapi {
        let Some((api_version, kind)) = &o.root else {
            continue;
        };
        if SKIPPED_MODULES.iter().any(|m| k.0.starts_with(m)) || !g.pb.contains_key(k) {
            continue;
        }
        roots.insert((api_version.clone(), kind.clone()), k.clone());
    }
    for (kind, module) in ANY_VERSION_ROOTS {
        roots.insert(("*".into(), kind.to_string()), key(module, kind));
    }

    let mut queue: Vec<Key> = roots.values().cloned().collect();
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    while let Some(k) = queue.pop() {
        if !seen.insert(k.clone()) {
            continue;
        }
        let lines = g.message_lines(&k, &mut queue);
        bodies.insert(g.table_name(&k), lines);
    }

    let mut out = String::from(
        "# @generated by src/apiserver/protobuf/generate.rs from k8s-pb, k8s-openapi and\n\
         # go_zero_fields.txt; see schema.rs for the format. Do not edit.\n",
    );
    for ((api_version, kind), k) in &roots {
        let _ = writeln!(out, "@{api_version} {kind} {}", g.table_name(k));
    }
    for body in bodies.values() {
        out.push_str(body);
    }
    assert!(
        g.errors.is_empty(),
        "schema generation:\n{}",
        g.errors.join("\n")
    );
    let unused: Vec<_> = g.zero.difference(&g.zero_used).collect();
    assert!(
        unused.is_empty(),
        "go_zero_fields.txt names fields no built-in kind reaches (k8s-pb dropped them? delete \
         those lines): {unused:?}"
    );
    out
}

#[test]
fn schema_table_is_current() {
    let fresh = generate();
    if fresh == super::schema::TABLE {
        return;
    }
    if std::env::var_os("KCLUSTER_REGENERATE_PROTOBUF_SCHEMA").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apiserver/protobuf/schema.txt");
        std::fs::write(&path, &fresh).expect("write schema.txt");
        return;
    }
    panic!(
        "src/apiserver/protobuf/schema.txt is out of date; rerun with \
         KCLUSTER_REGENERATE_PROTOBUF_SCHEMA=1 cargo test protobuf::generate"
    );
}
