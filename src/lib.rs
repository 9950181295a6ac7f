//! kuma-cluster: supervises a fleet of cluster-patched Uptime Kuma nodes that
//! share one database, moves a dead node's monitors to live nodes and back, and
//! fronts them all at one address.
//!
//! # Layout
//! Four rooms; dependencies point one way (`tests/architecture.rs` checks it):
//! `core` uses nothing of ours, `supervisor` and `front` use `core`, `front` talks to
//! the supervisor only through its messages and the routing snapshot, and `tools`
//! may use anything.
//! - [`core`]: the pure decisions: health, placement, one reconcile decision, the
//!   routing table and the model they share. No IO, no clock.
//! - [`supervisor`]: everything that owns the cluster's state: the NodeActor per
//!   node, the ClusterActor (the only writer), the store, probes, reconcile pushes,
//!   the clock and the routing publisher.
//! - [`front`]: everything that answers HTTP: the app wiring, the proxy, the
//!   operations API, the OpenAPI document and the JSON error body.
//! - [`tools`]: what is not the product's main path: the simulated node, dev mode
//!   and the operator CLI's client.
//! - [`config`]: settings from `config/default.toml`, a file and the environment, all validated.
//! - [`metrics`]: Prometheus counters and histograms, written by the supervisor and the proxy.
//! - [`app`]: wiring for the `serve`, `migrate`, `dev` and `sim-node` commands.

pub mod app;
pub mod config;
pub mod core;
pub mod front;
pub mod metrics;
pub mod supervisor;
pub mod tools;

pub use app::{dev, health_check, migrate, serve, sim_node};
