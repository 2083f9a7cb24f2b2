//! Request bodies: JSON parsed with the failing field's path in the error, so a
//! caller learns which field to fix (`400` for malformed JSON, `422` for a field
//! of the wrong type, unknown, or missing).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

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

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {inner}"),
            )
        } else if field == "." {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                inner.to_string(),
            )
        } else {
            ApiError::invalid(field, inner.to_string())
        }
    })
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
        assert_eq!(err.status.as_u16(), 422);
        assert!(err.message.contains("extra"), "{}", err.message);
        let err = parse::<Body>(br#"{"name": "x""#).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, "invalid_json"));
        let err = parse::<Body>(br#"{"name": "x"}"#).unwrap_err();
        assert!(err.message.contains("count"), "{}", err.message);
    }
}
