//! The Kubernetes manifests configure Aegis with settings it accepts: every variable of
//! the ConfigMap and the Secret template passes `aegis config print` (an unknown or bad
//! one would stop start-up in the cluster).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

/// `AEGIS_…: "value"` lines of a manifest.
fn variables(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap();
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.starts_with("AEGIS_"))
        .map(|(k, v)| (k.to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

#[test]
fn configmap_and_secret_template_hold_valid_settings() {
    let mut vars = variables("deploy/k8s/configmap.yaml");
    vars.extend(variables("deploy/k8s/secret.template.yaml"));
    assert!(vars.len() >= 10, "{vars:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = common::aegis(dir.path())
        .args(["config", "print"])
        .envs(vars.clone())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every variable names a setting: each shows up in the effective configuration.
    for (k, _) in &vars {
        let key = k.trim_start_matches("AEGIS_").to_ascii_lowercase();
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{k} is not a setting:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("executor_mode = \"kubernetes\""),
        "{stdout}"
    );
    // Secrets are redacted in the printout.
    assert!(!stdout.contains("CHANGE-ME-at-least"), "{stdout}");
}

fn yaml(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The compose stack hangs together: Aegis's variables are real settings, every mounted
/// file exists, Prometheus remote-writes to Aegis's remote-write path with the ingest
/// token Aegis is given, Aegis's traces go to the collector and on to Tempo, Grafana loads
/// the dashboard from where it is mounted, and every dependency waits for a service that
/// exists.
#[test]
fn the_compose_stack_is_wired_together() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().unwrap();
    for name in [
        "aegis",
        "postgres",
        "redis",
        "prometheus",
        "loki",
        "grafana",
        "redpanda",
        "otel-collector",
        "tempo",
    ] {
        assert!(services.contains_key(name), "no service {name}");
    }
    let env: Vec<(String, String)> = services["aegis"]["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = common::aegis(dir.path())
        .args(["config", "print"])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("aegis has no {k}"))
    };

    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            if let Some(path) = spec.strip_prefix("./") {
                let file = path.split(':').next().unwrap();
                assert!(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(file)
                        .exists(),
                    "{name} mounts {file}, which does not exist"
                );
            }
        }
        for dep in service["depends_on"].as_object().into_iter().flatten() {
            assert!(services.contains_key(dep.0), "{name} waits for {}", dep.0);
            if dep.1["condition"] == "service_healthy" {
                assert!(
                    services[dep.0].get("healthcheck").is_some(),
                    "{name} waits for {} to be healthy, which has no health check",
                    dep.0
                );
            }
        }
    }

    let prometheus = yaml("deploy/compose/prometheus.yml");
    let rw = &prometheus["remote_write"][0];
    assert_eq!(rw["url"], "http://aegis:3000/api/v1/write");
    assert_eq!(
        rw["authorization"]["credentials"].as_str(),
        Some(get("AEGIS_INGEST_TOKEN").as_str())
    );
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "aegis:3000"
    );

    assert_eq!(get("AEGIS_OTLP_ENDPOINT"), "http://otel-collector:4318");
    let collector = yaml("deploy/compose/otel-collector.yaml");
    assert_eq!(
        collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "0.0.0.0:4318"
    );
    let exporters = collector["service"]["pipelines"]["traces"]["exporters"]
        .as_array()
        .unwrap();
    let exporter = exporters[0].as_str().unwrap();
    assert_eq!(collector["exporters"][exporter]["endpoint"], "tempo:4317");
    let tempo = yaml("deploy/compose/tempo.yaml");
    assert_eq!(
        tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );

    let dashboards = yaml("deploy/grafana/provisioning/dashboards/aegis.yaml");
    let path = dashboards["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        services["grafana"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v
                .as_str()
                .unwrap()
                .starts_with(&format!("./deploy/grafana/aegis.json:{path}/"))),
        "the dashboard is not mounted where the provider reads"
    );
    let datasources = yaml("deploy/grafana/provisioning/datasources/aegis.yaml");
    let urls: Vec<&str> = datasources["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "http://prometheus:9090",
            "http://loki:3100",
            "http://tempo:3200"
        ]
    );
    assert_eq!(get("AEGIS_LOKI_URL"), "http://loki:3100");
    assert_eq!(get("AEGIS_KAFKA_BROKERS"), "redpanda:9092");
}
