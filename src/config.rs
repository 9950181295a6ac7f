//! Settings: `config/default.toml` (compiled in), an optional file, then
//! `KUMA_CLUSTER__<SECTION>__<KEY>` environment variables. Every value is checked
//! here, so the rest of the program only sees valid settings.

use crate::core::model::NodeSpec;
use crate::core::waves::Pace;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A bad setting, named by its key so the operator can find it in one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    pub proxy: ProxySettings,
    pub api: ApiSettings,
    pub health: HealthSettings,
    pub cluster: ClusterSettings,
    pub placement: PlacementSettings,
    pub nodes: NodeSettings,
    pub ha: HaSettings,
}

#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: String,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time to wait for a pooled connection.
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    /// `url` with the default timeouts.
    pub fn with_url(url: &str) -> Self {
        DatabaseSettings { url: url.to_owned(), connect_timeout: Duration::from_secs(5), acquire_timeout: Duration::from_secs(3) }
    }
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Open client connections, all workers together; more are answered 503.
    pub max_connections: usize,
    /// Open client connections from one address; more are answered 429.
    pub max_connections_per_client: usize,
    /// Largest request head (request line and headers); larger is answered 431.
    pub max_header_size: usize,
}

#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_body: u64,
    pub pool_keep_alive: Duration,
    pub ws_idle_timeout: Duration,
    pub ws_max_frame: usize,
    pub fail_open: bool,
    /// Peers whose X-Forwarded-* and similar headers are believed; every other
    /// client's are replaced.
    pub trusted_proxies: Vec<Network>,
    /// Open websockets through this process, and to one node; more are answered 503.
    pub ws_max_total: usize,
    pub ws_max_per_node: usize,
    /// A side of a websocket that takes longer than this to take a frame is closed.
    pub ws_write_timeout: Duration,
    /// 0: one per CPU core.
    pub workers: usize,
}

/// Access to the operations API. Deliberately not `Debug`: it holds secrets.
#[derive(Clone)]
pub struct ApiSettings {
    pub tokens: Vec<String>,
    pub allow: Vec<Network>,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings").field("tokens", &self.tokens.len()).field("allow", &self.allow).finish()
    }
}

/// A client network, `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub address: std::net::IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Option<Network> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse().ok()?, p.parse().ok()?),
            None => {
                let address: std::net::IpAddr = text.trim().parse().ok()?;
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if matches!(address, std::net::IpAddr::V4(_)) { 32 } else { 128 };
        (prefix <= max).then_some(Network { address, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (V4(net), V4(ip)) => prefix_match(&net.octets(), &ip.octets(), self.prefix),
            (V6(net), V6(ip)) => prefix_match(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_match(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, rest) = ((prefix / 8) as usize, prefix % 8);
    net[..whole] == ip[..whole] && (rest == 0 || (net[whole] ^ ip[whole]) >> (8 - rest) == 0)
}

#[derive(Clone, Debug)]
pub struct HealthSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive refused connections or error answers that make a node down.
    pub fall: u32,
    /// Consecutive failures that make a node down when they include timeouts
    /// only: a timeout is weak evidence (the node may just be busy).
    pub timeout_fall: u32,
    pub rise: u32,
    pub down_interval: Duration,
    /// How long after it was sent a timed-out probe may still be answered: a
    /// late answer forgives the timeouts, so a busy node is not taken for dead.
    /// Never shorter than `timeout` (equal: no late answers).
    pub late_answer_wait: Duration,
}

#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub hold_down: Duration,
    pub reconcile_interval: Duration,
    pub flap_window: Duration,
    pub flap_max_transitions: u32,
    /// Largest share of the nodes (percent) that may be down on timeouts alone
    /// at once; past it, a shared cause is suspected and the verdict is held.
    pub max_ejection_percent: u8,
    /// A decision (read, decide, write, commit) not done by then is failed
    /// and retried with backoff.
    pub decision_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct PlacementSettings {
    pub limit_per_node: usize,
    /// Place active monitors with neither a home nor an override; by default
    /// they stay unassigned (the nodes' "NA").
    pub place_unassigned: bool,
}

#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub auth_header: Option<String>,
    /// The part of a reconcile push's timeout that does not grow with its work.
    pub reconcile_timeout: Duration,
    /// The nodes' start rate and cron, which size the waves.
    pub pace: Pace,
    pub static_nodes: Vec<StaticNode>,
}

/// Several replicas on one database: one leads (holds the lease), every one
/// serves traffic.
#[derive(Clone, Debug)]
pub struct HaSettings {
    /// How long a lease is good for after its last renewal, on the database's clock.
    pub lease_ttl: Duration,
    /// How often the leader renews its lease.
    pub renew_interval: Duration,
    /// How often a follower reads the lease: for a newer decision to load, or a
    /// lease to take.
    pub poll_interval: Duration,
    /// Unique among the replicas: from the setting, or host name, process id
    /// and a random part.
    pub replica_id: String,
    /// Where the other replicas reach this one's `/lb/` API (host:port or a URL).
    pub advertise: Option<String>,
}

/// A node registered from configuration rather than by the node itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    pub id: String,
    pub host: String,
    pub name: Option<String>,
}

impl StaticNode {
    /// The row to register for this node while the table lacks it.
    pub fn spec(&self) -> NodeSpec {
        NodeSpec {
            id: self.id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.id.clone()),
            host: self.host.clone(),
            active: true,
            primary: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    database: RawDatabase,
    server: RawServer,
    proxy: RawProxy,
    api: RawApi,
    health: RawHealth,
    cluster: RawCluster,
    placement: RawPlacement,
    nodes: RawNodes,
    ha: RawHa,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHa {
    lease_ttl: String,
    renew_interval: String,
    poll_interval: String,
    replica_id: String,
    advertise: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    connect_timeout: String,
    acquire_timeout: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    max_connections: usize,
    max_connections_per_client: usize,
    max_header_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    connect_timeout: String,
    read_timeout: String,
    max_body: u64,
    pool_keep_alive: String,
    ws_idle_timeout: String,
    ws_max_frame: usize,
    fail_open: bool,
    trusted_proxies: Vec<String>,
    /// Replaced by `trusted_proxies`; named here to say so instead of "unknown field".
    #[serde(default)]
    trust_forwarded: Option<serde::de::IgnoredAny>,
    ws_max_total: usize,
    ws_max_per_node: usize,
    ws_write_timeout: String,
    workers: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    tokens: Vec<String>,
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: String,
    interval: String,
    timeout: String,
    fall: u32,
    timeout_fall: u32,
    rise: u32,
    down_interval: String,
    late_answer_wait: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    hold_down: String,
    reconcile_interval: String,
    flap_window: String,
    flap_max_transitions: u32,
    max_ejection_percent: u8,
    decision_timeout: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    limit_per_node: usize,
    place_unassigned: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodes {
    auth_header: String,
    reconcile_timeout: String,
    start_rate: f64,
    cron_period: String,
    cron_margin: String,
    #[serde(default, rename = "static")]
    static_nodes: Vec<StaticNode>,
}

impl Settings {
    /// Loads the defaults, then `file` when given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`] with the environment passed in, so tests need not
    /// change the process environment.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!("{}: no such file", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("KUMA_CLUSTER__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("KUMA_CLUSTER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("api.tokens")
                .with_list_parse_key("api.allow")
                .with_list_parse_key("proxy.trusted_proxies")
                .source(Some(env)),
        );
        let raw: Raw = builder
            .build()
            .and_then(config::Config::try_deserialize)
            // TOML's errors quote the line over several: one line for the log
            .map_err(|e| ConfigError::Load(e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")))?;
        Self::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let url = raw.database.url.trim().to_owned();
        if !(url.starts_with("sqlite:") || url.starts_with("mysql://") || url.starts_with("mariadb://")) {
            return Err(invalid("database.url", "expected sqlite:... or mysql://..."));
        }
        let listen = raw
            .server
            .listen
            .parse()
            .map_err(|_| invalid("server.listen", format!("expected host:port, got {:?}", raw.server.listen)))?;
        let proxy = ProxySettings {
            connect_timeout: positive_duration("proxy.connect_timeout", &raw.proxy.connect_timeout)?,
            read_timeout: positive_duration("proxy.read_timeout", &raw.proxy.read_timeout)?,
            max_body: raw.proxy.max_body,
            pool_keep_alive: positive_duration("proxy.pool_keep_alive", &raw.proxy.pool_keep_alive)?,
            ws_idle_timeout: positive_duration("proxy.ws_idle_timeout", &raw.proxy.ws_idle_timeout)?,
            ws_max_frame: raw.proxy.ws_max_frame,
            fail_open: raw.proxy.fail_open,
            trusted_proxies: networks("proxy.trusted_proxies", &raw.proxy.trusted_proxies)?,
            ws_max_total: raw.proxy.ws_max_total,
            ws_max_per_node: raw.proxy.ws_max_per_node,
            ws_write_timeout: positive_duration("proxy.ws_write_timeout", &raw.proxy.ws_write_timeout)?,
            workers: raw.proxy.workers,
        };
        if raw.proxy.trust_forwarded.is_some() {
            return Err(invalid(
                "proxy.trust_forwarded",
                "was replaced by proxy.trusted_proxies: list the networks of the proxies in front, e.g. [\"10.0.0.0/8\"]",
            ));
        }
        if proxy.ws_max_total == 0 || proxy.ws_max_per_node == 0 {
            return Err(invalid("proxy.ws_max_total", "ws_max_total and ws_max_per_node must be at least 1"));
        }
        let server = ServerSettings {
            listen,
            max_connections: raw.server.max_connections,
            max_connections_per_client: raw.server.max_connections_per_client,
            max_header_size: raw.server.max_header_size,
        };
        if server.max_connections == 0 || server.max_connections_per_client == 0 {
            return Err(invalid("server.max_connections", "max_connections and max_connections_per_client must be at least 1"));
        }
        if !(1024..=MAX_HEAD).contains(&server.max_header_size) {
            return Err(invalid("server.max_header_size", format!("must be 1024 to {MAX_HEAD} bytes (the HTTP server's own limit)")));
        }
        if !(1024..=MAX_SIZE as usize).contains(&proxy.ws_max_frame) {
            return Err(invalid("proxy.ws_max_frame", "must be 1024 bytes to 1 GiB"));
        }
        if proxy.max_body > MAX_SIZE {
            return Err(invalid("proxy.max_body", "must be at most 1 GiB"));
        }
        let tokens: Vec<String> = raw.api.tokens.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        if let Some(i) = tokens.iter().position(|t| t.len() < 16) {
            return Err(invalid("api.tokens", format!("token {} is shorter than 16 characters", i + 1)));
        }
        let allow = networks("api.allow", &raw.api.allow)?;
        if !raw.health.path.starts_with('/') {
            return Err(invalid("health.path", "must start with /"));
        }
        let health = HealthSettings {
            path: raw.health.path,
            interval: positive_duration("health.interval", &raw.health.interval)?,
            timeout: positive_duration("health.timeout", &raw.health.timeout)?,
            fall: at_least_one("health.fall", raw.health.fall)?,
            timeout_fall: at_least_one("health.timeout_fall", raw.health.timeout_fall)?,
            rise: at_least_one("health.rise", raw.health.rise)?,
            down_interval: positive_duration("health.down_interval", &raw.health.down_interval)?,
            // a wait no longer than the timeout is none
            late_answer_wait: duration("health.late_answer_wait", &raw.health.late_answer_wait)?
                .max(positive_duration("health.timeout", &raw.health.timeout)?),
        };
        let cluster = ClusterSettings {
            hold_down: duration("cluster.hold_down", &raw.cluster.hold_down)?,
            reconcile_interval: positive_duration("cluster.reconcile_interval", &raw.cluster.reconcile_interval)?,
            flap_window: duration("cluster.flap_window", &raw.cluster.flap_window)?,
            flap_max_transitions: at_least_one("cluster.flap_max_transitions", raw.cluster.flap_max_transitions)?,
            max_ejection_percent: raw.cluster.max_ejection_percent,
            decision_timeout: positive_duration("cluster.decision_timeout", &raw.cluster.decision_timeout)?,
        };
        if cluster.max_ejection_percent > 100 {
            return Err(invalid("cluster.max_ejection_percent", "must be 0 to 100"));
        }
        if health.timeout_fall < health.fall {
            return Err(invalid("health.timeout_fall", "must be at least health.fall: a timeout is weaker evidence than a refusal"));
        }
        let start_rate = raw.nodes.start_rate;
        if !(start_rate.is_finite() && (0.1..=1_000_000.0).contains(&start_rate)) {
            return Err(invalid("nodes.start_rate", "must be 0.1 to 1000000 monitors per second"));
        }
        let pace = Pace {
            start_rate,
            cron_period: positive_duration("nodes.cron_period", &raw.nodes.cron_period)?,
            margin: duration("nodes.cron_margin", &raw.nodes.cron_margin)?,
        };
        if pace.margin * 4 >= pace.cron_period {
            return Err(invalid("nodes.cron_margin", "must be less than a quarter of nodes.cron_period"));
        }
        if raw.placement.limit_per_node == 0 {
            return Err(invalid("placement.limit_per_node", "must be at least 1"));
        }
        let auth_header = raw.nodes.auth_header.trim().to_owned();
        if actix_web::http::header::HeaderValue::from_str(&auth_header).is_err() {
            return Err(invalid("nodes.auth_header", "must be visible ASCII and spaces, without line breaks"));
        }
        let mut seen = std::collections::HashSet::new();
        for node in &raw.nodes.static_nodes {
            if node.id.is_empty() || node.id.len() > 50 {
                return Err(invalid("nodes.static", format!("node id {:?} must be 1 to 50 characters", node.id)));
            }
            if node.host.is_empty() || node.host.len() > 45 {
                return Err(invalid("nodes.static", format!("host of {} must be 1 to 45 characters", node.id)));
            }
            if !seen.insert(node.id.as_str()) {
                return Err(invalid("nodes.static", format!("node id {} appears twice", node.id)));
            }
        }
        let ha = HaSettings {
            lease_ttl: positive_duration("ha.lease_ttl", &raw.ha.lease_ttl)?,
            renew_interval: positive_duration("ha.renew_interval", &raw.ha.renew_interval)?,
            poll_interval: positive_duration("ha.poll_interval", &raw.ha.poll_interval)?,
            replica_id: match raw.ha.replica_id.trim() {
                "" => default_replica_id(),
                id if id.len() > 255 || id.chars().any(char::is_control) => {
                    return Err(invalid("ha.replica_id", "must be 1 to 255 characters without control characters"))
                }
                id => id.to_owned(),
            },
            advertise: match raw.ha.advertise.trim() {
                "" => advertised(listen),
                a if a.len() > 255 || a.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                    return Err(invalid("ha.advertise", "must be host:port or an http:// URL, at most 255 characters"))
                }
                a => Some(a.to_owned()),
            },
        };
        if ha.renew_interval * 2 > ha.lease_ttl {
            return Err(invalid("ha.renew_interval", "must be at most half of ha.lease_ttl, so one lost renewal does not lose the lease"));
        }
        Ok(Settings {
            database: DatabaseSettings {
                url,
                connect_timeout: positive_duration("database.connect_timeout", &raw.database.connect_timeout)?,
                acquire_timeout: positive_duration("database.acquire_timeout", &raw.database.acquire_timeout)?,
            },
            server,
            proxy,
            api: ApiSettings { tokens, allow },
            health,
            cluster,
            placement: PlacementSettings {
                limit_per_node: raw.placement.limit_per_node,
                place_unassigned: raw.placement.place_unassigned,
            },
            nodes: NodeSettings {
                auth_header: (!auth_header.is_empty()).then_some(auth_header),
                reconcile_timeout: positive_duration("nodes.reconcile_timeout", &raw.nodes.reconcile_timeout)?,
                pace,
                static_nodes: raw.nodes.static_nodes,
            },
            ha,
        })
    }
}

/// Host name, process id and a random part: unique among replicas, and new at
/// every start, so a restarted replica never takes itself for its old self.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kuma-cluster".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// The listen address, when other replicas can reach it as it is: not a
/// wildcard address.
fn advertised(listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_unspecified()).then(|| listen.to_string())
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

/// The largest size in bytes any setting takes.
const MAX_SIZE: u64 = 1 << 30;
/// actix-http answers 431 itself to a request head past 128 KiB.
const MAX_HEAD: usize = 128 * 1024;

/// A list of `address[/prefix]`; blank entries are skipped.
fn networks(key: &'static str, texts: &[String]) -> Result<Vec<Network>, ConfigError> {
    texts
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| Network::parse(n).ok_or_else(|| invalid(key, format!("{n:?} is not an address or address/prefix"))))
        .collect()
}

/// The longest duration any setting takes: a longer one is a typo.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|_| invalid(key, format!("expected a duration like \"2s\" or \"500ms\", got {text:?}")))?;
    if d > MAX_DURATION {
        return Err(invalid(key, format!("{text:?} is longer than the most any setting takes, 24h")));
    }
    Ok(d)
}

fn positive_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    match duration(key, text)? {
        d if d.is_zero() => Err(invalid(key, "must be greater than zero")),
        d => Ok(d),
    }
}

fn at_least_one(key: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.health.interval, Duration::from_secs(2));
        assert_eq!(s.health.timeout, Duration::from_secs(1));
        assert_eq!((s.health.fall, s.health.rise), (3, 2));
        assert_eq!(s.health.down_interval, Duration::from_secs(5));
        assert_eq!(s.health.late_answer_wait, Duration::from_secs(30));
        assert_eq!(s.health.path, "/api/v1/health");
        assert_eq!(s.cluster.hold_down, Duration::from_secs(10));
        assert_eq!(s.cluster.reconcile_interval, Duration::from_secs(10));
        assert_eq!(s.placement.limit_per_node, 1000);
        assert!(!s.placement.place_unassigned, "the nodes' NA stays unplaced unless asked");
        assert_eq!(s.nodes.auth_header, None);
        assert!(s.database.url.starts_with("sqlite:"));
        assert_eq!(s.proxy.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.proxy.max_body, 100 * 1024 * 1024);
        assert!(!s.proxy.fail_open && s.proxy.trusted_proxies.is_empty());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("KUMA_CLUSTER__HEALTH__INTERVAL", "250ms"),
                ("KUMA_CLUSTER__HEALTH__FALL", "5"),
                ("KUMA_CLUSTER__NODES__AUTH_HEADER", "Bearer abc"),
                ("KUMA_CLUSTER__DATABASE__URL", "mysql://root@127.0.0.1:3306/test"),
            ]),
        )
        .unwrap();
        assert_eq!(s.health.interval, Duration::from_millis(250));
        assert_eq!(s.health.fall, 5);
        assert_eq!(s.nodes.auth_header.as_deref(), Some("Bearer abc"));
        assert_eq!(s.database.url, "mysql://root@127.0.0.1:3306/test");
    }

    #[test]
    fn a_file_overrides_defaults_and_adds_static_nodes() {
        let dir = std::env::temp_dir().join(format!("kc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        std::fs::write(
            &path,
            "[cluster]\nhold_down = \"30s\"\n[[nodes.static]]\nid = \"node9\"\nhost = \"10.0.0.9:3001\"\n",
        )
        .unwrap();
        let s = Settings::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(s.cluster.hold_down, Duration::from_secs(30));
        assert_eq!(s.nodes.static_nodes.len(), 1);
        assert_eq!(s.nodes.static_nodes[0].id, "node9");
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__HEALTH__INTERVAL", "soon")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: health.interval: expected a duration like \"2s\" or \"500ms\", got \"soon\""
        );
    }

    #[test]
    fn zero_thresholds_and_limits_are_refused() {
        for (key, name) in [
            ("KUMA_CLUSTER__HEALTH__FALL", "health.fall"),
            ("KUMA_CLUSTER__HEALTH__RISE", "health.rise"),
            ("KUMA_CLUSTER__PLACEMENT__LIMIT_PER_NODE", "placement.limit_per_node"),
            ("KUMA_CLUSTER__HEALTH__TIMEOUT", "health.timeout"),
        ] {
            let value = if key.ends_with("TIMEOUT") { "0s" } else { "0" };
            let err = Settings::load_with_env(None, env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().starts_with(&format!("config: {name}: ")), "{err}");
        }
    }

    #[test]
    fn a_late_answer_wait_no_longer_than_the_probe_timeout_is_no_wait() {
        let s = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__HEALTH__LATE_ANSWER_WAIT", "0s")])).unwrap();
        assert_eq!(s.health.late_answer_wait, s.health.timeout, "no probe waits past its timeout");
        let s = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__HEALTH__TIMEOUT", "1m")])).unwrap();
        assert_eq!(s.health.late_answer_wait, Duration::from_secs(60), "a long timeout needs no second setting");
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__HEALTH__LATE_ANSWER_WAIT", "soon")])).unwrap_err();
        assert!(err.to_string().starts_with("config: health.late_answer_wait: "), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused() {
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__HEALTH__INTERVALL", "2s")])).unwrap_err();
        assert!(err.to_string().contains("intervall"), "{err}");
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__SERVER__LISTEN", "port 80")])).unwrap_err();
        assert!(err.to_string().starts_with("config: server.listen: "), "{err}");
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__DATABASE__URL", "postgres://x")])).unwrap_err();
        assert!(err.to_string().starts_with("config: database.url: "), "{err}");
    }

    #[test]
    fn api_tokens_and_networks_come_from_the_environment_as_lists() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("KUMA_CLUSTER__API__TOKENS", "first-token-0123456789,second-token-0123456789"),
                ("KUMA_CLUSTER__API__ALLOW", "10.0.0.0/8,::1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.api.tokens, vec!["first-token-0123456789", "second-token-0123456789"]);
        assert_eq!(s.api.allow.len(), 2);
        assert!(!format!("{:?}", s.api).contains("first-token"), "tokens never reach debug output");
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__API__TOKENS", "short")])).unwrap_err();
        assert_eq!(err.to_string(), "config: api.tokens: token 1 is shorter than 16 characters");
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__API__ALLOW", "10.0.0.0/33")])).unwrap_err();
        assert!(err.to_string().starts_with("config: api.allow: "), "{err}");
    }

    #[test]
    fn trusted_proxies_are_networks_and_the_old_boolean_is_refused_with_its_replacement() {
        let s = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__PROXY__TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7")])).unwrap();
        assert_eq!(s.proxy.trusted_proxies.len(), 2);
        assert!(s.proxy.trusted_proxies[1].contains("192.168.1.7".parse().unwrap()));
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__PROXY__TRUSTED_PROXIES", "proxy.local")])).unwrap_err();
        assert!(err.to_string().starts_with("config: proxy.trusted_proxies: "), "{err}");
        let err = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__PROXY__TRUST_FORWARDED", "true")])).unwrap_err();
        assert!(err.to_string().contains("replaced by proxy.trusted_proxies"), "{err}");
    }

    #[test]
    fn connection_header_and_websocket_caps_are_bounded() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!((s.server.max_connections, s.server.max_connections_per_client), (8192, 2048));
        assert_eq!(s.server.max_header_size, 32 * 1024);
        assert_eq!((s.proxy.ws_max_total, s.proxy.ws_max_per_node), (4096, 2048));
        assert_eq!(s.proxy.ws_write_timeout, Duration::from_secs(30));
        for (key, value, name) in [
            ("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS", "0", "server.max_connections"),
            ("KUMA_CLUSTER__SERVER__MAX_HEADER_SIZE", "200000", "server.max_header_size"),
            ("KUMA_CLUSTER__SERVER__MAX_HEADER_SIZE", "100", "server.max_header_size"),
            ("KUMA_CLUSTER__PROXY__WS_MAX_PER_NODE", "0", "proxy.ws_max_total"),
            ("KUMA_CLUSTER__PROXY__WS_WRITE_TIMEOUT", "0s", "proxy.ws_write_timeout"),
        ] {
            let err = Settings::load_with_env(None, env(&[(key, value)])).unwrap_err().to_string();
            assert!(err.starts_with(&format!("config: {name}: ")), "{key}={value}: {err}");
        }
    }

    #[test]
    fn networks_match_addresses_by_prefix() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.255.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped addresses count as IPv4");
        let odd = Network::parse("192.168.4.0/22").unwrap();
        assert!(odd.contains("192.168.7.255".parse().unwrap()));
        assert!(!odd.contains("192.168.8.0".parse().unwrap()));
        assert!(Network::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert_eq!(Network::parse("0.0.0.0/0").map(|n| n.contains("8.8.8.8".parse().unwrap())), Some(true));
        assert_eq!(Network::parse("nonsense"), None);
    }

    #[test]
    fn absurd_durations_and_sizes_and_broken_headers_are_refused_in_one_line() {
        for (key, value, name) in [
            ("KUMA_CLUSTER__HEALTH__INTERVAL", "580000000000y", "health.interval"),
            ("KUMA_CLUSTER__CLUSTER__DECISION_TIMEOUT", "2d", "cluster.decision_timeout"),
            ("KUMA_CLUSTER__DATABASE__ACQUIRE_TIMEOUT", "0s", "database.acquire_timeout"),
            ("KUMA_CLUSTER__PROXY__MAX_BODY", "1099511627776", "proxy.max_body"),
            ("KUMA_CLUSTER__PROXY__WS_MAX_FRAME", "1099511627776", "proxy.ws_max_frame"),
            ("KUMA_CLUSTER__NODES__AUTH_HEADER", "Bearer a\nX-Evil: 1", "nodes.auth_header"),
        ] {
            let err = Settings::load_with_env(None, env(&[(key, value)])).unwrap_err().to_string();
            assert!(err.starts_with(&format!("config: {name}: ")), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let s = Settings::load_with_env(None, env(&[("KUMA_CLUSTER__HEALTH__INTERVAL", "24h")])).unwrap();
        assert_eq!(s.health.interval, Duration::from_secs(86_400), "a day is still a duration");
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("kc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broken.toml");
        std::fs::write(&file, "[health]\ninterval = \"2s\n").unwrap();
        let err = Settings::load_with_env(Some(&file), env(&[])).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.starts_with("config: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("broken.toml"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Settings::load_with_env(Some(Path::new("/nonexistent/kc.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kc.toml"), "{err}");
    }
}
