//! OpenAPI v2 (Swagger 2.0) at /openapi/v2: one document with every path and definition,
//! derived from the OpenAPI v3 documents (`openapi`) so both always say the same thing.
//! kubectl still reads it: client-side validation of kinds whose v3 document has no PATCH
//! operation (TokenReview and the other reviews) uses v2, and client-go only accepts it as
//! gnostic's protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), so the
//! document is served as JSON or as that protobuf, whichever the client asks for.

use serde_json::{Map, Value, json};

const V3_REF: &str = "#/components/schemas/";
const V2_REF: &str = "#/definitions/";

/// The media type of gnostic's `openapi.v2.Document` protobuf as clients ask for it.
const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// Its older spelling, which is also the Content-Type of the answer: Go's media-type parser
/// refuses the `@`.
pub const PROTOBUF_OLD: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether the client asked for the protobuf form before JSON.
pub fn wants_protobuf(accept: &str) -> bool {
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or_default().trim();
        match media {
            PROTOBUF | PROTOBUF_OLD => return true,
            "application/json" | "application/*" | "*/*" => return false,
            _ => {}
        }
    }
    false
}

/// The v2 document made from the v3 group-version documents.
pub fn document(v3_docs: &[Value], version: &str) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for doc in v3_docs {
        if let Some(p) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in p {
                paths.insert(path.clone(), path_item(item));
            }
        }
        if let Some(s) = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, schema) in s {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| schema_v2(schema));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": paths,
        "definitions": definitions,
    })
}

/// A v3 schema in v2's dialect: `#/definitions/` references, a lone `allOf` reference as the
/// reference itself, and no v3-only keywords.
fn schema_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(all)) = map.get("allOf")
                && all.len() == 1
                && let Some(r) = all[0].get("$ref").and_then(Value::as_str)
            {
                return json!({"$ref": r.replacen(V3_REF, V2_REF, 1)});
            }
            let mut out = Map::new();
            for (k, v) in map {
                match k.as_str() {
                    "nullable" | "oneOf" | "anyOf" | "not" => {}
                    "$ref" => {
                        let r = v.as_str().unwrap_or_default();
                        out.insert(k.clone(), json!(r.replacen(V3_REF, V2_REF, 1)));
                    }
                    // Keys of these maps are names, not keywords.
                    "properties" => {
                        let props = v
                            .as_object()
                            .map(|p| p.iter().map(|(n, s)| (n.clone(), schema_v2(s))).collect())
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    _ if k.starts_with("x-") => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => {
                        out.insert(k.clone(), schema_v2(v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(schema_v2).collect()),
        other => other.clone(),
    }
}

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(map) = item.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in map {
        match k.as_str() {
            "get" | "put" | "post" | "delete" | "options" | "head" | "patch" => {
                out.insert(k.clone(), operation(v));
            }
            "parameters" => {
                out.insert(k.clone(), parameters(v, None));
            }
            _ if k.starts_with("x-") => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn parameters(params: &Value, body: Option<Value>) -> Value {
    let mut out: Vec<Value> = params
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let mut q = Map::new();
                    for key in ["name", "in", "description", "required"] {
                        if let Some(v) = p.get(key) {
                            q.insert(key.into(), v.clone());
                        }
                    }
                    if let Some(Value::Object(s)) = p.get("schema") {
                        for (k, v) in s {
                            q.insert(k.clone(), v.clone());
                        }
                    }
                    Value::Object(q)
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(b) = body {
        out.insert(0, b);
    }
    Value::Array(out)
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    let Some(map) = op.as_object() else {
        return Value::Object(out);
    };
    for key in ["description", "operationId", "tags", "deprecated"] {
        if let Some(v) = map.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for (k, v) in map {
        if k.starts_with("x-") {
            out.insert(k.clone(), v.clone());
        }
    }
    let body = map.get("requestBody").map(|rb| {
        let content = rb.get("content").and_then(Value::as_object);
        if let Some(c) = content {
            out.insert("consumes".into(), json!(c.keys().collect::<Vec<_>>()));
        }
        let schema = content
            .and_then(|c| c.values().next())
            .and_then(|m| m.get("schema"))
            .map(schema_v2)
            .unwrap_or_else(|| json!({}));
        json!({"name": "body", "in": "body", "required": rb.get("required").and_then(Value::as_bool).unwrap_or(true), "schema": schema})
    });
    out.insert(
        "parameters".into(),
        parameters(map.get("parameters").unwrap_or(&Value::Null), body),
    );
    let mut produces: Vec<String> = Vec::new();
    let mut responses = Map::new();
    if let Some(rs) = map.get("responses").and_then(Value::as_object) {
        for (code, r) in rs {
            let mut resp = Map::new();
            resp.insert(
                "description".into(),
                r.get("description").cloned().unwrap_or(json!("")),
            );
            if let Some(content) = r.get("content").and_then(Value::as_object) {
                for media in content.keys() {
                    if !produces.contains(media) {
                        produces.push(media.clone());
                    }
                }
                if let Some(s) = content.values().next().and_then(|m| m.get("schema")) {
                    resp.insert("schema".into(), schema_v2(s));
                }
            }
            responses.insert(code.clone(), Value::Object(resp));
        }
    }
    if !produces.is_empty() {
        out.insert("produces".into(), json!(produces));
    }
    out.insert("schemes".into(), json!(["https"]));
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// gnostic's openapi.v2 protobuf (field numbers from its OpenAPIv2.proto)

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(Vec::new())
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A message field; written even when empty, as presence matters for oneofs.
    fn message(&mut self, field: u32, inner: Writer) {
        self.bytes(field, &inner.0);
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// `Any{yaml}`: gnostic keeps free-form values as YAML text, and JSON is YAML.
fn any(v: &Value) -> Writer {
    let mut w = Writer::new();
    w.string(2, &v.to_string());
    w
}

/// Vendor extensions (`x-…`) of an object as `NamedAny`s in `field`.
fn extensions(w: &mut Writer, field: u32, obj: &Value) {
    if let Some(map) = obj.as_object() {
        for (k, v) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Writer::new();
            named.string(1, k);
            named.message(2, any(v));
            w.message(field, named);
        }
    }
}

pub fn protobuf(doc: &Value) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(1, str_of(doc, "swagger"));
    let info = &doc["info"];
    let mut i = Writer::new();
    i.string(1, str_of(info, "title"));
    i.string(2, str_of(info, "version"));
    w.message(2, i);
    let mut paths = Writer::new();
    if let Some(map) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in map {
            let mut named = Writer::new();
            named.string(1, path);
            named.message(2, path_item_pb(item));
            paths.message(2, named);
        }
    }
    w.message(8, paths);
    let mut defs = Writer::new();
    if let Some(map) = doc.get("definitions").and_then(Value::as_object) {
        for (name, schema) in map {
            let mut named = Writer::new();
            named.string(1, name);
            named.message(2, schema_pb(schema));
            defs.message(1, named);
        }
    }
    w.message(9, defs);
    w.0
}

fn path_item_pb(item: &Value) -> Writer {
    let mut w = Writer::new();
    for (field, verb) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(verb) {
            w.message(field, operation_pb(op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(9, parameter_pb(p));
    }
    extensions(&mut w, 10, item);
    w
}

fn strings(w: &mut Writer, field: u32, v: Option<&Value>) {
    for s in v.and_then(Value::as_array).into_iter().flatten() {
        if let Some(s) = s.as_str() {
            w.bytes(field, s.as_bytes());
        }
    }
}

fn operation_pb(op: &Value) -> Writer {
    let mut w = Writer::new();
    strings(&mut w, 1, op.get("tags"));
    w.string(3, str_of(op, "description"));
    w.string(5, str_of(op, "operationId"));
    strings(&mut w, 6, op.get("produces"));
    strings(&mut w, 7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(8, parameter_pb(p));
    }
    let mut responses = Writer::new();
    if let Some(map) = op.get("responses").and_then(Value::as_object) {
        for (code, r) in map {
            let mut resp = Writer::new();
            resp.string(1, str_of(r, "description"));
            if let Some(s) = r.get("schema") {
                let mut item = Writer::new();
                item.message(1, schema_pb(s));
                resp.message(2, item);
            }
            let mut value = Writer::new();
            value.message(1, resp);
            let mut named = Writer::new();
            named.string(1, code);
            named.message(2, value);
            responses.message(1, named);
        }
    }
    w.message(9, responses);
    strings(&mut w, 10, op.get("schemes"));
    w.boolean(
        11,
        op.get("deprecated").and_then(Value::as_bool) == Some(true),
    );
    extensions(&mut w, 13, op);
    w
}

/// `ParametersItem{parameter: Parameter{body_parameter | non_body_parameter}}`.
fn parameter_pb(p: &Value) -> Writer {
    let location = str_of(p, "in");
    let required = p.get("required").and_then(Value::as_bool) == Some(true);
    let mut param = Writer::new();
    if location == "body" {
        let mut b = Writer::new();
        b.string(1, str_of(p, "description"));
        b.string(2, str_of(p, "name"));
        b.string(3, location);
        b.boolean(4, required);
        if let Some(s) = p.get("schema") {
            b.message(5, schema_pb(s));
        }
        param.message(1, b);
    } else {
        // Query and path sub-schemas share their first fields; their type and the rest differ.
        let mut s = Writer::new();
        s.boolean(1, required);
        s.string(2, location);
        s.string(3, str_of(p, "description"));
        s.string(4, str_of(p, "name"));
        let (type_field, unique_field, ext_field, which) = match location {
            "path" => (5, 19, 22, 4),
            "header" => (5, 19, 22, 1),
            _ => (6, 20, 23, 3),
        };
        s.string(type_field, str_of(p, "type"));
        s.boolean(
            unique_field,
            p.get("uniqueItems").and_then(Value::as_bool) == Some(true),
        );
        extensions(&mut s, ext_field, p);
        let mut non_body = Writer::new();
        non_body.message(which, s);
        param.message(2, non_body);
    }
    let mut item = Writer::new();
    item.message(1, param);
    item
}

fn schema_pb(s: &Value) -> Writer {
    let mut w = Writer::new();
    w.string(1, str_of(s, "$ref"));
    w.string(2, str_of(s, "format"));
    w.string(3, str_of(s, "title"));
    w.string(4, str_of(s, "description"));
    if let Some(d) = s.get("default") {
        w.message(5, any(d));
    }
    if let Some(v) = s.get("multipleOf").and_then(Value::as_f64) {
        w.double(6, v);
    }
    if let Some(v) = s.get("maximum").and_then(Value::as_f64) {
        w.double(7, v);
    }
    w.boolean(
        8,
        s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true),
    );
    if let Some(v) = s.get("minimum").and_then(Value::as_f64) {
        w.double(9, v);
    }
    w.boolean(
        10,
        s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true),
    );
    for (field, key) in [
        (11, "maxLength"),
        (12, "minLength"),
        (14, "maxItems"),
        (15, "minItems"),
        (17, "maxProperties"),
        (18, "minProperties"),
    ] {
        if let Some(v) = s.get(key).and_then(Value::as_i64) {
            w.int64(field, v);
        }
    }
    w.string(13, str_of(s, "pattern"));
    w.boolean(
        16,
        s.get("uniqueItems").and_then(Value::as_bool) == Some(true),
    );
    strings(&mut w, 19, s.get("required"));
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(20, any(e));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Writer::new();
            a.key(2, 0);
            a.varint(u64::from(*b));
            w.message(21, a);
        }
        Some(extra @ Value::Object(_)) => {
            let mut a = Writer::new();
            a.message(1, schema_pb(extra));
            w.message(21, a);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut t_w = Writer::new();
            t_w.string(1, t);
            w.message(22, t_w);
        }
        Some(Value::Array(ts)) => {
            let mut t_w = Writer::new();
            strings(&mut t_w, 1, Some(&Value::Array(ts.clone())));
            w.message(22, t_w);
        }
        _ => {}
    }
    if let Some(items) = s.get("items") {
        let mut i = Writer::new();
        match items {
            Value::Array(list) => {
                for item in list {
                    i.message(1, schema_pb(item));
                }
            }
            single => i.message(1, schema_pb(single)),
        }
        w.message(23, i);
    }
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(24, schema_pb(a));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let mut p = Writer::new();
        for (name, schema) in props {
            let mut named = Writer::new();
            named.string(1, name);
            named.message(2, schema_pb(schema));
            p.message(1, named);
        }
        w.message(25, p);
    }
    w.boolean(27, s.get("readOnly").and_then(Value::as_bool) == Some(true));
    extensions(&mut w, 31, s);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_becomes_swagger_2() {
        let v3 = json!({"paths": {"/api/v1/pods": {"post": {"operationId": "create",
            "parameters": [{"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
            "requestBody": {"content": {"*/*": {"schema": {"$ref": "#/components/schemas/P"}}}, "required": true},
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/P"}}}}},
            "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "Pod"}}}},
            "components": {"schemas": {"P": {"type": "object", "properties": {
                "spec": {"allOf": [{"$ref": "#/components/schemas/S"}], "description": "d"},
                "n": {"type": "string", "nullable": true}}}}}});
        let v2 = document(&[v3], "v1.33.0");
        assert_eq!(v2["swagger"], "2.0");
        let post = &v2["paths"]["/api/v1/pods"]["post"];
        assert_eq!(post["parameters"][0]["in"], "body");
        assert_eq!(post["parameters"][0]["schema"]["$ref"], "#/definitions/P");
        assert_eq!(post["parameters"][1]["type"], "string");
        assert_eq!(
            post["responses"]["200"]["schema"]["$ref"],
            "#/definitions/P"
        );
        assert_eq!(post["consumes"], json!(["*/*"]));
        assert_eq!(
            v2["definitions"]["P"]["properties"]["spec"],
            json!({"$ref": "#/definitions/S"})
        );
        assert!(
            v2["definitions"]["P"]["properties"]["n"]
                .get("nullable")
                .is_none()
        );
        let pb = protobuf(&v2);
        // Field 1 (swagger) first: tag 0x0a, length 3, "2.0".
        assert_eq!(&pb[..5], b"\x0a\x032.0");
    }

    #[test]
    fn protobuf_is_chosen_only_when_asked_for_first() {
        assert!(wants_protobuf(PROTOBUF));
        assert!(wants_protobuf(&format!("{PROTOBUF}, application/json")));
        assert!(!wants_protobuf(&format!("application/json, {PROTOBUF}")));
        assert!(!wants_protobuf(""));
    }
}
