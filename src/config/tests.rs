use std::io::Write;

use figment::providers::Env;

use super::*;
use notifyd_channels::ProviderConfig;

fn no_env() -> Env {
    Env::prefixed("NOTIFYD_TEST_UNUSED_PREFIX_")
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

fn load(contents: &str) -> Result<Config, ConfigError> {
    let f = file(contents);
    Config::load_with_env(Some(f.path()), no_env())
}

#[test]
fn without_a_file_the_defaults_run_one_log_channel_on_loopback() {
    let c = Config::load_with_env(None, no_env()).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8025");
    assert_eq!(c.queue.url, "sqlite://notifyd.db");
    assert_eq!(c.channels.keys().collect::<Vec<_>>(), vec!["log"]);
    assert_eq!(c.channels["log"].provider.kind(), "log");
}

#[test]
fn the_documented_default_file_is_exactly_the_built_in_default() {
    let documented = Config::load_with_env(
        Some(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/notifyd.toml"
        ))),
        no_env(),
    )
    .unwrap();
    let builtin = Config::load_with_env(None, no_env()).unwrap();
    assert_eq!(format!("{documented:?}"), format!("{builtin:?}"));
}

#[test]
fn a_file_that_defines_channels_replaces_the_default_log_channel() {
    let c = load("[channels.hooks]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n").unwrap();
    assert_eq!(c.channels.keys().collect::<Vec<_>>(), vec!["hooks"]);
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's own signature
fn environment_overrides_the_file() {
    let f = file("[server]\nlisten = \"127.0.0.1:9000\"\n");
    figment::Jail::expect_with(|jail| {
        jail.set_env("NOTIFYD_SERVER__LISTEN", "127.0.0.1:9100");
        let c =
            Config::load_with_env(Some(f.path()), Env::prefixed("NOTIFYD_").split("__")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9100");
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_named_with_its_file() {
    let f = file("[server]\nlisen = \"127.0.0.1:9000\"\n");
    let err = Config::load_with_env(Some(f.path()), no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `lisen`"), "{err}");
    assert!(err.contains(&f.path().display().to_string()), "{err}");
}

#[test]
fn an_unknown_channel_key_is_named_with_its_channel() {
    let err = load("[channels.hooks]\nkind = \"webhook\"\nurll = \"http://x/\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `urll`"), "{err}");
    assert!(err.contains("channels.hooks"), "{err}");
}

#[test]
fn an_unknown_kind_lists_the_known_ones() {
    let err = load("[channels.x]\nkind = \"pigeon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `pigeon`"), "{err}");
    assert!(err.contains("webhook"), "{err}");
}

#[test]
fn a_channel_without_kind_says_so() {
    let err = load("[channels.x]\nurl = \"http://x/\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing `kind`"), "{err}");
}

#[test]
fn a_bad_duration_names_the_policy_key() {
    let err = load("[channels.log]\nkind = \"log\"\nretry = { base = \"soon\" }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`retry.base`"), "{err}");
    assert!(err.contains("\"soon\" is not a duration"), "{err}");
}

#[test]
fn policy_keys_are_read_beside_provider_keys() {
    let c = load(
        "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://x/\"\nconcurrency = 4\ncriticality = \"critical\"\n\
         retry = { max_attempts = 3, base = \"200ms\", max = \"5s\" }\ntimeouts = { total = \"2s\" }\n",
    )
    .unwrap();
    let p = &c.channels["hooks"].policy;
    assert_eq!(p.concurrency, 4);
    assert_eq!(p.criticality, Criticality::Critical);
    assert_eq!(
        p.retry,
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
            max_age: None,
        }
    );
    assert_eq!(p.timeouts.total, Some(Duration::from_secs(2)));
    assert_eq!(p.timeouts.connect, None);
}

#[test]
fn invalid_values_are_all_reported_with_their_keys() {
    let err = load(
        "[server]\nlisten = \"nowhere\"\n[queue]\nurl = \"mysql://x\"\n\
         [channels.log]\nkind = \"log\"\nconcurrency = 0\nretry = { base = \"1m\", max = \"1s\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("server.listen: \"nowhere\" is not an address:port"),
        "{err}"
    );
    assert!(
        err.contains("queue.url: \"mysql://x\" is not a queue URL"),
        "{err}"
    );
    assert!(
        err.contains("channels.log.concurrency: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("channels.log.retry.base: must not be more than retry.max"),
        "{err}"
    );
}

#[test]
fn a_secret_file_is_read_into_the_channel_key() {
    let secret = file("topsecret\n");
    let c = load(&format!(
        "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://x/\"\nsecret_file = \"{}\"\n",
        secret.path().display()
    ))
    .unwrap();
    let ProviderConfig::Webhook(w) = &c.channels["hooks"].provider else {
        panic!("not a webhook")
    };
    assert_eq!(w.secret.as_ref().map(|s| s.expose()), Some("topsecret"));
    assert!(!format!("{c:?}").contains("topsecret"));
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let err = Config::load_with_env(Some(Path::new("/nonexistent/notifyd.toml")), no_env())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config file /nonexistent/notifyd.toml: not found (or not a file)"
    );
}

#[test]
fn sqlite_urls_name_a_file() {
    let q = |url: &str| {
        QueueConfig {
            url: url.into(),
            ..QueueConfig::default()
        }
        .location()
    };
    assert_eq!(
        q("sqlite://notifyd.db"),
        Ok(QueueLocation::Sqlite(PathBuf::from("notifyd.db")))
    );
    assert_eq!(
        q("sqlite:///var/lib/notifyd/q.db"),
        Ok(QueueLocation::Sqlite(PathBuf::from(
            "/var/lib/notifyd/q.db"
        )))
    );
}

#[test]
fn postgres_urls_name_a_shared_queue_in_a_plain_schema() {
    let q = |url: &str, schema: &str| {
        QueueConfig {
            url: url.into(),
            schema: schema.into(),
            ..QueueConfig::default()
        }
        .location()
    };
    assert_eq!(
        q("postgres://db/notifyd", "notifyd"),
        Ok(QueueLocation::Postgres("postgres://db/notifyd".into()))
    );
    assert_eq!(
        q("postgresql://db/x", "queue_2"),
        Ok(QueueLocation::Postgres("postgresql://db/x".into()))
    );
    let err = q("postgres://db/notifyd", "Notify; drop").unwrap_err();
    assert!(err.contains("queue.schema \"Notify; drop\""), "{err}");
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused() {
    let err = load("[server]\nlisten = \"0.0.0.0:8025\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.listen: 0.0.0.0:8025 is reachable from other hosts"),
        "{err}"
    );
}

#[test]
fn a_non_loopback_listener_with_a_token_file_is_accepted() {
    let token = file("0123456789abcdef0123\nfedcba9876543210fedc\n");
    let c = load(&format!(
        "[server]\nlisten = \"0.0.0.0:8025\"\nauth_token_file = \"{}\"\n",
        token.path().display()
    ))
    .unwrap();
    assert_eq!(
        c.server.tokens(),
        vec!["0123456789abcdef0123", "fedcba9876543210fedc"]
    );
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
}

#[test]
fn a_short_token_is_refused() {
    let err = load("[server]\nauth_token = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.auth_token: each token must be at least 16 characters"),
        "{err}"
    );
}

#[test]
fn a_server_secret_of_the_wrong_type_is_named_but_never_shown() {
    // An all-digit token from the environment arrives the same way: figment reads it as a number.
    let err = load("[server]\nauth_token = 1234567890123456789\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth_token"), "{err}");
    assert!(err.contains("found integer, expected"), "{err}");
    assert!(!err.contains("1234567890123456789"), "{err}");
}

#[test]
fn a_channel_secret_of_the_wrong_type_is_named_but_never_shown() {
    let err = load(
        "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret = 987654321098765432\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("hooks"), "{err}");
    assert!(err.contains("found integer, expected"), "{err}");
    assert!(!err.contains("987654321098765432"), "{err}");
}

#[test]
fn a_found_value_is_dropped_from_type_errors_only() {
    assert_eq!(
        without_found_value("invalid type: integer `12345`, expected a string"),
        "invalid type: found integer, expected a string"
    );
    assert_eq!(
        without_found_value("invalid value: string \"abc\", expected one of `a`, `b`"),
        "invalid value: found string, expected one of `a`, `b`"
    );
    assert_eq!(
        without_found_value("missing field `url`"),
        "missing field `url`"
    );
}

#[test]
fn an_ingest_route_to_an_unknown_channel_is_a_config_error_naming_the_key() {
    let err = load(
        "[channels.log]\nkind = \"log\"\n\
         [ingest.routes.alerts]\ntargets = [{ channel = \"slack\", to = \"#ops\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ingest.routes.alerts.targets[0].channel: no channel named \"slack\""),
        "{err}"
    );
}

#[test]
fn an_unknown_ingest_key_is_named() {
    let err = load(
        "[ingest.routes.alerts]\ntargets = [{ channel = \"log\", to = \"x\", severity = \"critical\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("severity"), "{err}");
    assert!(err.contains("ingest"), "{err}");
}

#[test]
fn a_grafana_signature_secret_can_come_from_a_file() {
    let secret = file("0123456789abcdef-from-file\n");
    let c = load(&format!(
        "[ingest.routes.grafana]\ntargets = [{{ channel = \"log\", to = \"x\" }}]\n\
         signature = {{ secret_file = \"{}\" }}\n",
        secret.path().display()
    ))
    .unwrap();
    let sig = c.ingest.routes["grafana"].signature.as_ref().unwrap();
    assert_eq!(sig.secret.expose(), "0123456789abcdef-from-file");
    assert_eq!(sig.header, "X-Grafana-Alerting-Signature");
}

const SMTP: &str = "[channels.mail]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\ntls = \"none\"\n\
                    from = \"news@shop.example\"\n";

#[test]
fn channel_quiet_hours_are_read_in_their_zone() {
    let c = load(&format!(
        "{SMTP}quiet_hours = {{ start = \"22:00\", end = \"07:00\", time_zone = \"Europe/Paris\" }}\n"
    ))
    .unwrap();
    let quiet = c.channels["mail"].policy.quiet().unwrap();
    assert_eq!(quiet.zone.name(), "Europe/Paris");
    assert!(quiet.high_priority_passes);
    assert!(quiet.window.is_some());
}

#[test]
fn bad_channel_quiet_hours_are_named_with_their_key() {
    let err = load(&format!(
        "{SMTP}quiet_hours = {{ start = \"22:00\", end = \"7pm\", time_zone = \"Europe/Atlantis\" }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("channels.mail.quiet_hours.time_zone"), "{err}");
    assert!(err.contains("channels.mail.quiet_hours.end"), "{err}");
}

#[test]
fn an_unsubscribe_link_without_links_configured_is_refused_naming_the_key() {
    let err = load(&format!("{SMTP}unsubscribe = true\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("channels.mail.unsubscribe: needs links.base_url"),
        "{err}"
    );
}

#[test]
fn unsubscribe_on_a_channel_that_is_not_email_is_refused() {
    let err = load(
        "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nunsubscribe = true\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("channels.hooks.unsubscribe: only e-mail"),
        "{err}"
    );
}
