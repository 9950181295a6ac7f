pub use super::event_log::Entity as EventLog;
pub use super::monitor::Entity as Monitor;
pub use super::move_ledger::Entity as MoveLedger;
pub use super::node::Entity as Node;
pub use super::node_admin::Entity as NodeAdmin;
