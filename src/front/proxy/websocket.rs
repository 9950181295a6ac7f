//! Websocket proxying by frame bridging: the client's socket is accepted with
//! actix-ws only after the node accepted ours (so the node's chosen subprotocol is
//! the one the client gets), then frames are copied both ways: text, binary,
//! continuations, ping/pong and close codes unchanged. The bridge ends on an idle
//! timeout, when its node leaves the ready set (so clients reconnect to a live
//! node), and when either side stops taking frames for `proxy.ws_write_timeout`
//! (backpressure: a frame is read from one side only once the other took the
//! last one, and a side that takes none is closed, with the other).

use super::{upstream_headers, Worker};
use crate::front::error::error;
use crate::front::admission::WebsocketSeat;
use crate::metrics::WebsocketGuard;
use crate::core::routing::RoutingTable;
use crate::supervisor::publisher::RoutingReader;
use actix_codec::Framed;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::ws::{Codec, Frame};
use awc::BoxedSocket;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// How long a closing side may take to answer the other side's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Request headers the websocket client sets itself, per side of the bridge.
const HANDSHAKE_HEADERS: [&str; 4] =
    ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"];

/// Whether the node certainly never got the handshake. awc also reports a
/// connection lost after sending as a connect error (`Disconnected`): that one
/// may have been received, so it does not count.
fn nothing_sent(failure: &SendRequestError) -> bool {
    matches!(failure, SendRequestError::Connect(e) if !matches!(e, ConnectError::Disconnected | ConnectError::H2(_)))
}

pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Connects to the node (moving on to another ready node if the connection is
/// refused), then accepts the client and starts the bridge.
pub async fn bridge(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    table: &RoutingTable,
    first: usize,
) -> (HttpResponse, usize) {
    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return (error(StatusCode::BAD_REQUEST, "bad_websocket_handshake", e.to_string()), first);
    }
    let settings = &worker.front.settings;
    let protocols: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let mut headers = upstream_headers(req, settings);
    for name in HANDSHAKE_HEADERS {
        headers.remove(name);
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (mut node, mut tried) = (first, Vec::new());
    let (response, upstream, seat) = loop {
        let Some(host) = table.nodes[node].host.as_deref() else {
            return (error(StatusCode::BAD_GATEWAY, "node_unreachable", "the node has no address"), node);
        };
        let seat = match worker.front.admission.websocket(&table.nodes[node].id) {
            Ok(seat) => seat,
            Err(refusal) => return (refusal, node),
        };
        let mut request = worker.websockets.ws(format!("ws://{host}{target}")).max_frame_size(settings.ws_max_frame);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_bytes());
        }
        if !protocols.is_empty() {
            request = request.protocols(&protocols);
        }
        match request.connect().await {
            Ok((response, upstream)) => break (response, upstream, seat),
            Err(WsClientError::SendRequest(e)) if nothing_sent(&e) => {
                let node_id = &table.nodes[node].id;
                tracing::warn!(node_id = %node_id, error = %e, "websocket connect failed");
                worker.front.suspect(node_id);
                tried.push(node);
                match worker.balancer.borrow_mut().pick(table, &tried, settings.fail_open) {
                    Some(next) => node = next,
                    None => {
                        return (error(StatusCode::BAD_GATEWAY, "node_unreachable", "no node accepted the connection"), node)
                    }
                }
            }
            Err(WsClientError::InvalidResponseStatus(status)) => {
                return (error(status, "websocket_refused", "the node refused the websocket"), node);
            }
            Err(e) => {
                tracing::warn!(node_id = %table.nodes[node].id, error = %e, "websocket handshake with node failed");
                return (error(StatusCode::BAD_GATEWAY, "bad_gateway", "the node's websocket handshake failed"), node);
            }
        }
    };
    let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    let accepted = actix_ws::handle_with_protocols(req, payload, chosen.as_slice());
    let (client_response, session, stream) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => return (error(StatusCode::BAD_REQUEST, "bad_websocket_handshake", e.to_string()), node),
    };
    let link = Link {
        _open: worker.front.metrics.websocket(),
        _seat: seat,
        routing: worker.front.routing.clone(),
        node_id: table.nodes[node].id.clone(),
        idle: settings.ws_idle_timeout,
        write_timeout: settings.ws_write_timeout,
    };
    actix_web::rt::spawn(link.run(session, stream.max_frame_size(settings.ws_max_frame), upstream));
    (client_response, node)
}

struct Link {
    /// Counts this bridge in the open-websockets gauge while it lives.
    _open: WebsocketGuard,
    /// Holds its place under the websocket caps while it lives.
    _seat: WebsocketSeat,
    routing: RoutingReader,
    node_id: String,
    idle: Duration,
    write_timeout: Duration,
}

fn reason(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason { code, description: Some(description.to_owned()) })
}

/// Whether a side took a frame within `limit`: one that did not, or failed, is
/// given up on.
async fn taken<T, E>(limit: Duration, send: impl Future<Output = Result<T, E>>) -> bool {
    matches!(tokio::time::timeout(limit, send).await, Ok(Ok(_)))
}

impl Link {
    fn node_ready(&self) -> bool {
        self.routing.load().node(&self.node_id).is_some_and(|n| n.ready)
    }

    async fn run(self, mut session: Session, mut client: MessageStream, upstream: Framed<BoxedSocket, Codec>) {
        let (mut to_node, mut from_node) = upstream.split();
        let mut generations: watch::Receiver<u64> = self.routing.generations();
        generations.borrow_and_update();
        let mut watching = true;
        let idle = tokio::time::sleep(self.idle);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                message = client.recv() => {
                    let forwarded = match message {
                        Some(Ok(Message::Text(text))) => awc::ws::Message::Text(text),
                        Some(Ok(Message::Binary(bytes))) => awc::ws::Message::Binary(bytes),
                        Some(Ok(Message::Continuation(item))) => awc::ws::Message::Continuation(item),
                        Some(Ok(Message::Ping(bytes))) => awc::ws::Message::Ping(bytes),
                        Some(Ok(Message::Pong(bytes))) => awc::ws::Message::Pong(bytes),
                        Some(Ok(Message::Nop)) => continue,
                        Some(Ok(Message::Close(close))) => {
                            // pass the close on and hand the node's answer back
                            taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(close.clone()))).await;
                            let answer = tokio::time::timeout(CLOSE_GRACE, async {
                                while let Some(Ok(frame)) = from_node.next().await {
                                    if let Frame::Close(answer) = frame {
                                        return answer;
                                    }
                                }
                                close
                            })
                            .await;
                            taken(CLOSE_GRACE, session.close(answer.unwrap_or(None))).await;
                            return;
                        }
                        Some(Err(e)) => {
                            taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(reason(CloseCode::Protocol, "client protocol error")))).await;
                            taken(CLOSE_GRACE, session.close(reason(CloseCode::Protocol, &e.to_string()))).await;
                            return;
                        }
                        None => {
                            taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(reason(CloseCode::Away, "client went away")))).await;
                            return;
                        }
                    };
                    if to_node.send(forwarded).await.is_err() {
                        taken(CLOSE_GRACE, session.close(reason(CloseCode::Error, "node connection lost"))).await;
                        return;
                    }
                }
                frame = from_node.next() => {
                    let sent = match frame {
                        Some(Ok(Frame::Text(bytes))) => match ByteString::try_from(bytes) {
                            Ok(text) => taken(self.write_timeout, session.text(text)).await,
                            Err(_) => {
                                taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(reason(CloseCode::Invalid, "text is not UTF-8")))).await;
                                taken(CLOSE_GRACE, session.close(reason(CloseCode::Error, "node sent invalid text"))).await;
                                return;
                            }
                        },
                        Some(Ok(Frame::Binary(bytes))) => taken(self.write_timeout, session.binary(bytes)).await,
                        Some(Ok(Frame::Continuation(item))) => taken(self.write_timeout, session.continuation(item)).await,
                        Some(Ok(Frame::Ping(bytes))) => taken(self.write_timeout, session.ping(&bytes)).await,
                        Some(Ok(Frame::Pong(bytes))) => taken(self.write_timeout, session.pong(&bytes)).await,
                        Some(Ok(Frame::Close(close))) => {
                            taken(CLOSE_GRACE, session.close(close.clone())).await;
                            taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(close))).await;
                            return;
                        }
                        Some(Err(_)) | None => {
                            taken(CLOSE_GRACE, session.close(reason(CloseCode::Error, "node connection lost"))).await;
                            return;
                        }
                    };
                    if !sent {
                        tracing::info!(node_id = %self.node_id, "closing a websocket: the client took no frame in time or is gone");
                        taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(reason(CloseCode::Away, "client went away")))).await;
                        return;
                    }
                }
                () = &mut idle => {
                    taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(reason(CloseCode::Away, "idle timeout")))).await;
                    taken(CLOSE_GRACE, session.close(reason(CloseCode::Away, "idle timeout"))).await;
                    return;
                }
                changed = generations.changed(), if watching => {
                    watching = changed.is_ok();
                    if !self.node_ready() {
                        tracing::info!(node_id = %self.node_id, "closing a websocket: its node is no longer ready");
                        taken(CLOSE_GRACE, to_node.send(awc::ws::Message::Close(reason(CloseCode::Restart, "node left the cluster")))).await;
                        taken(CLOSE_GRACE, session.close(reason(CloseCode::Restart, "node went down; reconnect"))).await;
                        return;
                    }
                    continue;
                }
            }
            idle.as_mut().reset(tokio::time::Instant::now() + self.idle);
        }
    }
}
