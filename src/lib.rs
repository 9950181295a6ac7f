//! kuma-cluster: supervises a fleet of cluster-patched Uptime Kuma nodes that
//! share one database, moves a dead node's monitors to live nodes and back, and
//! fronts them all at one address.
//!
//! # Layout
//! - [`config`]: settings from `config/default.toml`, a file and the environment, all validated.
//! - [`health`]: the pure node health state machine and flap damping.
//! - [`metrics`]: Prometheus counters and histograms, rendered at `/metrics`.
//! - [`ops_client`]: the operator command line client of the operations API.
//! - [`placement`]: pure planning of where monitors run (failover, revert, repair).
//! - [`reconcile`]: one pure decision: rows + node health → writes + routing table.
//! - [`store`]: every database query; migrations come from the `migration` crate.
//! - [`probe`]: the health probe trait and its HTTP implementation.
//! - [`push`]: asks nodes to reconcile right after a committed move.
//! - [`routing`]: the immutable routing snapshot, one publisher, lock-free readers.
//! - [`clock`]: the time source decisions read, replaceable in tests.
//! - [`actors`]: the NodeActor per node and the ClusterActor, the only writer.
//! - [`proxy`]: the front door: node choice, HTTP forwarding and websocket bridging.
//! - [`api`]: the operations API under `/lb/`, behind bearer tokens and a network allow-list.
//! - [`server`]: the HTTP app: kuma-cluster's own `/lb/` endpoints, the rest to the proxy.
//! - [`dev`]: the in-process simulated nodes of `kuma-cluster dev`, killed and revived on request.
//! - [`sim`]: a simulated Kuma node honouring the node contract, for dev mode and tests.
//! - [`app`]: wiring for the `serve` and `migrate` commands.

pub mod actors;
pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod dev;
pub mod health;
pub mod metrics;
pub mod ops_client;
pub mod placement;
pub mod probe;
pub mod proxy;
pub mod push;
pub mod reconcile;
pub mod routing;
pub mod server;
pub mod sim;
pub mod store;

pub use app::{dev, health_check, migrate, serve, sim_node};
