//! A bounded API fuzz: schemathesis (from PyPI) generates requests from the daemon's own OpenAPI
//! document (`GET /v1/openapi.json`) against a real daemon on loopback, and checks every answer:
//! no 5xx, only documented status codes and content types, bodies that match the documented
//! schemas, schema-violating requests refused, unauthenticated ones 401, and (stateful) the ids
//! a create answers work on the routes that take them.
//!
//! Under `CI=true` a missing `schemathesis` fails the test (`.ci/run` installs it); on a
//! developer machine the test skips with a printed reason.

use std::process::Stdio;

use crate::support::*;

const TOKEN: &str = "fuzz-token-0123456789abcdef";

/// What schemathesis may not expect of this API, and why:
/// - `positive_data_acceptance`: a notification that fits the schema is still refused when its
///   channel is not configured or its recipient is wrong for the channel's kind; no schema can
///   say which channels a daemon has.
/// - batch and `negative_data_rejection`: a batch answers `200` with a result per item, and an
///   item that does not fit the schema is refused in its own result (the rest is stored).
const CONFIG: &str = r#"
[checks]
positive_data_acceptance.enabled = false

[[operations]]
include-path = "/v1/notifications/batch"
checks.negative_data_rejection.enabled = false
"#;

fn schemathesis() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("schemathesis"))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_from_the_openapi_document_get_only_documented_answers() {
    let Some(st) = schemathesis() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "schemathesis is not installed (CI=true): pip install schemathesis"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    };
    let templates = tempfile::tempdir().unwrap();
    let t = templates.path().join("welcome");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("body.txt"), "Hi {{ name | default('there') }}").unwrap();
    let channels = format!(
        "[channels.log]\nkind = \"log\"\n\
         [channels.hooks]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         receipts = {{ verify = \"hmac\", secret = \"0123456789abcdef0123456789abcdef\" }}\n\
         [templates]\ndir = \"{}\"\n",
        templates.path().display()
    );
    let d = TestDaemon::start_with(&format!("auth_token = \"{TOKEN}\""), &channels).await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // Bounded: examples per operation and a time budget, so it ends in about a minute on two
    // shared cores. One worker: hypothesis is not safe across schemathesis's worker threads.
    let out = tokio::process::Command::new(st)
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &d.url("/v1/openapi.json"), "--url", &d.base])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "25", "--max-time", "60", "--workers", "1"])
        .args(["--request-timeout", "10", "--no-color"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
