//! PVE's parameter checks (`PVE::JSONSchema::check_prop` and friends) with PVE's error wording.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{Map, Value};

use super::formats::check_format;
use super::load::truthy;
use super::MethodDef;

/// Parameter errors keyed by parameter path (`net0`, `net0.macaddr`), as PVE's `errors` object.
pub type Errors = BTreeMap<String, String>;

/// Validates all request parameters (path parameters included) against the method's schema.
pub fn validate_params(def: &MethodDef, params: &Map<String, Value>) -> Result<(), Errors> {
    let mut errors = Errors::new();
    for (key, schema) in &def.properties {
        if key.ends_with("[n]") {
            continue;
        }
        check_prop(params.get(key), schema, key, &mut errors);
    }
    for (key, value) in params {
        if let Some(Value::String(required)) = def.properties.get(key).and_then(|s| s.get("requires")) {
            if !params.contains_key(required) {
                add_error(&mut errors, required, &format!("missing property - '{key}' requires this property"));
            }
        }
        if def.properties.contains_key(key) {
            continue;
        }
        match def.property(key) {
            Some(schema) => check_prop(Some(value), schema, key, &mut errors),
            None if def.additional_properties => {}
            None => add_error(
                &mut errors,
                key,
                "property is not defined in schema and the schema does not allow additional properties",
            ),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// `add_error`: a second message for the same path is joined with a literal `\n` (PVE joins with
/// the single-quoted Perl string `'\n'`).
pub fn add_error(errors: &mut Errors, path: &str, msg: &str) {
    let path = if path.is_empty() { "_root" } else { path };
    match errors.get_mut(path) {
        Some(existing) => {
            existing.push_str("\\n");
            existing.push_str(msg);
        }
        None => {
            errors.insert(path.to_string(), msg.to_string());
        }
    }
}

/// `check_object` over a property-string's parsed keys (no additional properties allowed).
pub fn check_object(path: &str, schema: &Map<String, Value>, value: &BTreeMap<String, Value>, errors: &mut Errors) {
    for (key, sub) in schema {
        let newpath = join_path(path, key);
        check_prop(value.get(key), sub, &newpath, errors);
    }
    for (key, _) in value.iter() {
        let newpath = join_path(path, key);
        if let Some(sub) = schema.get(key) {
            if let Some(Value::String(required)) = sub.get("requires") {
                if !value.contains_key(required) {
                    add_error(
                        errors,
                        &join_path(path, required),
                        &format!("missing property - '{newpath}' requires this property"),
                    );
                }
            }
            continue;
        }
        add_error(
            errors,
            &newpath,
            "property is not defined in schema and the schema does not allow additional properties",
        );
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `check_prop`: one value against one property schema.
pub fn check_prop(value: Option<&Value>, schema: &Value, path: &str, errors: &mut Errors) {
    let Some(value) = value else {
        if schema.get("type").and_then(Value::as_str) == Some("null") {
            return;
        }
        let flag = |k: &str| schema.get(k).is_some_and(truthy);
        if !flag("optional") && !flag("alias") && !flag("group") {
            add_error(errors, path, "property is missing and it is not optional");
        }
        return;
    };
    if !check_type(path, schema.get("type"), value, errors) {
        return;
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, el) in items.iter().enumerate() {
                    check_prop(Some(el), item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(_) => {}
        _ => check_scalar(&scalar_text(value), schema, path, errors),
    }
}

fn check_scalar(text: &str, schema: &Value, path: &str, errors: &mut Errors) {
    if let Some(format) = schema.get("format") {
        if let Err(err) = check_format(format, text, path) {
            add_error(errors, path, &format!("invalid format - {err}"));
            return;
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if !perl_full_match(pattern, text) {
            add_error(errors, path, "value does not match the regex pattern");
            return;
        }
    }
    let chars = text.chars().count();
    if let Some(max) = schema.get("maxLength") {
        if number_of(max).is_some_and(|m| chars as f64 > m) {
            add_error(errors, path, &format!("value may only be {} characters long", show(max)));
            return;
        }
    }
    if let Some(min) = schema.get("minLength") {
        if number_of(min).is_some_and(|m| (chars as f64) < m) {
            add_error(errors, path, &format!("value must be at least {} characters long", show(min)));
            return;
        }
    }
    if is_number(text) {
        let v: f64 = text.trim_end_matches('\n').parse().unwrap_or(0.0);
        if let Some(max) = schema.get("maximum") {
            if number_of(max).is_some_and(|m| v > m) {
                add_error(errors, path, &format!("value must have a maximum value of {}", show(max)));
                return;
            }
        }
        if let Some(min) = schema.get("minimum") {
            if number_of(min).is_some_and(|m| v < m) {
                add_error(errors, path, &format!("value must have a minimum value of {}", show(min)));
                return;
            }
        }
    }
    if let Some(Value::Array(values)) = schema.get("enum") {
        if !values.iter().any(|ev| scalar_text(ev) == text) {
            let list = values.iter().map(scalar_text).collect::<Vec<_>>().join(", ");
            add_error(errors, path, &format!("value '{text}' does not have a value in the enumeration '{list}'"));
        }
    }
}

/// How Perl stringifies a decoded JSON scalar.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => if *b { "1".into() } else { "0".into() },
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn show(v: &Value) -> String {
    scalar_text(v)
}

/// `check_type`; returns false (and records the error) when the value has the wrong type.
fn check_type(path: &str, ty: Option<&Value>, value: &Value, errors: &mut Errors) -> bool {
    let Some(ty) = ty else { return true };
    match ty {
        Value::Array(types) => {
            for t in types {
                let mut tmp = Errors::new();
                if check_type(path, Some(t), value, &mut tmp) {
                    return true;
                }
            }
            let text = types.iter().map(scalar_text).collect::<Vec<_>>().join("|");
            add_error(errors, path, &format!("type check ('{text}') failed"));
            false
        }
        Value::String(t) => check_simple_type(path, t, value, errors),
        _ => true,
    }
}

fn check_simple_type(path: &str, ty: &str, value: &Value, errors: &mut Errors) -> bool {
    let fail = |errors: &mut Errors, msg: String| {
        add_error(errors, path, &msg);
        false
    };
    match ty {
        "any" => true,
        "null" => fail(errors, format!("type check ('{ty}') failed - value is not null")),
        "array" => matches!(value, Value::Array(_)) || fail(errors, format!("type check ('{ty}') failed")),
        "object" => matches!(value, Value::Object(_)) || fail(errors, format!("type check ('{ty}') failed")),
        _ => {
            let perl_ref = match value {
                Value::Array(_) => Some("ARRAY"),
                Value::Object(_) => Some("HASH"),
                Value::Bool(_) => Some("JSON::PP::Boolean"),
                _ => None,
            };
            if let Some(vt) = perl_ref {
                if ty == "boolean" && value.is_boolean() {
                    return true;
                }
                return fail(errors, format!("type check ('{ty}') failed - got {vt}"));
            }
            let text = scalar_text(value);
            let ok = match ty {
                "boolean" => text == "1" || text == "0",
                "integer" => is_integer(&text),
                "number" => is_number(&text),
                _ => true,
            };
            ok || fail(errors, format!("type check ('{ty}') failed - got '{text}'"))
        }
    }
}

/// Perl's `$` also matches before one trailing newline.
fn perl_body(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// `^[+-]?\d+$`
pub fn is_integer(s: &str) -> bool {
    let s = perl_body(s);
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`
pub fn is_number(s: &str) -> bool {
    static RE: LazyLock<Option<fancy_regex::Regex>> =
        LazyLock::new(|| fancy_regex::Regex::new(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?\z").ok());
    RE.as_ref().is_some_and(|re| re.is_match(perl_body(s)).unwrap_or(false))
}

/// `$value =~ m/^$pattern$/` with the pattern rewritten from Perl to fancy-regex syntax.
pub fn perl_full_match(pattern: &str, value: &str) -> bool {
    match compiled(pattern) {
        Some(re) => re.is_match(value).unwrap_or(false),
        // a pattern we cannot compile is not held against the request
        None => true,
    }
}

fn compiled(pattern: &str) -> Option<Arc<fancy_regex::Regex>> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Arc<fancy_regex::Regex>>>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| {
            let body = pattern.replace("(?^:", "(?:").replace("{,", "{0,");
            fancy_regex::Regex::new(&format!(r"^{body}(?=\n?\z)")).ok().map(Arc::new)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_patterns_match_whole_value() {
        assert!(perl_full_match(r"(?^:\d+(?:;\d+)*)", "10;20"));
        assert!(!perl_full_match(r"(?^:\d+(?:;\d+)*)", "10;x"));
        assert!(perl_full_match(r"[A-Za-z0-9\-_\s]{,16}", "abc"));
        assert!(!perl_full_match("[-_.\\w\\d]+", "vmbr 0"));
    }

    #[test]
    fn numbers_like_perl() {
        assert!(is_integer("-12"));
        assert!(!is_integer("1.5"));
        assert!(is_number(".5"));
        assert!(is_number("1e3"));
        assert!(!is_number("abc"));
    }
}
