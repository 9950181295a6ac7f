//! Node transitions and every supervisor action, with its outcome.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kc_event_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub created_at: DateTimeUtc,
    pub kind: String,
    pub node_id: Option<String>,
    pub outcome: String,
    /// A JSON object with the numbers of the event.
    pub detail: String,
    /// The leader epoch that wrote the row (NULL before leases existed).
    pub epoch: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
