//! What the front door tells the supervisor, over a bounded channel it never
//! waits on: a full channel drops the report, and the periodic tick repairs
//! whatever a dropped one would have started sooner.

use crate::core::placement::MonitorId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontReport {
    /// A request could not connect to this node: probe it now.
    Unreachable(String),
    /// A node answered a monitor write through the front door (REST create,
    /// update, pause, resume or delete). A node starts a monitor it created
    /// whatever home it gave it, and neither stops a paused or deleted one nor
    /// tells the node that runs it: both need a reconcile.
    MonitorWritten {
        /// The node that answered.
        served: String,
        monitor: Option<MonitorId>,
        /// The home the node gave a created monitor.
        home: Option<String>,
    },
}
