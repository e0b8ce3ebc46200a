//! The API's one error shape, `{"error":{"code":"...","message":"..."}}`, and the
//! extractors that turn axum's rejections (bad JSON, bad query, bad path, too large a body)
//! into it. A message names the field and what was expected; it never carries a stack
//! trace, a file path, SQL or a token.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthenticated`, `invalid_token`, `forbidden`,
    /// `rate_limited`, `bad_request`, `not_found`, `method_not_allowed`,
    /// `payload_too_large`, `unsupported_media_type`, `conflict`, `timeout`, `unavailable`,
    /// `internal`.
    pub code: String,
    /// For people: names the field or object and what was expected.
    pub message: String,
}

/// An error answer: status, stable code, message; optionally `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
    /// `Retry-After`, seconds (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`: the request is well-formed but the object's state refuses it.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 503 `unavailable`: a part of the daemon the request needs is not running.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`: the details go to the log, never into the answer.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the daemon's log has the details",
        )
    }

    /// With `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The body; anything shaped like a token is redacted from the message.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: super::auth::redact(&self.message).into_owned(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dcguard\""),
            );
        }
        response
    }
}

/// The stable code of an error answer, kept in its extensions (for the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Cuts serde's message to its first line and drops anything after "at line", so no
/// input is echoed at length.
fn short(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    let mut text: String = first.chars().take(300).collect();
    if first.chars().count() > 300 {
        text.push_str("...");
    }
    text
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(format!(
                "the body is not valid JSON: {}",
                short(&e.body_text())
            )),
            JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
                "the body does not match the schema: {}",
                short(&e.body_text())
            )),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            other => ApiError::bad_request(format!(
                "cannot read the body: {}",
                short(&other.body_text())
            )),
        }
    }
}

/// 413 `payload_too_large` for the API's default limit.
pub fn too_large() -> ApiError {
    too_large_for(super::MAX_BODY_BYTES)
}

/// 413 `payload_too_large` for a route whose limit is `limit` bytes.
pub fn too_large_for(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds {limit} bytes"),
    )
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("bad query string: {}", short(&r.body_text())))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request(format!("bad path parameter: {}", short(&r.body_text())))
    }
}

/// `Json<T>` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// `Query<T>` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// `Path<T>` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// Rewrites an error answer that is not JSON (axum's own 404, 405, 413, 415 ...) into the
/// error shape; answers that are already JSON, and successes, pass unchanged.
pub fn normalise(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The web pages answer their errors as HTML pages (`web`), which stay as they are.
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_json || is_html {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take this method".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => return too_large().into_response(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "expected Content-Type: application/json".to_owned(),
        ),
        s if s.is_server_error() => ("internal", "internal error".to_owned()),
        _ => ("bad_request", "the request was refused".to_owned()),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}
