//! A Kuma node's registration row. The node writes it at start-up; afterwards only
//! the supervisor writes `status` and `last_seen`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: String,
    pub node_name: String,
    pub host: Option<String>,
    pub status: Option<String>,
    pub active: Option<bool>,
    pub is_primary: Option<bool>,
    pub last_seen: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
