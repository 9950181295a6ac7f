//! Migrations on an empty database and on databases the Kuma nodes already own.

mod common;

use common::TestDb;
use kuma_cluster::supervisor::store;
use migration::{Migrator, MigratorTrait};
use sea_orm::DbBackend;

async fn kuma_tables(t: &TestDb, patched: bool) {
    let ownership = if patched { ", node_id VARCHAR(50) NULL, assigned_node VARCHAR(255) NULL" } else { "" };
    match t.backend() {
        DbBackend::Sqlite => {
            t.exec(
                "CREATE TABLE node (node_id VARCHAR(50) NOT NULL PRIMARY KEY, node_name VARCHAR(100) NOT NULL, \
                 location VARCHAR(200), host VARCHAR(45), hostname VARCHAR(100), status VARCHAR(20) DEFAULT 'online', \
                 active BOOLEAN DEFAULT 1, is_primary BOOLEAN DEFAULT 0, created_date DATETIME DEFAULT CURRENT_TIMESTAMP, \
                 modified_date DATETIME DEFAULT CURRENT_TIMESTAMP, last_seen DATETIME DEFAULT CURRENT_TIMESTAMP)",
            )
            .await;
            t.exec(&format!(
                "CREATE TABLE monitor (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(150), active BOOLEAN NOT NULL DEFAULT 1, \
                 user_id INTEGER, `interval` INTEGER NOT NULL DEFAULT 20, url TEXT, type VARCHAR(20), weight INTEGER DEFAULT 2000, \
                 created_date DATETIME DEFAULT CURRENT_TIMESTAMP{ownership})"
            ))
            .await;
        }
        _ => {
            t.exec(
                "CREATE TABLE node (node_id VARCHAR(50) NOT NULL PRIMARY KEY, node_name VARCHAR(100) NOT NULL, \
                 location VARCHAR(200) NULL, host VARCHAR(45) NULL, hostname VARCHAR(100) NULL, status VARCHAR(20) DEFAULT 'online', \
                 active TINYINT(1) DEFAULT 1, is_primary TINYINT(1) DEFAULT 0, created_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
                 modified_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP, last_seen TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
                 KEY node_node_name_index (node_name), KEY node_status_index (status))",
            )
            .await;
            t.exec(&format!(
                "CREATE TABLE monitor (id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(150), \
                 active TINYINT(1) NOT NULL DEFAULT 1, user_id INT UNSIGNED, `interval` INT NOT NULL DEFAULT 20, url TEXT, \
                 type VARCHAR(20), weight INT DEFAULT 2000, created_date DATETIME DEFAULT CURRENT_TIMESTAMP{ownership})"
            ))
            .await;
        }
    }
    t.exec("INSERT INTO node (node_id, node_name, host, is_primary) VALUES ('node1', 'Node 1', 'kuma1:3001', 1), ('node2', 'Node 2', 'kuma2:3001', 0)").await;
    t.exec("INSERT INTO monitor (name, `interval`, url, type) VALUES ('site', 60, 'https://example.org', 'http'), ('api', 30, 'https://api.example.org', 'http')").await;
    if patched {
        t.exec("UPDATE monitor SET node_id = 'node1' WHERE name = 'site'").await;
        t.exec("UPDATE monitor SET node_id = 'node2', assigned_node = 'node1' WHERE name = 'api'").await;
    }
}

async fn kuma_data(t: &TestDb) -> Vec<Vec<Option<String>>> {
    let mut rows = t
        .rows(
            "SELECT CAST(id AS CHAR), name, CAST(`interval` AS CHAR), url, type, CAST(weight AS CHAR) FROM monitor ORDER BY id",
            6,
        )
        .await;
    rows.extend(t.rows("SELECT node_id, node_name, host, status FROM node ORDER BY node_id", 4).await);
    rows
}

async fn migrations_create_the_schema_on_an_empty_database(t: TestDb) {
    t.migrate().await;
    t.add_node("node1", "kuma1:3001").await;
    t.add_monitors("node1", 3).await;
    let rows = store::load(&t.db).await.unwrap();
    assert_eq!(rows.nodes.len(), 1);
    assert!(rows.nodes[0].enabled && rows.nodes[0].is_primary);
    assert_eq!(rows.monitors.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(rows.monitors.iter().all(|m| m.active && m.home.as_deref() == Some("node1") && m.assigned.is_none()));
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger").await, 0);
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_event_log").await, 0);
    t.drop_db().await;
}

async fn migrations_leave_a_patched_kuma_database_and_its_data_intact(t: TestDb) {
    kuma_tables(&t, true).await;
    let (node_schema, monitor_schema, data) = (t.schema_of("node").await, t.schema_of("monitor").await, kuma_data(&t).await);
    t.migrate().await;
    assert_eq!(t.schema_of("node").await, node_schema);
    assert_eq!(t.schema_of("monitor").await, monitor_schema);
    assert_eq!(kuma_data(&t).await, data);
    let rows = store::load(&t.db).await.unwrap();
    assert_eq!(rows.monitors[1].home.as_deref(), Some("node2"));
    assert_eq!(rows.monitors[1].assigned.as_deref(), Some("node1"));
    t.drop_db().await;
}

async fn migrations_add_only_the_missing_ownership_columns_to_an_unpatched_monitor_table(t: TestDb) {
    kuma_tables(&t, false).await;
    let data = kuma_data(&t).await;
    t.migrate().await;
    assert_eq!(kuma_data(&t).await, data);
    let schema = t.schema_of("monitor").await;
    for column in ["node_id", "assigned_node", "interval", "user_id", "weight"] {
        assert!(schema.contains(column), "{column} missing from {schema}");
    }
    let rows = store::load(&t.db).await.unwrap();
    assert!(rows.monitors.iter().all(|m| m.home.is_none() && m.assigned.is_none()));
    t.drop_db().await;
}

async fn rerunning_the_migrations_changes_nothing(t: TestDb) {
    kuma_tables(&t, false).await;
    t.migrate().await;
    let tables = ["node", "monitor", "kc_move_ledger", "kc_event_log"];
    let mut before = Vec::new();
    for table in tables {
        before.push(t.schema_of(table).await);
    }
    let applied = t.count("SELECT COUNT(*) FROM seaql_migrations").await;
    let data = kuma_data(&t).await;
    t.migrate().await;
    Migrator::up(&t.db, None).await.unwrap();
    for (table, schema) in tables.iter().zip(before) {
        assert_eq!(t.schema_of(table).await, schema, "{table} changed");
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM seaql_migrations").await, applied);
    assert_eq!(kuma_data(&t).await, data);
    t.drop_db().await;
}

async fn rolling_back_removes_only_kuma_clusters_own_tables(t: TestDb) {
    kuma_tables(&t, true).await;
    let data = kuma_data(&t).await;
    t.migrate().await;
    Migrator::down(&t.db, None).await.unwrap();
    let manager = migration::SchemaManager::new(&t.db);
    assert!(!manager.has_table("kc_move_ledger").await.unwrap());
    assert!(!manager.has_table("kc_event_log").await.unwrap());
    assert!(manager.has_column("monitor", "assigned_node").await.unwrap());
    assert_eq!(kuma_data(&t).await, data);
    t.migrate().await;
    assert!(manager.has_table("kc_move_ledger").await.unwrap());
    t.drop_db().await;
}

on_both_backends!(
    migrations_create_the_schema_on_an_empty_database,
    migrations_leave_a_patched_kuma_database_and_its_data_intact,
    migrations_add_only_the_missing_ownership_columns_to_an_unpatched_monitor_table,
    rerunning_the_migrations_changes_nothing,
    rolling_back_removes_only_kuma_clusters_own_tables,
);
