//! The exported resource block as configuration, and the plan: every attribute of the table compared the way
//! terraform-plugin-sdk v2.40.1 compares it (`helper/schema/schema.go` `diffString`/`diffList`, cited per rule
//! in `bpg-source-facts.json` under `sdk_semantics`), then the paths `lifecycle { ignore_changes }` names
//! dropped, as Terraform core does for a legacy-SDK provider (`node_resource_abstract_instance.go` `plan()`).

use ::hcl::expr::Expression;

use super::schema::{Attr, Compare, Replace, Ty};
use super::{Change, ModelError, Tree, Value};

/// The resource block of `main_tf` as a tree, checked against `table`, and the names in `ignore_changes`.
pub fn configuration(main_tf: &str, resource: &'static str, table: &[Attr]) -> Result<(Tree, Vec<String>), ModelError> {
    let body = ::hcl::parse(main_tf).map_err(|e| ModelError::Hcl(e.to_string()))?;
    let block = body
        .blocks()
        .find(|b| b.identifier() == "resource" && b.labels().first().map(|l| l.as_str()) == Some(resource))
        .ok_or(ModelError::NoResource(resource))?;
    let mut ignored = Vec::new();
    for lifecycle in block.body().blocks().filter(|b| b.identifier() == "lifecycle") {
        for attr in lifecycle.body().attributes().filter(|a| a.key() == "ignore_changes") {
            let Expression::Array(items) = attr.expr() else { return Err(ModelError::UnknownAttribute("lifecycle.ignore_changes (not a list)".into())) };
            for item in items {
                match item {
                    Expression::Variable(v) => ignored.push(v.as_str().to_owned()),
                    other => return Err(ModelError::UnknownAttribute(format!("lifecycle.ignore_changes item {other:?}"))),
                }
            }
        }
    }
    Ok((tree(block.body(), "", table)?, ignored))
}

/// The table's entry for `path`.
fn find<'t>(table: &'t [Attr], path: &str) -> Option<&'t Attr> {
    table.iter().find(|a| a.path == path)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn tree(body: &::hcl::Body, prefix: &str, table: &[Attr]) -> Result<Tree, ModelError> {
    let mut t = Tree::new();
    for attr in body.attributes() {
        let path = join(prefix, attr.key());
        let known = find(table, &path).ok_or_else(|| ModelError::UnknownAttribute(path.clone()))?;
        let value = match (attr.expr(), known.ty) {
            (Expression::Array(items), Ty::List) => Value::List(items.iter().map(|i| primitive(i, &path)).collect::<Result<_, _>>()?),
            (e, Ty::Str | Ty::Int | Ty::Float | Ty::Bool) => Value::Text(primitive(e, &path)?),
            (_, ty) => return Err(ModelError::Shape { path, written: "an attribute", schema: shape(ty) }),
        };
        t.insert(attr.key().to_owned(), value);
    }
    for block in body.blocks().filter(|b| !(prefix.is_empty() && b.identifier() == "lifecycle")) {
        let path = join(prefix, block.identifier());
        let known = find(table, &path).ok_or_else(|| ModelError::UnknownAttribute(path.clone()))?;
        if known.ty != Ty::Block {
            return Err(ModelError::Shape { path, written: "a block", schema: shape(known.ty) });
        }
        let inner = tree(block.body(), &path, table)?;
        match t.entry(block.identifier().to_owned()).or_insert_with(|| Value::Blocks(vec![])) {
            Value::Blocks(list) => list.push(inner),
            _ => unreachable!("a name is either an attribute or a block: the table says which"),
        }
    }
    Ok(t)
}

fn shape(ty: Ty) -> &'static str {
    match ty {
        Ty::Block => "a block",
        Ty::List => "a list",
        _ => "a single value",
    }
}

fn primitive(e: &Expression, path: &str) -> Result<String, ModelError> {
    match e {
        Expression::String(s) => Ok(s.clone()),
        Expression::Number(n) => Ok(n.to_string()),
        Expression::Bool(b) => Ok(b.to_string()),
        other => Err(ModelError::UnknownAttribute(format!("{path} = {other:?} (only literal values are modelled)"))),
    }
}

/// The changes between `config` and `state` for every attribute in `table`, without those under `ignored`.
pub fn plan(table: &[Attr], config: &Tree, state: &Tree, ignored: &[String]) -> Vec<Change> {
    let mut out = Vec::new();
    level(table, "", "", config, state, &mut out);
    out.retain(|c| !ignored.iter().any(|i| c.path == *i || c.path.starts_with(&format!("{i}."))));
    out
}

/// Compares one level of nesting: `schema_prefix` without indexes (`disk`), `at` with them (`disk.1`).
fn level(table: &[Attr], schema_prefix: &str, at: &str, config: &Tree, state: &Tree, out: &mut Vec<Change>) {
    let children = table.iter().filter(|a| match a.path.rsplit_once('.') {
        Some((parent, _)) => parent == schema_prefix,
        None => schema_prefix.is_empty(),
    });
    for attr in children {
        let name = attr.path.rsplit('.').next().unwrap_or(attr.path);
        let path = join(at, name);
        let (cfg, st) = (config.get(name), state.get(name));
        match attr.ty {
            Ty::Block => blocks(table, attr, &path, cfg, st, out),
            Ty::List => {
                let to_list = |v: Option<&Value>| match v {
                    Some(Value::List(l)) => l.clone(),
                    _ => vec![],
                };
                if cfg.is_none() && attr.computed {
                    continue;
                }
                let (mut new, mut old) = (to_list(cfg), to_list(st));
                if attr.compare == Compare::Unordered {
                    new.sort();
                    old.sort();
                }
                if new != old {
                    out.push(Change { path, state: format!("{old:?}"), config: format!("{new:?}"), replace: attr.replace == Replace::Always });
                }
            }
            _ => {
                let text = |v: Option<&Value>| match v {
                    Some(Value::Text(s)) => Some(s.clone()),
                    _ => None,
                };
                let Some(new) = text(cfg).or_else(|| attr.default.map(str::to_owned)).or_else(|| (!attr.computed).then(String::new)) else { continue };
                let old = text(st).unwrap_or_default();
                if let Some(change) = primitive_change(attr, path, old, new, cfg.is_some()) {
                    out.push(change);
                }
            }
        }
    }
}

/// SDK v2 `diffString`: an absent value compares as the type's zero value; StateFunc and DiffSuppress applied.
fn primitive_change(attr: &Attr, path: String, old: String, new: String, configured: bool) -> Option<Change> {
    let new = match attr.compare {
        Compare::TrimSpace if !new.is_empty() => new.trim().replace("\r\n", "\n"),
        Compare::TrimNewline if !new.is_empty() => format!("{}\n", new.trim().replace("\r\n", "\n")),
        _ => new,
    };
    let suppressed = match attr.compare {
        Compare::SuppressEmptyConfig => new.is_empty() || !configured,
        Compare::Volume => old == new || old.starts_with(&format!("{new}:")),
        Compare::LeadingSlash => old == new || format!("/{old}") == new,
        _ => false,
    };
    if suppressed || same(attr.ty, &old, &new) {
        return None;
    }
    let replace = match attr.replace {
        Replace::Never => false,
        Replace::Always => true,
        Replace::WhenShrinks => old.parse::<f64>().unwrap_or(0.0) > new.parse::<f64>().unwrap_or(0.0),
        Replace::BetweenNonEmpty => !old.is_empty() && !new.is_empty(),
    };
    Some(Change { path, state: old, config: new, replace })
}

/// Equality after the SDK's weak decoding: `""` is false / 0, `1` is true.
fn same(ty: Ty, old: &str, new: &str) -> bool {
    match ty {
        Ty::Bool => {
            let b = |s: &str| matches!(s, "true" | "1");
            b(old) == b(new)
        }
        Ty::Int | Ty::Float => {
            let n = |s: &str| if s.is_empty() { Some(0.0) } else { s.parse::<f64>().ok() };
            n(old) == n(new) && n(old).is_some()
        }
        _ => old == new,
    }
}

/// A block list: its count, then each element (paired by key where the list is unordered).
fn blocks(table: &[Attr], attr: &Attr, path: &str, cfg: Option<&Value>, st: Option<&Value>, out: &mut Vec<Change>) {
    let list = |v: Option<&Value>| match v {
        Some(Value::Blocks(b)) => b.clone(),
        _ => vec![],
    };
    let (mut new, mut old) = (list(cfg), list(st));
    if new.is_empty() && attr.computed {
        return;
    }
    if attr.compare == Compare::SuppressEmptyBlock && old.is_empty() && new.iter().all(|b| b.values().all(empty)) {
        return;
    }
    if new.len() != old.len() {
        out.push(Change { path: format!("{path}.#"), state: old.len().to_string(), config: new.len().to_string(), replace: attr.replace == Replace::Always });
    }
    if let Compare::ByKey(key) = attr.compare {
        let k = |t: &Tree| match t.get(key) {
            Some(Value::Text(s)) => s.clone(),
            _ => String::new(),
        };
        new.sort_by_key(k);
        old.sort_by_key(k);
    }
    // Every element up to the longer list, a missing one compared as empty (SDK `diffList`, schema.go:1423-1435).
    // A ForceNew block replaces through its count only; its attributes carry their own ForceNew.
    let none = Tree::new();
    for i in 0..new.len().max(old.len()) {
        level(table, attr.path, &format!("{path}.{i}"), new.get(i).unwrap_or(&none), old.get(i).unwrap_or(&none), out);
    }
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Text(s) => s.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Blocks(b) => b.is_empty(),
    }
}
