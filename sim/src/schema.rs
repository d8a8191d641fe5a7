//! PVE's API schema: loading `apidoc.json`, finding the method for a request, validating parameters.

pub mod formats;
pub mod load;
pub mod propstring;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

pub use load::load_schema;

/// One API method as the schema describes it.
#[derive(Debug)]
pub struct MethodDef {
    pub method: String,
    /// Templated path, e.g. `/nodes/{node}/qemu/{vmid}/config`.
    pub path: String,
    pub name: String,
    pub allowtoken: bool,
    pub proxyto: Option<String>,
    /// `permissions.check`, if any.
    pub check: Option<Value>,
    /// `permissions.user` (`all`, `world`).
    pub perm_user: Option<String>,
    /// `parameters.properties`
    pub properties: serde_json::Map<String, Value>,
    pub additional_properties: bool,
    /// `[n]` keys: (prefix, first index, last index, schema key).
    pub indexed: Vec<IndexedKey>,
}

/// A property key like `net[n]` standing for `net0`…`net31`.
#[derive(Debug, Clone)]
pub struct IndexedKey {
    pub prefix: String,
    pub min: u32,
    pub max: u32,
    pub key: String,
}

impl MethodDef {
    /// The schema of a parameter, resolving `net5` to `net[n]`.
    pub fn property(&self, name: &str) -> Option<&Value> {
        if let Some(p) = self.properties.get(name) {
            return Some(p);
        }
        let ik = self.indexed.iter().find(|ik| {
            name.strip_prefix(ik.prefix.as_str())
                .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
                .filter(|rest| !(rest.len() > 1 && rest.starts_with('0')))
                .and_then(|rest| rest.parse::<u32>().ok())
                .is_some_and(|n| n >= ik.min && n <= ik.max)
        })?;
        self.properties.get(&ik.key)
    }
}

/// A node of the path tree (literal children first, then one `{param}` child, like PVE's
/// `find_handler`).
#[derive(Debug, Default)]
pub struct PathNode {
    pub literal: HashMap<String, PathNode>,
    pub param: Option<(String, Box<PathNode>)>,
    pub methods: HashMap<String, Arc<MethodDef>>,
}

/// The loaded schema.
#[derive(Debug)]
pub struct Schema {
    pub root: PathNode,
    pub method_count: usize,
}

/// A matched request: the method definition and the path parameters taken from the URL.
#[derive(Debug, Clone)]
pub struct Matched {
    pub def: Arc<MethodDef>,
    pub path_params: BTreeMap<String, String>,
}

impl Schema {
    /// Finds the method for `METHOD /rel/path` (path relative to `/api2/json`).
    pub fn find(&self, method: &str, rel_path: &str) -> Option<Matched> {
        let mut segments: Vec<&str> = rel_path.split('/').filter(|s| !s.is_empty()).collect();
        // pve-storage registers the storage content handlers with `fragmentDelimiter => ''` (`API2/Storage/Status.pm:37`),
        // so everything after `content/` is one `{volume}`, slashes included (pve-common `RESTHandler.pm:413-424`).
        let whole_volume = if let ["nodes", _, "storage", _, "content", _, _, ..] = segments.as_slice() { segments[5..].join("/") } else { String::new() };
        if !whole_volume.is_empty() {
            segments.truncate(5);
            segments.push(&whole_volume);
        }
        let mut params = BTreeMap::new();
        let node = find_node(&self.root, &segments, &mut params)?;
        let def = node.methods.get(method)?.clone();
        Some(Matched { def, path_params: params })
    }
}

fn find_node<'a>(node: &'a PathNode, segments: &[&str], params: &mut BTreeMap<String, String>) -> Option<&'a PathNode> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(node);
    };
    if let Some(child) = node.literal.get(*first) {
        if let Some(found) = find_node(child, rest, params) {
            return Some(found);
        }
    }
    let (name, child) = node.param.as_ref()?;
    let found = find_node(child, rest, params)?;
    params.insert(name.clone(), (*first).to_string());
    Some(found)
}
