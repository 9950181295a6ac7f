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
    let mut compose: Value = serde_yaml::from_str(&read("docker/compose.yaml")).unwrap();
    // compose applies YAML merge keys (`<<: *anchor`): so does this check
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["mariadb", "kuma-node1", "kuma-node2", "kuma-node3", "kuma-cluster-1", "kuma-cluster-2"]);
    let db = environment(&compose["services"]["mariadb"]);

    // two kuma-cluster replicas: every variable is a key the binary accepts
    // (unknown keys are errors), each advertises its own service name
    let mut published = Vec::new();
    for name in ["kuma-cluster-1", "kuma-cluster-2"] {
        let kc = &compose["services"][name];
        let env = environment(kc);
        let settings = kuma_cluster::config::Settings::load_with_env(None, env.clone().into_iter().filter(|(k, _)| k.starts_with("KUMA_CLUSTER__")))
            .expect("compose's kuma-cluster environment is a valid configuration");
        let port = settings.server.listen.port();
        let mapping = kc["ports"][0].as_str().unwrap();
        assert!(mapping.ends_with(&format!(":{port}")), "{name} publishes its listen port: {mapping}");
        published.push(mapping.split(':').next().unwrap().to_owned());
        assert_eq!(settings.ha.advertise, Some(format!("{name}:{port}")), "{name} advertises where the other reaches it");
        let url = &settings.database.url;
        let expected = format!("mysql://{}:{}@mariadb:3306/{}", db["MARIADB_USER"], db["MARIADB_PASSWORD"], db["MARIADB_DATABASE"]);
        assert_eq!(url, &expected, "{name} uses the MariaDB service's database and user");
        assert_eq!(kc["depends_on"]["mariadb"]["condition"], "service_healthy", "{name} waits for the database");
        let check: Vec<&str> = kc["healthcheck"]["test"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(check, ["CMD", "/usr/local/bin/kuma-cluster", "health", "--ready"]);
        assert_eq!(kc["build"]["dockerfile"], "docker/Dockerfile");
        assert_eq!(kc["stop_grace_period"], "30s", "{name} has time to release the lease on SIGTERM");
    }
    assert_ne!(published[0], published[1], "the replicas publish different host ports");

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

/// Every object of the Kubernetes manifests, by kind.
fn manifests() -> BTreeMap<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kubernetes");
    let mut objects = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        let kind = object["kind"].as_str().unwrap().to_owned();
        assert!(objects.insert(kind.clone(), object).is_none(), "one {kind}");
    }
    objects
}

#[test]
fn the_kubernetes_manifests_run_two_probed_replicas_whose_settings_the_binary_accepts() {
    let objects = manifests();
    let kinds: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]);
    let deployment = &objects["Deployment"];
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2, "two replicas or more");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&objects["Service"]["spec"]["selector"], labels, "the Service selects the pods");
    assert_eq!(&objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(objects["PodDisruptionBudget"]["spec"]["minAvailable"], 1);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/lb/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["ports"][0]["containerPort"], 8080);

    // the environment as a pod sees it: ConfigMap, Secret, then the pod's own
    // entries with $(VAR) references to earlier ones filled in
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (kind, key) in [("ConfigMap", "data"), ("Secret", "stringData")] {
        for (k, v) in objects[kind][key].as_mapping().unwrap() {
            env.insert(k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned());
        }
    }
    let sources: Vec<&str> = container["envFrom"].as_sequence().unwrap().iter().map(|s| {
        s["configMapRef"]["name"].as_str().or(s["secretRef"]["name"].as_str()).unwrap()
    }).collect();
    assert_eq!(sources, [objects["ConfigMap"]["metadata"]["name"].as_str().unwrap(), objects["Secret"]["metadata"]["name"].as_str().unwrap()]);
    for entry in container["env"].as_sequence().unwrap() {
        let name = entry["name"].as_str().unwrap().to_owned();
        let value = match entry["value"].as_str() {
            Some(value) => env.iter().fold(value.to_owned(), |v, (k, known)| v.replace(&format!("$({k})"), known)),
            None => match entry["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap() {
                "status.podIP" => "10.1.2.3".to_owned(),
                "metadata.name" => "kuma-cluster-5d8f-abcde".to_owned(),
                other => panic!("unexpected field {other}"),
            },
        };
        env.insert(name, value);
    }
    let settings = kuma_cluster::config::Settings::load_with_env(None, env.into_iter().filter(|(k, _)| k.starts_with("KUMA_CLUSTER__")))
        .expect("the manifests' environment is a valid configuration");
    assert_eq!(settings.server.listen.port(), 8080);
    assert_eq!(settings.ha.advertise.as_deref(), Some("10.1.2.3:8080"), "each pod advertises its own address");
    assert_eq!(settings.ha.replica_id, "kuma-cluster-5d8f-abcde", "the pod name is the replica id");
    assert!(settings.database.url.starts_with("mysql://"));
}
