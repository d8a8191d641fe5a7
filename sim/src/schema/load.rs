//! Reads `apidoc.json` (the API viewer's tree) into the path tree used for lookups.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{IndexedKey, MethodDef, PathNode, Schema};

/// Errors reading the schema file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read PVE API schema '{path}': {source}")]
    Read { path: String, source: std::io::Error },
    #[error("PVE API schema '{path}' is not valid JSON: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("PVE API schema '{0}' is not an array of path nodes")]
    Shape(String),
}

/// Loads and indexes the schema at `path`.
pub fn load_schema(path: &Path) -> Result<Schema, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: shown.clone(), source })?;
    let tree: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json { path: shown.clone(), source })?;
    let Value::Array(nodes) = tree else {
        return Err(LoadError::Shape(shown));
    };
    let mut schema = Schema { root: PathNode::default(), method_count: 0 };
    for node in &nodes {
        add_node(&mut schema, node);
    }
    Ok(schema)
}

fn add_node(schema: &mut Schema, node: &Value) {
    if let (Some(path), Some(info)) = (node.get("path").and_then(Value::as_str), node.get("info").and_then(Value::as_object)) {
        for (method, def) in info {
            let def = method_def(method, path, def);
            let slot = path_slot(&mut schema.root, path);
            slot.methods.insert(method.clone(), Arc::new(def));
            schema.method_count += 1;
        }
    }
    if let Some(children) = node.get("children").and_then(Value::as_array) {
        for child in children {
            add_node(schema, child);
        }
    }
}

fn path_slot<'a>(root: &'a mut PathNode, path: &str) -> &'a mut PathNode {
    let mut node = root;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let slot = node.param.get_or_insert_with(|| (name.to_string(), Box::default()));
            node = slot.1.as_mut();
        } else {
            node = node.literal.entry(seg.to_string()).or_default();
        }
    }
    node
}

fn method_def(method: &str, path: &str, def: &Value) -> MethodDef {
    let params = def.get("parameters");
    let properties = params
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let additional_properties = params
        .and_then(|p| p.get("additionalProperties"))
        .map(truthy)
        .unwrap_or(false);
    let indexed = properties
        .iter()
        .filter_map(|(key, schema)| indexed_key(key, schema))
        .collect();
    let permissions = def.get("permissions");
    MethodDef {
        method: method.to_string(),
        path: path.to_string(),
        name: def.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        allowtoken: def.get("allowtoken").map(truthy).unwrap_or(true),
        proxyto: def.get("proxyto").and_then(Value::as_str).map(str::to_string),
        check: permissions.and_then(|p| p.get("check")).cloned(),
        perm_user: permissions.and_then(|p| p.get("user")).and_then(Value::as_str).map(str::to_string),
        properties,
        additional_properties,
        indexed,
    }
}

/// Perl truthiness of a schema flag (`1`, `"1"`, `true`).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != "0",
        Value::Null => false,
        _ => true,
    }
}

/// `net[n]` → prefix `net` with the range from the description ("n is 0 to 30"), or PVE's
/// source limits where the description gives none.
fn indexed_key(key: &str, schema: &Value) -> Option<IndexedKey> {
    let prefix = key.strip_suffix("[n]")?;
    let desc = schema.get("description").and_then(Value::as_str).unwrap_or_default();
    let (min, max) = range_from_description(desc).unwrap_or_else(|| default_range(prefix));
    Some(IndexedKey { prefix: prefix.to_string(), min, max, key: key.to_string() })
}

fn range_from_description(desc: &str) -> Option<(u32, u32)> {
    let at = desc.find("n is ")?;
    let rest = &desc[at + 5..];
    let mut words = rest.split(|c: char| c.is_whitespace() || c == ')' || c == ',' || c == '.');
    let min = words.next()?.parse().ok()?;
    if words.next()? != "to" {
        return None;
    }
    let max = words.next()?.parse().ok()?;
    Some((min, max))
}

fn default_range(prefix: &str) -> (u32, u32) {
    match prefix {
        "net" | "ipconfig" => (0, 31),
        "mp" | "unused" => (0, 255),
        "dev" => (0, 255),
        "hostpci" => (0, 15),
        "serial" | "parallel" => (0, 3),
        "usb" => (0, 13),
        "numa" => (0, 7),
        "virtiofs" => (0, 9),
        _ => (0, 255),
    }
}
