//! What is not the product's main path.
//! - [`sim`]: a simulated Kuma node honouring the node contract, for dev mode, tests and benchmarks.
//! - [`dev`]: the in-process simulated nodes of `kuma-cluster dev` and their kill/revive routes.
//! - [`ops_client`]: the operator CLI's client of the operations API and its tables.

pub mod dev;
pub mod ops_client;
pub mod sim;
