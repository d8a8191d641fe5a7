//! A JSON answer written straight from `serde`, declared in the OpenAPI document exactly as poem-openapi's `Json`.
//!
//! poem-openapi's `Json<T>` answers by building `T::to_json()`, a `serde_json::Value` tree, and then writing it
//! (`poem-openapi-5.1.16` `payload/json.rs`); for a page of 100 deployments that tree was about 15% of the agent's
//! CPU per page (`perf record --call-graph dwarf` on the release agent, session 19). `Serialized<T>` writes `T`
//! with its `serde::Serialize` instead, as `poem::web::Json` does, under the same media type and schema. A type
//! answered this way derives both; `tests` hold the two spellings of each to the same JSON.

use poem::{IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::ApiResponse;

/// `T` answered as JSON written by `serde`; in the OpenAPI document, `Json<T>`.
pub struct Serialized<T>(pub T);

impl<T: Type> Payload for Serialized<T> {
    const CONTENT_TYPE: &'static str = Json::<T>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        Json::<T>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        Json::<T>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Json::<T>::register(registry);
    }
}

impl<T: serde::Serialize + Send> IntoResponse for Serialized<T> {
    fn into_response(self) -> Response {
        poem::web::Json(self.0).into_response()
    }
}

impl<T: ToJSON + serde::Serialize + Send> ApiResponse for Serialized<T> {
    fn meta() -> MetaResponses {
        Json::<T>::meta()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as ApiResponse>::register(registry);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use poem_openapi::types::ToJSON;

    /// `value` written by `serde` is the JSON poem-openapi builds for it, key for key (key order aside: JSON objects
    /// have none, and poem-openapi's map sorts them).
    pub(crate) fn same_json<T: ToJSON + serde::Serialize>(value: &T) {
        let written: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap();
        assert_eq!(Some(written), value.to_json());
    }
}
