//! Everything that answers HTTP. It reads the routing snapshot and sends
//! messages to the supervisor; only the operations API's read handlers
//! (`api::status`) touch the database.
//! - [`server`]: the app wiring: the guarded `/lb` scope, `/health`, and the proxy.
//! - [`path`]: which paths are kuma-cluster's own, in every spelling.
//! - [`admission`]: the access path's caps on connections and request heads.
//! - [`open`]: the open endpoints: liveness and the fixed-node cookie.
//! - [`api`]: the operations API under `/lb/`, behind bearer tokens and a network allow-list.
//! - [`proxy`]: node choice, HTTP forwarding and websocket bridging.
//! - [`openapi`]: the OpenAPI document of the `/lb` API.
//! - [`error`]: the JSON error body every refusal uses.

pub mod admission;
pub mod api;
pub mod error;
pub mod open;
pub mod openapi;
pub mod path;
pub mod proxy;
pub mod server;
