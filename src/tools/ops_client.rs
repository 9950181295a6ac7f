//! The operator's command line client: calls the operations API and renders the
//! answers as tables (or passes the JSON through).

use serde_json::{json, Value};
use std::fmt::Write;
use std::time::Duration;

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Status,
    Nodes,
    Drain(String),
    Undrain(String),
    Maintenance(String),
    Rebalance { dry_run: bool, max_moves: Option<usize> },
    Move { monitors: Vec<u32>, to: String, pin: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{status}: {detail}")]
    Refused { status: u16, detail: String },
    #[error("the answer was not JSON: {0}")]
    BadAnswer(String),
}

pub struct OpsClient {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

impl OpsClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        OpsClient { base: base.trim_end_matches('/').to_owned(), token, http }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap_or(awc::http::Method::GET);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        let sent = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| ClientError::Unreachable { url: url.clone(), reason: e.to_string() })?;
        let bytes = response
            .body()
            .limit(16 << 20)
            .await
            .map_err(|e| ClientError::Unreachable { url, reason: e.to_string() })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        if !response.status().is_success() {
            let detail = value["detail"].as_str().unwrap_or("request refused").to_owned();
            return Err(ClientError::Refused { status: response.status().as_u16(), detail });
        }
        Ok(value)
    }

    /// Runs `action`; returns what to print.
    pub async fn run(&self, action: &Action, as_json: bool) -> Result<String, ClientError> {
        let (value, render): (Value, fn(&Value) -> String) = match action {
            Action::Status => (self.call("GET", "/lb/system-status", None).await?, render_status),
            Action::Nodes => (self.call("GET", "/lb/node-status", None).await?, render_nodes),
            Action::Drain(node) => (self.call("POST", &format!("/lb/nodes/{node}/drain"), None).await?, render_admin),
            Action::Undrain(node) => (self.call("POST", &format!("/lb/nodes/{node}/undrain"), None).await?, render_admin),
            Action::Maintenance(node) => {
                (self.call("POST", &format!("/lb/nodes/{node}/maintenance"), None).await?, render_admin)
            }
            Action::Rebalance { dry_run, max_moves } => {
                let body = json!({ "dry_run": dry_run, "max_moves": max_moves });
                (self.call("POST", "/lb/rebalance", Some(body)).await?, render_rebalance)
            }
            Action::Move { monitors, to, pin } => {
                let body = json!({ "monitor_ids": monitors, "to_node": to, "pin": pin });
                (self.call("POST", "/lb/monitors/move", Some(body)).await?, render_move)
            }
        };
        Ok(if as_json { serde_json::to_string_pretty(&value).unwrap_or_default() } else { render(&value) })
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns as wide as their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn render_nodes(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                text(&n["node_id"]),
                text(&n["state"]),
                text(&n["ready"]),
                text(&n["enabled"]),
                text(&n["monitor_count"]),
                text(&n["limit"]),
                text(&n["consecutive_failures"]),
                text(&n["last_error"]),
            ]
        })
        .collect();
    table(&["NODE", "STATE", "READY", "ENABLED", "MONITORS", "LIMIT", "FAILS", "LAST ERROR"], &rows)
}

pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let s = &v["supervisor"];
    let ha = &v["replica"];
    let leads = ha["role"] == "leader";
    let _ = match (leads, ha["leader_id"].as_str()) {
        (true, _) => writeln!(out, "replica {}: leader, epoch {}, lease until {}", text(&ha["replica_id"]), text(&ha["epoch"]), text(&ha["lease_expires_at"])),
        (false, Some(leader)) => writeln!(
            out,
            "replica {}: follower; leader {leader} at {}, epoch {}",
            text(&ha["replica_id"]),
            text(&ha["leader_address"]),
            text(&ha["epoch"])
        ),
        (false, None) => writeln!(out, "replica {}: follower; NO LEADER (a replica takes the lease within its time to live)", text(&ha["replica_id"])),
    };
    let _ = writeln!(
        out,
        "supervision {}, database {}, {} of {} nodes ready, {} monitors ({}% of ready capacity), routing generation {}",
        match (leads, s["started"] == true) {
            (false, _) => "by the leader",
            (true, true) => "running",
            (true, false) => "waiting for first verdicts",
        },
        if v["database"] == true { "reachable" } else { "UNREACHABLE" },
        text(&v["routing"]["ready_nodes"]),
        text(&v["routing"]["total_nodes"]),
        text(&v["capacity"]["total_monitors"]),
        text(&v["capacity"]["usage_percent"]),
        text(&v["routing"]["generation"]),
    );
    if let Some(error) = s["last_error"].as_str() {
        let _ = writeln!(out, "last decision failed: {error}");
    }
    out.push_str(&render_nodes(v));
    out
}

fn render_admin(v: &Value) -> String {
    format!(
        "{}: {} ({} monitors moved away, {} returned)",
        text(&v["node"]),
        text(&v["state"]).replace('_', " "),
        text(&v["summary"]["displaced"]),
        text(&v["summary"]["reverted"])
    )
}

fn render_rebalance(v: &Value) -> String {
    let r = &v["rebalance"];
    format!(
        "{} {} moves; load spread {} -> {}",
        if v["applied"] == true { "applied" } else { "dry run, would make" },
        text(&r["planned"]),
        text(&r["spread_before"]),
        text(&r["spread_after"])
    )
}

fn render_move(v: &Value) -> String {
    format!(
        "{} monitors moved to {}{}",
        text(&v["moved"]),
        text(&v["to_node"]),
        if v["pinned"] == true { " (pinned)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let out = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(out, "A    LONG\nxyz  1\nq    22");
    }

    #[test]
    fn node_rows_show_state_and_missing_values_as_dashes() {
        let v = json!({ "nodes": [{ "node_id": "node1", "state": "up", "ready": true, "enabled": true,
            "monitor_count": 10, "limit": 1000, "consecutive_failures": 0, "last_error": null }] });
        let out = render_nodes(&v);
        assert!(out.lines().nth(1).unwrap().starts_with("node1  up     true   true     10        1000   0      -"), "{out}");
    }
}
