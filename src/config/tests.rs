use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn defaults_are_valid_and_embedded() {
    let loaded = Config::load_from(None, env(&[])).unwrap();
    let c = loaded.config;
    assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(c.database_url, "sqlite://./aegis-data/aegis.db");
    assert_eq!(c.allowed_namespaces, ["default", "production"]);
    assert!(c.require_action_signature);
    assert_eq!(c.executor_mode, ExecutorMode::DryRun);
}

#[test]
fn bad_listen_in_env_names_the_variable() {
    let err = Config::load_from(None, env(&[("AEGIS_LISTEN", "nonsense")])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`AEGIS_LISTEN`"), "{text}");
    assert!(text.contains("nonsense"), "{text}");
}

#[test]
fn environment_wins_over_file() {
    let f = file("listen = \"0.0.0.0:8080\"\nkafka_group = \"from-file\"\n");
    let loaded =
        Config::load_from(Some(f.path()), env(&[("AEGIS_LISTEN", "127.0.0.1:9999")])).unwrap();
    assert_eq!(loaded.config.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(loaded.config.kafka_group, "from-file");
    assert_eq!(loaded.origins.get("listen"), Some(&Origin::Env));
    assert_eq!(
        loaded.origins.get("kafka_group"),
        Some(&Origin::File(f.path().to_owned()))
    );
}

#[test]
fn file_errors_name_the_file_key_and_line() {
    let f = file("listen = \"127.0.0.1:3000\"\nlisten_port = 4\n");
    let text = Config::load_from(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("listen_port") && text.contains("line 2"),
        "{text}"
    );

    let f = file("\n\nlisten = \"nonsense\"\n");
    let text = Config::load_from(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("line 3") && text.contains("not an address"),
        "{text}"
    );
}

#[test]
fn semantic_errors_name_the_key_as_the_user_set_it() {
    let f = file("anomaly_threshold = 1.5\n");
    let text = Config::load_from(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("`anomaly_threshold` in"), "{text}");

    let text = Config::load_from(
        None,
        env(&[("AEGIS_ALLOWED_NAMESPACES", "default,Production")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("`AEGIS_ALLOWED_NAMESPACES`") && text.contains("Production"),
        "{text}"
    );

    let text = Config::load_from(None, env(&[("AEGIS_EXECUTOR_MODE", "kubernetes")]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("AEGIS_ACTION_SECRET"), "{text}");

    let text = Config::load_from(None, env(&[("AEGIS_DATABASE_URL", "mysql://x")]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("`AEGIS_DATABASE_URL`"), "{text}");

    let text = Config::load_from(None, env(&[("AEGIS_REQUIRE_ACTION_SIGNATURE", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`AEGIS_REQUIRE_ACTION_SIGNATURE`") && text.contains("boolean"),
        "{text}"
    );

    let text = Config::load_from(None, env(&[("AEGIS_REDIS_URL", "http://x")]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`AEGIS_REDIS_URL`") && text.contains("redis://"),
        "{text}"
    );

    let text = Config::load_from(None, env(&[("AEGIS_ADMIN_EMAIL", "a@b.c")]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("AEGIS_ADMIN_PASSWORD"), "{text}");
}

#[test]
fn lists_parse_from_commas_and_unknown_variables_are_reported() {
    let loaded = Config::load_from(
        None,
        env(&[
            ("AEGIS_KAFKA_BROKERS", " a:9092, b:9092 ,"),
            ("AEGIS_KAFKA_TOPICS", "metrics"),
            ("AEGIS_LISTN", "127.0.0.1:1"),
            ("AEGIS_CONFIG", "/etc/aegis.toml"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.config.kafka_brokers, ["a:9092", "b:9092"]);
    assert_eq!(loaded.unknown_env, ["AEGIS_LISTN"]);
}

#[test]
fn printed_config_hides_secrets_and_url_passwords() {
    let secret = "s".repeat(40);
    let loaded = Config::load_from(
        None,
        env(&[
            ("AEGIS_JWT_SECRET", secret.as_str()),
            ("AEGIS_ACTION_SECRET", secret.as_str()),
            ("AEGIS_DATABASE_URL", "postgres://app:hunter2@db/aegis"),
            ("AEGIS_ADMIN_EMAIL", "admin@example.com"),
            ("AEGIS_ADMIN_PASSWORD", "correct horse battery"),
        ]),
    )
    .unwrap();
    let printed = loaded.config.to_redacted_toml();
    assert!(!printed.contains(&secret), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!printed.contains("correct horse"), "{printed}");
    assert!(
        printed.contains("jwt_secret = \"***redacted***\""),
        "{printed}"
    );
    assert!(printed.contains("postgres://app:***@db/aegis"), "{printed}");
    // The printed file is itself a valid configuration (minus the redacted secrets).
    let reparsed: Config = toml::from_str(&printed).unwrap();
    assert_eq!(reparsed.listen, loaded.config.listen);
    assert!(!format!("{:?}", loaded.config).contains(&secret));
}

#[test]
fn short_secrets_are_refused() {
    let text = Config::load_from(None, env(&[("AEGIS_JWT_SECRET", "short")]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`AEGIS_JWT_SECRET`") && text.contains("32 bytes"),
        "{text}"
    );
}

/// Issue 27, attack 11: unsigned executor requests against a real cluster must be asked for
/// by name; `require_action_signature = false` alone is refused at start.
#[test]
fn unsigned_actions_in_kubernetes_mode_need_allow_unsigned_actions() {
    let base = [
        ("AEGIS_EXECUTOR_MODE", "kubernetes"),
        ("AEGIS_REQUIRE_ACTION_SIGNATURE", "false"),
    ];
    let text = Config::load_from(None, env(&base)).unwrap_err().to_string();
    assert!(text.contains("allow_unsigned_actions"), "{text}");
    let mut allowed = base.to_vec();
    allowed.push(("AEGIS_ALLOW_UNSIGNED_ACTIONS", "true"));
    let loaded = Config::load_from(None, env(&allowed)).unwrap();
    assert!(loaded.config.allow_unsigned_actions);
    // Dry-run mode acts on nothing: no need to say it.
    let dry = [("AEGIS_REQUIRE_ACTION_SIGNATURE", "false")];
    assert!(Config::load_from(None, env(&dry)).is_ok());
}

/// Issue 28: the reference in docs/configuration.md is the generated one, so a key added
/// without a doc comment, or a doc comment changed without regenerating, fails here.
#[test]
fn the_configuration_reference_is_generated_from_the_code() {
    let document = include_str!("../../docs/configuration.md");
    let regenerated = reference::splice(document).expect("docs/configuration.md has the markers");
    assert!(
        regenerated == document,
        "docs/configuration.md is not the generated reference: run \
         `cargo run -q -- config reference --write docs/configuration.md`"
    );
}

/// Every key has a doc comment, a section, and a row naming its key and its variable.
#[test]
fn every_key_and_variable_is_documented() {
    let docs = reference::field_docs();
    let table = reference::markdown();
    for key in env::KEYS {
        let doc = docs.get(key).map(String::as_str).unwrap_or_default();
        assert!(
            doc.split_whitespace().count() >= 2,
            "`{key}` has no doc comment on its Config field: {doc:?}"
        );
        let row = format!("| `{key}` |");
        let var = format!("`AEGIS_{}`", key.to_uppercase());
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&row) && l.contains(&var)),
            "`{key}` ({var}) has no row in the reference"
        );
    }
    // And every documented field is a key the environment reads.
    for field in docs.keys() {
        assert!(
            env::KEYS.contains(field),
            "field `{field}` is not in env::KEYS"
        );
    }
    assert_eq!(docs.len(), env::KEYS.len());
}

/// The reference shows the real defaults (a changed default changes the docs).
#[test]
fn the_reference_shows_the_defaults() {
    let table = reference::markdown();
    let row = |key: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row("listen").contains("| `127.0.0.1:3000` |"),
        "{}",
        row("listen")
    );
    assert!(
        row("anomaly_threshold").contains("| `0.45` |"),
        "{}",
        row("anomaly_threshold")
    );
    assert!(
        row("jwt_secret").contains("| unset |"),
        "{}",
        row("jwt_secret")
    );
    assert!(row("engine_tick_ms").contains("| `tick_ms` | `AEGIS_ENGINE_TICK_MS` |"));
}
