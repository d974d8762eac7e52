//! One error type for both HTTP surfaces. Every failure becomes
//! `{"error": {"code", "message"}}` with a fitting status; internal causes are logged
//! once, here, and never sent to the client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use dash_core::ValidationError;
use dash_core::api::{ErrorBody, ErrorDetail, codes};
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
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<&'static str>,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
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
                ApiError::Unavailable("the database is not answering; see dashd's log".into())
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
            ApiError::Conflict { field, .. } => (
                StatusCode::CONFLICT,
                codes::CONFLICT,
                field.map(str::to_owned),
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, codes::FORBIDDEN, None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, None),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, codes::VALIDATION, None),
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, None)
            }
        };
        let details = match &self {
            ApiError::Invalid { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                field,
                details,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

/// A JSON body whose rejection is an [`ApiError`] rather than axum's plain-text reply.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(ApiError::BadRequest(json_rejection(&rejection))),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with Content-Type: application/json".to_owned()
        }
        other => format!("invalid JSON body: {}", other.body_text()),
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
                ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
            })
    }
}

/// Answer for paths that match no route.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

/// Answer for a known path called with the wrong method.
pub async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "method_not_allowed".to_owned(),
            message: "this endpoint does not accept that method".to_owned(),
            field: None,
            details: Vec::new(),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
