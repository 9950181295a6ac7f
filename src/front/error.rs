//! The JSON error body every refusal of kuma-cluster's own uses: a stable code
//! for programs and a sentence for people, never internals.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// Every error answer: what went wrong, as a code and in words.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub detail: String,
}

/// An answer with `status` and the body `{error: code, detail}`.
pub fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "detail": detail.into() }))
}

/// 405 with the `Allow` header naming what the path takes.
pub async fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    let mut response =
        error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{} is not allowed here", req.method()));
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}
