//! Request parameters as pveproxy collects them: query string plus a form-encoded or JSON body.

use serde_json::{Map, Value};

use super::envelope::ApiError;

/// Decodes `a=1&b=x%20y` like PVE's `decode_urlencoded` (`+` is a space; a repeated key's values
/// are joined with NUL, which `-list` formats split on).
pub fn decode_urlencoded(text: &str, into: &mut Map<String, Value>) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = unescape(k);
        let v = unescape(v);
        match into.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push('\0');
                existing.push_str(&v);
            }
            _ => {
                into.insert(k, Value::String(v));
            }
        }
    }
}

fn unescape(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// Adds the body's parameters: form-encoded (also without a content type) or JSON (PVE 8+).
pub fn decode_body(content_type: Option<&str>, body: &[u8], into: &mut Map<String, Value>) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let ct = content_type.unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match base.as_str() {
        "" | "application/x-www-form-urlencoded" => {
            decode_urlencoded(&String::from_utf8_lossy(body), into);
            Ok(())
        }
        "application/json" => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::Status(400, format!("unable to parse JSON body - {e}")))?;
            let Value::Object(obj) = value else {
                return Err(ApiError::Status(400, "JSON body is not an object".to_string()));
            };
            for (k, v) in obj {
                if !v.is_null() {
                    into.insert(k, v);
                }
            }
            Ok(())
        }
        _ => Err(ApiError::Status(506, format!("upload 'Content-Type '{ct}' not implemented"))),
    }
}

/// A file sent in a `multipart/form-data` upload.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub filename: String,
    pub data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

fn disposition_param(headers: &str, name: &str) -> Option<String> {
    let line = headers.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    line.split(';').map(str::trim).find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Parses a `multipart/form-data` body (PVE's upload): form fields go into `into`, the file part
/// is returned and its name becomes the `filename` parameter.
pub fn decode_multipart(content_type: &str, body: &[u8], into: &mut Map<String, Value>) -> Result<Option<UploadedFile>, ApiError> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or_else(|| ApiError::Status(400, "multipart body without boundary".to_string()))?;
    let delim = format!("--{boundary}").into_bytes();
    let mut file = None;
    let mut pos = find(body, &delim, 0).ok_or_else(|| ApiError::Status(400, "malformed multipart body".to_string()))?;
    loop {
        let start = pos + delim.len();
        if body[start..].starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(body, b"\r\n\r\n", start) else { break };
        let Some(next) = find(body, &delim, head_end) else { break };
        let headers = String::from_utf8_lossy(&body[start..head_end]).to_string();
        let mut content = &body[head_end + 4..next];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        }
        if let Some(name) = disposition_param(&headers, "name") {
            match disposition_param(&headers, "filename") {
                Some(filename) => {
                    into.entry("filename".to_string()).or_insert_with(|| Value::String(filename.clone()));
                    file = Some(UploadedFile { filename, data: content.to_vec() });
                }
                None => {
                    into.insert(name, Value::String(String::from_utf8_lossy(content).to_string()));
                }
            }
        }
        pos = next;
    }
    Ok(file)
}

/// Typed access to validated parameters.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The value as text (numbers and booleans as Perl would stringify them).
    pub fn str(&self, key: &str) -> Option<String> {
        self.0.get(key).map(crate::schema::validate::scalar_text)
    }

    /// Booleans: `1`/`0` from forms, `true`/`false` from JSON.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key)? {
            Value::Bool(b) => Some(*b),
            other => Some(crate::schema::validate::scalar_text(other) == "1"),
        }
    }

    pub fn u32(&self, key: &str) -> Option<u32> {
        self.str(key)?.trim().trim_start_matches('+').parse().ok()
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.str(key)?.trim().trim_start_matches('+').parse().ok()
    }

    /// A required string (the schema guarantees presence; this guards anyway).
    pub fn need(&self, key: &str) -> Result<String, ApiError> {
        self.str(key).ok_or_else(|| ApiError::param(key, "property is missing and it is not optional"))
    }

    pub fn need_u32(&self, key: &str) -> Result<u32, ApiError> {
        self.u32(key).ok_or_else(|| ApiError::param(key, "property is missing and it is not optional"))
    }

    /// Parameters other than the listed ones (the config keys of a config update).
    pub fn without(&self, skip: &[&str]) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), crate::schema::validate::scalar_text(v)))
            .collect()
    }
}
