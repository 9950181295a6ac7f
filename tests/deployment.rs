//! The container files, checked without a Docker engine: compose's services,
//! ports and variables agree with what the binary reads, the Kuma nodes get the
//! contract's variables, and the image and CI build the binary the same way.

mod common;

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `${NAME:?message}` and `${NAME}` become `sample-NAME`; `${NAME:-default}` its default.
fn substitute(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed placeholder") + start;
        let inner = &rest[start + 2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner.split(":?").next().unwrap(), None),
        };
        out.push_str(&default.map(str::to_owned).unwrap_or_else(|| format!("sample-{}-0123456789", name.to_lowercase())));
        rest = &rest[end + 1..];
    }
    out + rest
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), substitute(v.as_str().unwrap())))
        .collect()
}

#[test]
fn compose_services_and_variables_agree_with_the_binary_and_the_node_contract() {
    let compose: Value = serde_yaml::from_str(&read("docker/compose.yaml")).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["mariadb", "kuma-node1", "kuma-node2", "kuma-node3", "kuma-cluster"]);
    let db = environment(&compose["services"]["mariadb"]);

    // kuma-cluster: every variable is a key the binary accepts (unknown keys are errors)
    let kc = &compose["services"]["kuma-cluster"];
    let env = environment(kc);
    let settings = kuma_cluster::config::Settings::load_with_env(None, env.clone().into_iter().filter(|(k, _)| k.starts_with("KUMA_CLUSTER__")))
        .expect("compose's kuma-cluster environment is a valid configuration");
    let port = settings.server.listen.port();
    assert_eq!(kc["ports"][0].as_str().unwrap(), format!("{port}:{port}"), "the published port is the listen port");
    let url = &settings.database.url;
    let expected = format!("mysql://{}:{}@mariadb:3306/{}", db["MARIADB_USER"], db["MARIADB_PASSWORD"], db["MARIADB_DATABASE"]);
    assert_eq!(url, &expected, "kuma-cluster uses the MariaDB service's database and user");
    assert_eq!(kc["depends_on"]["mariadb"]["condition"], "service_healthy", "kuma-cluster waits for the database");
    let check: Vec<&str> = kc["healthcheck"]["test"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(check, ["CMD", "/usr/local/bin/kuma-cluster", "health", "--ready"]);
    assert_eq!(kc["build"]["dockerfile"], "docker/Dockerfile");

    // the nodes: the contract's variables, one primary, the image left to the user
    for i in 1..=3 {
        let node = &compose["services"][format!("kuma-node{i}").as_str()];
        assert!(node["image"].as_str().unwrap().starts_with("${KUMA_NODE_IMAGE:?"), "the node image is a variable");
        let env = environment(node);
        assert_eq!(env["UPTIME_KUMA_NODE_ID"], format!("node{i}"));
        assert_eq!(env["UPTIME_KUMA_NODE_HOST"], format!("kuma-node{i}:{}", env["UPTIME_KUMA_PORT"]));
        assert_eq!(env.get("UPTIME_KUMA_PRIMARY").map(String::as_str), (i == 1).then_some("true"));
        assert_eq!(env["UPTIME_KUMA_DB_TYPE"], "mariadb");
        assert_eq!(env["UPTIME_KUMA_DB_HOSTNAME"], "mariadb");
        assert_eq!(env["UPTIME_KUMA_DB_PORT"], "3306");
        assert_eq!(env["UPTIME_KUMA_DB_NAME"], db["MARIADB_DATABASE"]);
        assert_eq!(env["UPTIME_KUMA_DB_USERNAME"], db["MARIADB_USER"]);
        assert_eq!(env["UPTIME_KUMA_DB_PASSWORD"], db["MARIADB_PASSWORD"]);
        assert_eq!(node["depends_on"]["mariadb"]["condition"], "service_healthy");
        let test = serde_yaml::to_string(&node["healthcheck"]["test"]).unwrap();
        assert!(test.contains(&format!("127.0.0.1:{}/api/v1/health", env["UPTIME_KUMA_PORT"])), "{test}");
    }
    let db_check = serde_yaml::to_string(&compose["services"]["mariadb"]["healthcheck"]["test"]).unwrap();
    assert!(db_check.contains("--innodb_initialized"), "{db_check}");
}

#[test]
fn the_image_is_minimal_non_root_checked_and_built_like_ci_builds() {
    let dockerfile = read("docker/Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a multi-stage build");
    assert!(stages[1].contains("distroless"), "the final image has no shell or package manager");
    for line in [
        "RUN ./docker/build-binary.sh /out",
        "COPY --from=build /out/kuma-cluster /usr/local/bin/kuma-cluster",
        "COPY config/ /etc/kuma-cluster/",
        "USER nonroot:nonroot",
        "EXPOSE 8080",
        "ENV KUMA_CLUSTER__SERVER__LISTEN=0.0.0.0:8080",
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "{line} missing from the Dockerfile");
    }
    assert!(dockerfile.contains(r#"CMD ["/usr/local/bin/kuma-cluster", "health"]"#), "HEALTHCHECK on /health");
    let settings = kuma_cluster::config::Settings::load_with_env(
        None,
        [("KUMA_CLUSTER__SERVER__LISTEN".to_string(), "0.0.0.0:8080".to_string())],
    )
    .unwrap();
    assert_eq!(settings.server.listen.port(), 8080, "EXPOSE matches the listen port");
    assert!(read(".ci/run").lines().any(|l| l.trim_start().starts_with("./docker/build-binary.sh")), "CI builds the image's binary the same way");
}
