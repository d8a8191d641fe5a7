//! `JsonObject<T>`: a JSON object body documented with `T`'s schema but handed to the handler as
//! fields, so that a wrong type becomes a 422 naming the field instead of an anonymous parse error.

use std::marker::PhantomData;

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde_json::{Map, Value};

use crate::core::validation::{FieldError, ValidationErrors};

pub struct JsonObject<T> {
    pub fields: Map<String, Value>,
    _schema: PhantomData<fn() -> T>,
}

impl<T: Type> Payload for JsonObject<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(m) if m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> ParsePayload for JsonObject<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        let value: Value = serde_json::from_slice(&data).map_err(|e| ParseRequestPayloadError { reason: format!("the body is not valid JSON: {e}") })?;
        match value {
            Value::Object(fields) => Ok(Self { fields, _schema: PhantomData }),
            _ => Err(ParseRequestPayloadError { reason: "the body must be a JSON object".into() }.into()),
        }
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonObject<T>, T: Type);

/// Reads typed fields out of a JSON object, collecting a `FieldError` for every wrong type or unknown field.
pub struct FieldReader<'a> {
    fields: &'a Map<String, Value>,
    known: Vec<&'static str>,
    pub errors: ValidationErrors,
}

impl<'a> FieldReader<'a> {
    pub fn new(fields: &'a Map<String, Value>) -> Self {
        Self { fields, known: Vec::new(), errors: ValidationErrors::default() }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.fields.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, name: &'static str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.errors.push(FieldError::new(name, "type", "must be a string"));
                None
            }
        }
    }

    pub fn integer(&mut self, name: &'static str) -> Option<i64> {
        match self.get(name)? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            _ => {
                self.errors.push(FieldError::new(name, "type", "must be an integer"));
                None
            }
        }
    }

    pub fn boolean(&mut self, name: &'static str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.errors.push(FieldError::new(name, "type", "must be true or false"));
                None
            }
        }
    }

    pub fn strings(&mut self, name: &'static str) -> Option<Vec<String>> {
        match self.get(name)? {
            Value::Array(items) if items.iter().all(Value::is_string) => Some(items.iter().filter_map(|v| v.as_str().map(String::from)).collect()),
            _ => {
                self.errors.push(FieldError::new(name, "type", "must be an array of strings"));
                None
            }
        }
    }

    /// Every field not read is an error: a typo must not be silently ignored.
    pub fn finish(mut self) -> ValidationErrors {
        let mut unknown: Vec<&String> = self.fields.keys().filter(|k| !self.known.contains(&k.as_str())).collect();
        unknown.sort();
        for k in unknown {
            self.errors.push(FieldError::new(k.clone(), "unknown_field", "is not a field of this request"));
        }
        self.errors
    }
}

/// The outcome of parsing a body whose fields were read with a [`FieldReader`]: the parsed value, or a
/// 422 with the type errors and the rule errors, a field with a wrong type reported once (as a type error).
pub fn with_type_errors<T>(type_errors: ValidationErrors, parsed: Result<T, crate::engine::EngineError>) -> Result<T, super::error::ApiError> {
    use super::error::ApiError;
    use crate::engine::EngineError;
    match parsed {
        Ok(v) if type_errors.is_empty() => Ok(v),
        Ok(_) => Err(ApiError::invalid(&type_errors)),
        Err(EngineError::Invalid(rule_errors)) => {
            let mut all = type_errors.clone();
            all.0.extend(rule_errors.0.into_iter().filter(|e| !type_errors.0.iter().any(|t| t.field == e.field)));
            Err(ApiError::invalid(&all))
        }
        Err(e) => Err(e.into()),
    }
}
