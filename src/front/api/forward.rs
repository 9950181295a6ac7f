//! Operator actions sent to a replica that does not lead: only the leader
//! decides, so the action goes to the leader's advertised address with the
//! caller's token and body, and the leader's answer comes back as it is. Reads
//! are answered by every replica itself. With no leader, the answer is 503
//! with the reason.

use super::Ops;
use crate::front::error::error;
use crate::supervisor::leadership::base_url;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use std::time::Duration;

/// Marks a request one replica forwarded to another: it is never forwarded again.
const FORWARDED: &str = "x-kuma-cluster-forwarded";
/// Names the leader that answered a forwarded action.
const ANSWERED_BY: &str = "x-kuma-cluster-leader";
/// Long enough for the leader's decision (and a rebalance) to commit.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Middleware on the action routes: applied here while this replica leads,
/// forwarded to the leader otherwise.
pub async fn to_leader(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let vitals = req.app_data::<web::Data<Ops>>().map(|ops| ops.vitals.load());
    let local = matches!(*req.method(), Method::GET | Method::HEAD) || vitals.as_ref().is_none_or(|v| v.leading);
    if local {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let (leader, address) = vitals.map_or((None, None), |v| (v.leader_id.clone(), v.leader_address.clone()));
    let response = match (leader, address) {
        _ if req.headers().contains_key(FORWARDED) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "the replica this action was forwarded to no longer leads; retry shortly",
        ),
        (_, Some(address)) => {
            let body = req.extract::<web::Bytes>().await?;
            forward(&req, &address, body).await
        }
        (Some(leader), None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "leader_not_advertised",
            format!("the leader {leader} advertises no address to forward to: set ha.advertise on every replica, or send the action to the leader"),
        ),
        (None, None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "no replica leads right now (a new leader takes over within the lease's time to live); retry shortly",
        ),
    };
    Ok(req.into_response(response).map_into_right_body())
}

async fn forward(req: &ServiceRequest, leader: &str, body: web::Bytes) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let client = awc::Client::builder().disable_redirects().timeout(LEADER_TIMEOUT).finish();
    let mut request = client.request(req.method().clone(), format!("{}{path}", base_url(leader))).insert_header((FORWARDED, "1"));
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT, header::ORIGIN] {
        if let Some(value) = req.headers().get(&name) {
            request = request.insert_header((name, value.clone()));
        }
    }
    let mut answer = match request.send_body(body).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(leader, error = %e, "could not forward an operator action to the leader");
            return error(StatusCode::SERVICE_UNAVAILABLE, "leader_unreachable", format!("the leader at {leader} did not answer; retry shortly"));
        }
    };
    let bytes = match answer.body().limit(16 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(leader, error = %e, "the leader's answer to a forwarded action was cut short");
            return error(StatusCode::BAD_GATEWAY, "leader_answer_incomplete", format!("the leader at {leader} answered incompletely"));
        }
    };
    let mut response = HttpResponse::build(answer.status());
    for name in [header::CONTENT_TYPE, header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(value) = answer.headers().get(&name) {
            response.insert_header((name, value.clone()));
        }
    }
    response.insert_header((ANSWERED_BY, leader.to_owned())).body(bytes)
}
