//! The pure decisions. Nothing here does IO or reads a clock: time and health
//! come in as values, and every function can be tested with plain data.
//! - [`health`]: the node health state machine and flap damping.
//! - [`lease`]: the leader lease between replicas, as one of them sees it.
//! - [`placement`]: where monitors run (failover, revert, repair, rebalance).
//! - [`reconcile`]: one decision: rows + node health → writes + routing table.
//! - [`routing`]: the routing table the front door reads.
//! - [`model`]: the rows a decision reads and the writes it makes.
//! - [`waves`]: how much work a node may be handed now, given its cron and pace.

pub mod health;
pub mod lease;
pub mod model;
pub mod placement;
pub mod reconcile;
pub mod routing;
pub mod waves;
