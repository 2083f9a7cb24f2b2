//! Request bodies and query strings, parsed with the failing field's path in
//! the error, so a caller learns which field to fix (`400` for malformed JSON,
//! `422` for a field of the wrong type, unknown, or missing).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// Like `axum::Json`, with [`ApiError`] rejections that name the field.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
        parse(&bytes).map(ApiJson)
    }
}

/// Like `axum::extract::Query`, with [`ApiError`] rejections (422) that name
/// the parameter.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = url::form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match named_field(&path, &inner) {
            Some(field) => ApiError::invalid(field, inner),
            None => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", inner),
        }
    })
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )
    })?;
    integral(&mut value);
    serde_path_to_error::deserialize(ObjectsAsObjects(value)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        match named_field(&path, &message) {
            Some(field) => ApiError::invalid(field, message),
            None => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message),
        }
    })
}

/// Writes whole-valued floats (`120.0`) as integers: JSON Schema's `integer`
/// takes them, serde's integer types do not. Up to 2^53, where every integer
/// is exact.
/// A body as serde_json reads it, except that a struct is read only from an
/// object: serde would take `[1, 2]` for a struct of two fields, which the
/// document does not allow.
struct ObjectsAsObjects(Value);

impl<'de> serde::Deserializer<'de> for ObjectsAsObjects {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_any(self.0, v)
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_option(self.0, v)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_enum(self.0, name, variants, v)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        if self.0.is_array() {
            let unexpected = serde::de::Unexpected::Seq;
            return Err(serde::de::Error::invalid_type(unexpected, &"a JSON object"));
        }
        serde::Deserializer::deserialize_struct(self.0, name, fields, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple tuple_struct
        map identifier ignored_any
    }
}

fn integral(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *value = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral),
        Value::Object(fields) => fields.values_mut().for_each(integral),
        _ => {}
    }
}

/// The field an error is about. serde reports a missing field at the object
/// that lacks it (path `.` at the top), naming the field only in the message.
fn named_field(path: &str, message: &str) -> Option<String> {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", None) => None,
        (".", Some(name)) => Some(name.to_string()),
        (_, None) => Some(path.to_string()),
        (_, Some(name)) => Some(format!("{path}.{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Query {
        page: Option<u32>,
        state: Option<crate::store::health::State>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let q: Query = parse_query("page=2&state=failing&other=1").unwrap();
        assert_eq!(q.page, Some(2));
        let err = parse_query::<Query>("page=two").unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.field.as_deref()),
            (422, Some("page"))
        );
        let err = parse_query::<Query>("state=sad").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("state"));
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse::<Body>(br#"{"name": "x", "count": -1}"#).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.field.as_deref()),
            (422, Some("count"))
        );
        let err = parse::<Body>(br#"{"name": 1, "count": 1}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
        let err = parse::<Body>(br#"{"name": "x", "count": 1, "extra": 1}"#).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.field.as_deref()),
            (422, Some("extra"))
        );
        let err = parse::<Body>(br#"{"name": "x""#).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, "invalid_json"));
        let whole: Body = parse(br#"{"name": "x", "count": 120.0}"#).unwrap();
        assert_eq!(whole.count, 120);
        let err = parse::<Body>(br#"{"name": "x", "count": 1.5}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("count"));
        let err = parse::<Body>(br#"{"name": "x"}"#).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.field.as_deref()),
            (422, Some("count"))
        );
    }
}
