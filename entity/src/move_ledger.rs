//! Why a monitor was moved. A row is open while `undone_at` is NULL; recovery only
//! ever reverts open `failover` and `drain` rows, so manual overrides survive it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kc_move_ledger")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub monitor_id: u32,
    pub from_node: Option<String>,
    pub to_node: String,
    /// One of `failover`, `drain`, `manual`, `rebalance`.
    pub reason: String,
    pub created_at: DateTimeUtc,
    pub undone_at: Option<DateTimeUtc>,
    /// A manual move that rebalancing leaves where it is.
    pub pinned: bool,
    /// The leader epoch that wrote the row (NULL before leases existed).
    pub epoch: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
