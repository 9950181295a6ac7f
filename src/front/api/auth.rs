//! Who may use the operations API: bearer tokens compared in constant time, and
//! an optional allow-list of client networks for everything under `/lb/`,
//! applied as the `/lb` scope's guard.

use crate::config::{ApiSettings, Network};
use crate::front::error::error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use crate::front::proxy::Worker;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use std::future::{ready, Ready};

/// The configured tokens and networks, shared by every worker.
pub struct Access {
    tokens: Vec<String>,
    allow: Vec<Network>,
}

impl Access {
    pub fn new(settings: &ApiSettings) -> Self {
        Access { tokens: settings.tokens.clone(), allow: settings.allow.clone() }
    }

    /// Checks every token, whatever matched first, so the time taken does not
    /// tell which token (or how much of one) was right.
    fn accepts(&self, presented: &str) -> bool {
        self.tokens.iter().fold(false, |ok, token| ok | constant_time_eq(token.as_bytes(), presented.as_bytes()))
    }

    fn admits(&self, req: &HttpRequest) -> bool {
        self.allow.is_empty() || req.peer_addr().is_some_and(|peer| self.allow.iter().any(|n| n.contains(peer.ip())))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Proof that the request carried a valid `Authorization: Bearer <token>`; a
/// handler that takes it cannot run without one.
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let access = req.app_data::<web::Data<Access>>();
        let verdict = match (access, presented) {
            (Some(access), Some(token)) if access.accepts(token) => Ok(Authorized),
            (Some(access), _) if access.tokens.is_empty() => Err("no api.tokens are configured"),
            (_, None) => Err("send Authorization: Bearer <token>"),
            _ => Err("the token is not valid"),
        };
        ready(verdict.map_err(|detail| {
            actix_web::error::InternalError::from_response(
                detail,
                error(StatusCode::UNAUTHORIZED, "unauthorized", detail),
            )
            .into()
        }))
    }
}

/// Whether the request's network may use `/lb/` (always, without an allow-list).
pub fn admits(req: &HttpRequest) -> bool {
    req.app_data::<web::Data<Access>>().is_none_or(|a| a.admits(req))
}

/// The 403 for a client outside `api.allow`.
pub fn forbidden() -> HttpResponse {
    error(StatusCode::FORBIDDEN, "forbidden", "this client network may not use /lb/")
}

/// Middleware on the `/lb` scope, so on everything routed there however its
/// path was spelt: the connection caps, then the network allow-list (403).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let capped = req.app_data::<web::Data<Worker>>().and_then(|w| w.front.admission.refusal(req.request()));
    let refusal = capped.or_else(|| (!admits(req.request())).then(forbidden));
    match refusal {
        None => Ok(next.call(req).await?.map_into_left_body()),
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        let access = Access {
            tokens: vec!["first-token-0123456789".into(), "second-token-0123456789".into()],
            allow: vec![],
        };
        assert!(access.accepts("first-token-0123456789"));
        assert!(access.accepts("second-token-0123456789"));
        assert!(!access.accepts("first-token-012345678"));
        assert!(!access.accepts("first-token-01234567890"));
        assert!(!access.accepts(""));
        assert!(!Access { tokens: vec![], allow: vec![] }.accepts(""));
    }
}
