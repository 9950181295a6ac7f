//! Migrations on an empty database and on databases the Kuma nodes already own:
//! kuma-cluster creates its own tables only, never Kuma's, and its supervisor
//! waits until the nodes have created theirs.

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

async fn on_an_empty_database_migrations_create_only_kuma_clusters_own_tables(t: TestDb) {
    store::migrate(&t.db).await.unwrap();
    let manager = migration::SchemaManager::new(&t.db);
    for table in ["node", "monitor", "user"] {
        assert!(!manager.has_table(table).await.unwrap(), "{table} belongs to the Kuma nodes");
    }
    for table in ["kc_move_ledger", "kc_event_log", "kc_node_admin"] {
        assert!(manager.has_table(table).await.unwrap(), "{table} is kuma-cluster's");
    }
    assert_eq!(store::missing_kuma_tables(&t.db).await.unwrap(), vec!["node", "monitor"]);
    // the nodes' own migrations then create theirs
    kuma_tables(&t, true).await;
    assert!(store::missing_kuma_tables(&t.db).await.unwrap().is_empty());
    let rows = store::load(&t.db).await.unwrap();
    assert_eq!(rows.nodes.len(), 2);
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger").await, 0);
    t.drop_db().await;
}

async fn the_supervisor_waits_not_ready_until_the_nodes_have_created_their_tables(t: TestDb) {
    store::migrate(&t.db).await.unwrap();
    let sup = common::Supervisor::start(&t, std::rc::Rc::new(common::SilentProbe), &[]);
    common::eventually(std::time::Duration::from_secs(30), "the supervisor looked for the tables", || async {
        sup.state().await.waiting_for == vec!["node".to_string(), "monitor".to_string()]
    })
    .await;
    let refused = sup.addr.send(kuma_cluster::supervisor::actors::cluster::Reconcile).await.unwrap();
    assert!(refused.unwrap_err().contains("waiting for the Kuma nodes to create node, monitor"));
    assert!(!sup.state().await.started);
    kuma_tables(&t, true).await;
    common::eventually(std::time::Duration::from_secs(30), "the supervisor sees the tables, then the nodes' rows", || async {
        let state = sup.state().await;
        state.waiting_for.is_empty() && state.nodes.len() == 2
    })
    .await;
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

async fn an_unpatched_monitor_table_is_left_as_it_is_and_reported_missing_its_ownership_columns(t: TestDb) {
    kuma_tables(&t, false).await;
    let (schema, data) = (t.schema_of("monitor").await, kuma_data(&t).await);
    store::migrate(&t.db).await.unwrap();
    assert_eq!(t.schema_of("monitor").await, schema, "kuma-cluster never alters Kuma's tables");
    assert_eq!(kuma_data(&t).await, data);
    assert_eq!(store::missing_kuma_tables(&t.db).await.unwrap(), vec!["monitor.node_id", "monitor.assigned_node"]);
    t.drop_db().await;
}

async fn rerunning_the_migrations_changes_nothing(t: TestDb) {
    kuma_tables(&t, true).await;
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
    on_an_empty_database_migrations_create_only_kuma_clusters_own_tables,
    the_supervisor_waits_not_ready_until_the_nodes_have_created_their_tables,
    migrations_leave_a_patched_kuma_database_and_its_data_intact,
    an_unpatched_monitor_table_is_left_as_it_is_and_reported_missing_its_ownership_columns,
    rerunning_the_migrations_changes_nothing,
    rolling_back_removes_only_kuma_clusters_own_tables,
);
