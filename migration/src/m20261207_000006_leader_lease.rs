//! The leader lease of kuma-cluster's replicas, and the epoch that wrote each
//! ledger row and event.
//!
//! `kc_lease` holds one row (`id = 1`): who leads (`holder`, reachable at
//! `address`), since which change of holder (`epoch`), until when
//! (`expires_ms`, milliseconds of the database's own clock), how many decisions
//! it wrote (`generation`, which followers watch), and until when a reconcile
//! push of the holder may still run on a node (`pushes_until_ms`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KcLease {
    Table,
    Id,
    Holder,
    Address,
    Epoch,
    ExpiresMs,
    Generation,
    PushesUntilMs,
}

#[derive(DeriveIden)]
enum KcMoveLedger {
    Table,
    Epoch,
}

#[derive(DeriveIden)]
enum KcEventLog {
    Table,
    Epoch,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KcLease::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(KcLease::Id).integer().not_null().primary_key())
                    .col(ColumnDef::new(KcLease::Holder).string_len(255).null())
                    .col(ColumnDef::new(KcLease::Address).string_len(255).null())
                    .col(ColumnDef::new(KcLease::Epoch).big_integer().not_null().default(0))
                    .col(ColumnDef::new(KcLease::ExpiresMs).big_integer().not_null().default(0))
                    .col(ColumnDef::new(KcLease::Generation).big_integer().not_null().default(0))
                    .col(ColumnDef::new(KcLease::PushesUntilMs).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        let row = Query::select().expr(Expr::col(KcLease::Id)).from(KcLease::Table).to_owned();
        let db = manager.get_connection();
        if db.query_one(&row).await?.is_none() {
            let insert = Query::insert().into_table(KcLease::Table).columns([KcLease::Id]).values_panic([1.into()]).to_owned();
            db.execute(&insert).await?;
        }
        if !manager.has_column("kc_move_ledger", "epoch").await? {
            let add = ColumnDef::new(KcMoveLedger::Epoch).big_integer().null().to_owned();
            manager.alter_table(Table::alter().table(KcMoveLedger::Table).add_column(add).to_owned()).await?;
        }
        if !manager.has_column("kc_event_log", "epoch").await? {
            let add = ColumnDef::new(KcEventLog::Epoch).big_integer().null().to_owned();
            manager.alter_table(Table::alter().table(KcEventLog::Table).add_column(add).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("kc_move_ledger", "epoch").await? {
            manager.alter_table(Table::alter().table(KcMoveLedger::Table).drop_column(KcMoveLedger::Epoch).to_owned()).await?;
        }
        if manager.has_column("kc_event_log", "epoch").await? {
            manager.alter_table(Table::alter().table(KcEventLog::Table).drop_column(KcEventLog::Epoch).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(KcLease::Table).if_exists().to_owned()).await
    }
}
