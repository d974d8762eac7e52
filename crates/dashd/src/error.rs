//! One error type for both HTTP surfaces. Every failure becomes
//! `{"error": {"code", "message"}}` with a fitting status; internal causes are logged
//! once, here, and never sent to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use dash_core::api::{ErrorBody, ErrorDetail, codes};
use dash_core::{ValidationError, validate};
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A bridge event names a session no bot owns (404 `unknown_session`).
    #[error("{0}")]
    UnknownSession(String),
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<&'static str>,
    },
    #[error("{0}")]
    Forbidden(String),
    /// Missing or wrong credentials (a webhook's signature or token).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests: answered 429 with `Retry-After`.
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u64 },
    /// The request body is larger than the listener accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The request line is longer than the listener accepts.
    #[error("{0}")]
    UriTooLong(String),
    /// The client did not send its request (its body) in time.
    #[error("{0}")]
    Timeout(String),
    /// A document with several problems: the message sums up, `details` lists them.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<String>,
    },
    /// Logged with its cause; the client only learns that something failed.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what } => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict { message, field } => ApiError::Conflict { message, field },
            err if err.is_unavailable() => {
                tracing::error!(error = %err, "database unavailable");
                ApiError::Unavailable(
                    "the database cannot take this request now; retry later (see dashd's log)"
                        .into(),
                )
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::Validation(err) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::VALIDATION,
                Some(err.field.clone()),
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST, None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND, None),
            ApiError::UnknownSession(_) => (StatusCode::NOT_FOUND, codes::UNKNOWN_SESSION, None),
            ApiError::Conflict { field, .. } => (
                StatusCode::CONFLICT,
                codes::CONFLICT,
                field.map(str::to_owned),
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, codes::FORBIDDEN, None),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, None),
            ApiError::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED, None)
            }
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                None,
            ),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, codes::URI_TOO_LONG, None),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, codes::TIMEOUT, None),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, codes::VALIDATION, None),
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, None)
            }
        };
        let details = match &self {
            ApiError::Invalid { details, .. } => details
                .iter()
                .take(MAX_DETAILS)
                .map(|detail| validate::bounded(detail, MAX_MESSAGE_CHARS))
                .collect(),
            _ => Vec::new(),
        };
        let mut response = error_response(status, code, &self.to_string(), field, details);
        match &self {
            ApiError::RateLimited { retry_after_s, .. } => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(*retry_after_s),
                );
            }
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        response
    }
}

/// Longest message an error carries, in characters: messages quote user input, and no
/// input may come back unbounded.
const MAX_MESSAGE_CHARS: usize = 1024;
/// Most entries in an error's `details`.
const MAX_DETAILS: usize = 100;
/// How much of a JSON parser's complaint (which quotes the offending input) is kept.
const MAX_PARSER_CHARS: usize = 200;

/// Builds the `{"error": {"code", "message"}}` response every failure answers with.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    field: Option<String>,
    details: Vec<String>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: validate::bounded(message, MAX_MESSAGE_CHARS),
            field: field.map(|field| validate::bounded(&field, MAX_PARSER_CHARS)),
            details,
        },
    };
    (status, axum::Json(body)).into_response()
}

/// A JSON body whose rejection is an [`ApiError`] rather than axum's plain-text reply.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// Maps axum's rejection to ours. A parser's message quotes the input it choked on, so
/// only its start is kept.
fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
            "send the body as JSON with Content-Type: application/json".to_owned(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge("the request body is larger than this endpoint accepts".into())
        }
        other => ApiError::BadRequest(format!(
            "invalid JSON body: {}",
            validate::bounded(&other.body_text(), MAX_PARSER_CHARS)
        )),
    }
}

/// A query string whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::BadRequest(format!(
                    "invalid query string: {}",
                    validate::bounded(&rejection.body_text(), MAX_PARSER_CHARS)
                ))
            })
    }
}

/// A path parameter whose rejection (a segment that is not valid UTF-8 once decoded, a
/// number that does not parse) is an [`ApiError`] rather than axum's plain-text reply.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| {
                ApiError::BadRequest(format!(
                    "invalid path: {}",
                    validate::bounded(&rejection.body_text(), MAX_PARSER_CHARS)
                ))
            })
    }
}

/// Answer for paths that match no route.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

/// Answer for a known path called with the wrong method.
pub async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this endpoint does not accept that method",
        None,
        Vec::new(),
    )
}
