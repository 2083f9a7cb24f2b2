//! The `mirrorhost serve` binary as an operator runs it.

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, Server, client};

const BUILTIN_NAMES: [&str; 9] = [
    "abort",
    "manual",
    "ours",
    "password",
    "protected-only",
    "regex-filter",
    "ssh-key",
    "theirs",
    "token",
];

#[tokio::test]
async fn serve_answers_probes_lists_plugins_and_stops_on_sigterm() {
    let server = Server::start(&[("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let http = client();

    let health = crate::support::get_json(&server, "/healthz").await;
    assert_eq!(health["status"], "ok");
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let listed: Value = http
        .get(server.url("/api/v1/plugins"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, BUILTIN_NAMES);
    for plugin in listed["plugins"].as_array().unwrap() {
        assert_eq!(plugin["builtin"], true);
        assert!(plugin["world"].is_string() && plugin["version"].is_string());
        assert_eq!(plugin["sha256"].as_str().unwrap().len(), 64);
    }

    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        log.iter().any(|l| l.contains("shut down")),
        "no graceful shutdown in {log:#?}"
    );
}

#[tokio::test]
async fn the_admin_api_wants_the_token() {
    let server = Server::start(&[("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let http = client();
    for auth in [None, Some("Bearer wrong"), Some(ADMIN_TOKEN)] {
        let mut req = http.get(server.url("/api/v1/plugins"));
        if let Some(value) = auth {
            req = req.header("Authorization", value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "auth {auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Bearer")
        );
    }
    let resp = http
        .get(server.url("/api/v1/nope"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn without_a_token_one_is_generated_privately_and_never_logged() {
    let server = Server::start(&[]);
    let path = server.data_dir.path().join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let sqlite = server.data_dir.path().join("mirrorhost.db");
    // In the PostgreSQL pass the store is there, and no SQLite file is made.
    assert_eq!(sqlite.exists(), crate::test_postgres::url().is_none());
    let resp = client()
        .get(server.url("/api/v1/plugins"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, log) = server.terminate();
    assert!(status.success());
    assert!(
        log.iter()
            .any(|l| l.contains("generated a new admin token") && l.contains("admin-token"))
    );
    assert!(
        !log.iter().any(|l| l.contains(token.trim())),
        "token leaked into the log"
    );
}

/// The service's anonymous memory, in KiB, as `/proc` reads it.
fn anonymous_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A first start compiles the built-ins (cranelift, on several threads);
/// what the compiler freed must not stay with the service. It did: 42 MiB
/// of anonymous memory where a second start, which loads the compiled
/// plugins from the cache, holds under 5.
#[tokio::test]
async fn a_first_start_keeps_no_more_memory_than_the_next() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let envs = [
        ("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN),
        ("MIRRORHOST_PLUGIN_CACHE_DIR", cache_dir),
    ];
    let first = Server::start(&envs);
    // Settled: the start's last release of freed memory is done.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let compiled = anonymous_kib(&first);
    drop(first);
    let next = Server::start(&envs);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let loaded = anonymous_kib(&next);
    assert!(
        compiled <= loaded + 8 * 1024,
        "first start {compiled} KiB, the next {loaded} KiB"
    );
}
