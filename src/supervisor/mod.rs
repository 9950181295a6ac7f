//! Everything that owns the cluster's state.
//! - [`actors`]: the NodeActor per node and the ClusterActor, the only writer.
//! - [`leadership`]: this replica's part in the leader lease (leads or follows, until when), pure.
//! - [`queue`]: the ClusterActor's decision bookkeeping (what runs next, who waits), pure.
//! - [`store`]: every database query of the supervisor and the simulated node.
//! - [`probe`]: the health probe trait and its HTTP implementation.
//! - [`push`]: asks a node to reconcile and waits for its answer.
//! - [`pushes`]: one push in flight per node; the others coalesce and wait, pure.
//! - [`clock`]: the time source decisions read, replaceable in tests.
//! - [`publisher`]: the routing snapshot's single writer and its lock-free readers.
//! - [`reports`]: what the front door reports to the supervisor without waiting.
//! - [`vitals`]: the supervisor's recent knowledge of its own health and role, read lock-free.

pub mod actors;
pub mod clock;
pub mod leadership;
pub mod probe;
pub mod publisher;
pub mod pushes;
pub mod push;
pub mod queue;
pub mod reports;
pub mod store;
pub mod vitals;
