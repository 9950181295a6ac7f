//! The supervisor's actors: one [`node::NodeActor`] per Kuma node, and the
//! [`cluster::ClusterActor`], the only writer of assignments and of the routing
//! snapshot.

pub mod cluster;
pub mod node;
