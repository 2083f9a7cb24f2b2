//! The `mirrorhost` operator commands, run as a process against a server the
//! test started.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::http_git::HttpGit;
use crate::support::{
    ADMIN_TOKEN, Api, Server, Upstream, git, local_server, mirror_with_rewritten_main, project_repo,
};

/// Runs `mirrorhost <args>` against `server`, feeding `stdin`.
fn mirrorhost(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirrorhost"))
        .args(args)
        .env("MIRRORHOST_URL", server.url(""))
        .env("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn json_of(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

// Multi-threaded: the git HTTP server runs on this runtime while the test
// thread blocks on the CLI process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_added_listed_synced_with_progress_and_checked() {
    let server = local_server();
    let up = Upstream::new();
    // A megabyte that does not compress, so that the capped transfer below takes
    // seconds and the progress line has something to show.
    let noise: Vec<u8> = (0..1 << 20).map(|_| rand_byte()).collect();
    std::fs::write(up.work().join("noise.bin"), &noise).unwrap();
    git(&up.work(), &["add", "noise.bin"]);
    up.commit("main", "a");
    up.push(&["main"]);
    let http = HttpGit::start(up.dir.path()).await;

    let added = json_of(&mirrorhost(
        &server,
        &[
            "mirror",
            "add-pull",
            "--json",
            "--project",
            "cli/p",
            "--url",
            &http.url("upstream.git"),
            "--interval",
            "3600",
            "--no-lfs",
        ],
        "",
    ));
    let pull = added["mirror_id"].as_i64().unwrap();
    assert_eq!(added["update_interval"], 3600);
    assert_eq!(
        (&added["lfs"], &added["lfs_missing"]),
        (&json!(false), &json!("fail"))
    );
    let dest = tempfile::tempdir().unwrap();
    let target = crate::support::bare_repo(dest.path(), "dest.git");
    let push = json_of(&mirrorhost(
        &server,
        &[
            "mirror",
            "add-push",
            "--json",
            "--project",
            "cli/p",
            "--url",
            &format!("file://{}", target.display()),
            "--lfs-missing",
            "skip",
        ],
        "",
    ));
    assert_eq!(
        (&push["lfs"], &push["lfs_missing"]),
        (&json!(true), &json!("skip"))
    );
    let push = push["mirror_id"].as_i64().unwrap();

    let table = ok(&mirrorhost(&server, &["mirror", "list"], ""));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..4],
        ["mirror_id", "direction", "project_id", "enabled"]
    );
    assert_eq!(
        rows[1][..4],
        [pull.to_string().as_str(), "pull", "cli/p", "true"]
    );
    assert_eq!(
        rows[2][..4],
        [push.to_string().as_str(), "push", "cli/p", "true"]
    );
    // Filtered and sorted by the service; a value it refuses is named.
    let table = ok(&mirrorhost(
        &server,
        &[
            "mirror",
            "list",
            "--search",
            "dest.git",
            "--direction",
            "push",
        ],
        "",
    ));
    assert_eq!(table.lines().count(), 2, "{table}");
    let newest_first = ok(&mirrorhost(
        &server,
        &["mirror", "list", "--order-by", "id", "--sort", "desc"],
        "",
    ));
    let first: Vec<&str> = newest_first
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(first[0], push.to_string(), "{newest_first}");
    let refused = mirrorhost(&server, &["mirror", "list", "--sort", "sideways"], "");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sort"));

    // 256 KiB/s over a megabyte: about four seconds of visible progress.
    let api = Api::new(&server);
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{pull}/bandwidth"),
            json!({"max_bytes_per_second": 262_144}),
        )
        .await;
    assert_eq!(status, 200);
    let synced = mirrorhost(&server, &["mirror", "sync", &pull.to_string()], "");
    let stdout = ok(&synced);
    assert!(stdout.contains("status: succeeded"), "{stdout}");
    let stderr = String::from_utf8_lossy(&synced.stderr);
    let progress =
        regex::Regex::new(r"run \d+: running, objects \d+/(\d+), [0-9.]+ (KiB|MiB|B)").unwrap();
    let seen: Vec<&str> = stderr.lines().filter(|l| progress.is_match(l)).collect();
    assert!(seen.len() >= 2, "live progress lines: {stderr}");
    assert_eq!(
        git(&project_repo(&server, "cli/p"), &["rev-parse", "main"]),
        git(&up.bare(), &["rev-parse", "main"])
    );

    // What that run did, ref by ref.
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run_id: "))
        .expect("the run's id");
    let refs = ok(&mirrorhost(&server, &["mirror", "run", run_id], ""));
    let header = refs.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ref_name") && header.contains("action"),
        "{refs}"
    );
    assert!(
        refs.lines()
            .any(|l| l.starts_with("refs/heads/main") && l.contains(" create")),
        "{refs}"
    );

    // Housekeeping of the project, from the CLI.
    let pass = json_of(&mirrorhost(
        &server,
        &["project", "housekeeping", "--json", "cli/p"],
        "",
    ));
    assert_eq!(pass["packs_after"], 1, "{pass}");
    crate::support::fsck(&project_repo(&server, "cli/p"));

    let health = ok(&mirrorhost(
        &server,
        &["mirror", "health", &pull.to_string()],
        "",
    ));
    assert!(health.lines().any(|l| l == "state: healthy"), "{health}");
    assert!(
        health.lines().any(|l| l == "success_rate: 100.0"),
        "{health}"
    );

    // A failing mirror: the sync exits 1 with the run's error, and the mirror
    // is listed as unhealthy.
    let broken = json_of(&mirrorhost(
        &server,
        &[
            "mirror",
            "add-pull",
            "--json",
            "--project",
            "cli/broken",
            "--url",
            "file:///nonexistent/x.git",
        ],
        "",
    ))["mirror_id"]
        .as_i64()
        .unwrap();
    let failed = mirrorhost(&server, &["mirror", "sync", &broken.to_string()], "");
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("failed: git:"));
    let unhealthy = json_of(&mirrorhost(&server, &["mirror", "unhealthy", "--json"], ""));
    let ids: Vec<i64> = unhealthy["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mirror_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [broken]);
}

fn rand_byte() -> u8 {
    rand::random()
}

#[tokio::test]
async fn credentials_come_from_stdin_or_a_file_never_from_argv() {
    let server = local_server();
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "cli/cred", "url": "https://example.com/a/b.git", "auth_method": "password"}),
        )
        .await;
    let set = json_of(&mirrorhost(
        &server,
        &[
            "credentials",
            "set",
            "--json",
            &id.to_string(),
            "--type",
            "password",
            "--username",
            "robot",
        ],
        "hunter2-from-stdin\n",
    ));
    assert_eq!(
        (set["type"].as_str(), set["username"].as_str()),
        (Some("password"), Some("robot"))
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "tok-from-file\n").unwrap();
    api.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/mirrors/{id}"),
        Some(json!({"auth_method": "token"})),
    )
    .await;
    let set = json_of(&mirrorhost(
        &server,
        &[
            "credentials",
            "set",
            "--json",
            &id.to_string(),
            "--type",
            "token",
            "--secret-file",
            file.to_str().unwrap(),
        ],
        "",
    ));
    assert_eq!(set["type"], "token");

    // Bad input is the API's clear error, exit status 1.
    let wrong = mirrorhost(
        &server,
        &[
            "credentials",
            "set",
            &id.to_string(),
            "--type",
            "password",
            "--username",
            "u",
        ],
        "x\n",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("auth_method is token"));
    let empty = mirrorhost(
        &server,
        &["credentials", "set", &id.to_string(), "--type", "token"],
        "\n",
    );
    assert!(String::from_utf8_lossy(&empty.stderr).contains("standard input holds no secret"));
}

#[tokio::test]
async fn conflicts_are_listed_and_resolved_from_the_cli() {
    let server = local_server();
    let api = Api::new(&server);
    let (_up, id, rewritten) = mirror_with_rewritten_main(&api, "cli/conflict").await;
    api.sync(id).await;

    let table = ok(&mirrorhost(
        &server,
        &["conflicts", "list", &id.to_string()],
        "",
    ));
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[1..4], ["refs/heads/main", "open", "manual"]);
    let conflict_id = row[0];

    let bad = mirrorhost(
        &server,
        &[
            "conflicts",
            "resolve",
            &id.to_string(),
            conflict_id,
            "--strategy",
            "mine",
        ],
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("strategy"));
    ok(&mirrorhost(
        &server,
        &[
            "conflicts",
            "resolve",
            &id.to_string(),
            conflict_id,
            "--strategy",
            "theirs",
        ],
        "",
    ));
    assert_eq!(
        git(
            &project_repo(&server, "cli/conflict"),
            &["rev-parse", "main"]
        )
        .trim(),
        rewritten
    );
    let after = json_of(&mirrorhost(
        &server,
        &["conflicts", "list", "--json", &id.to_string()],
        "",
    ));
    assert_eq!(after["conflicts"][0]["status"], "resolved");
}

#[test]
fn without_a_token_the_cli_says_where_it_looked() {
    let output = Command::new(env!("CARGO_BIN_EXE_mirrorhost"))
        .args(["mirror", "list", "--data-dir", "/nonexistent-dir"])
        .env_remove("MIRRORHOST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent-dir/admin-token"), "{stderr}");
}
