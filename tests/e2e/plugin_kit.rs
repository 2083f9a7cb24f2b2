//! The plugin author's kit: `mirrorhost plugin new` scaffolds a crate that
//! builds and tests on its own, `mirrorhost plugin test` runs the component as
//! the server would, and the server accepts and uses it.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::plugins::upload;
use crate::support::{Api, Upstream, local_server, project_repo, refs_of};

fn mirrorhost(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorhost"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// `cargo <args>` in `dir`, as a plugin author would run it: none of this
/// build's settings leak in, and a target dir shared between runs keeps the
/// SDK's dependencies compiled.
fn cargo(dir: &Path, args: &[&str]) {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-kit-target");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", &target);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn target_wasm(crate_name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plugin-kit-target/wasm32-wasip2/release")
        .join(format!("{crate_name}.wasm"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_plugin_builds_tests_runs_uploads_and_filters_a_real_sync() {
    let work = tempfile::tempdir().unwrap();
    for world in ["branch-filter", "conflict-strategy", "auth-provider"] {
        let name = format!("my-{world}");
        let out = mirrorhost(work.path(), &["plugin", "new", &name, "--world", world]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Its own test passes, natively, outside this workspace.
        cargo(&work.path().join(&name), &["test", "--quiet"]);
    }
    let again = mirrorhost(
        work.path(),
        &[
            "plugin",
            "new",
            "my-branch-filter",
            "--world",
            "branch-filter",
        ],
    );
    assert!(
        !again.status.success(),
        "an existing directory is not overwritten"
    );
    let bad = mirrorhost(
        work.path(),
        &["plugin", "new", "Bad_Name", "--world", "branch-filter"],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("plugin name"));

    let dir = work.path().join("my-branch-filter");
    cargo(
        &dir,
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );
    let wasm = target_wasm("my_branch_filter");

    // `plugin test` on the scaffold's own sample case.
    let out = mirrorhost(
        &dir,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--world",
            "branch-filter",
            "--input",
            "case.json",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["decision"]["kept"],
        json!(["refs/heads/main", "refs/heads/release/1.0"])
    );
    assert!(report["fuel_used"].as_u64().unwrap() > 0);
    assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(report["elapsed_us"].is_u64());
    // As the wrong world, it is refused the way an upload would be.
    let out = mirrorhost(
        &dir,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--world",
            "conflict-strategy",
            "--input",
            "case.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid conflict-strategy component")
    );

    // Uploaded and used by a mirror: only `main` and `release/*` arrive.
    let server = local_server();
    let api = Api::new(&server);
    let query = "name=my-branch-filter&world=branch-filter";
    let (status, meta) = upload(&server, query, &std::fs::read(&wasm).unwrap()).await;
    assert_eq!(status, 201, "{meta}");
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("release/2.0", "b");
    up.commit("feature/y", "c");
    up.push(&["--all"]);
    let id = api
        .create(
            "pull",
            json!({"project_id": "kit/p", "url": up.url(), "branch_filter": "my-branch-filter",
                   "branch_filter_config": {"prefixes": ["main", "release/"]}}),
        )
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let names: Vec<String> = refs_of(&project_repo(&server, "kit/p"))
        .into_keys()
        .collect();
    assert_eq!(names, ["refs/heads/main", "refs/heads/release/2.0"]);
}

/// A mirror names its own auth provider and config: the scaffolded token
/// provider with `{"username": "ci-bot"}` gets through a server that wants
/// that username, where the built-in token provider (username `oauth2` for an
/// unknown host) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_selects_its_auth_provider_by_name_and_config() {
    let work = tempfile::tempdir().unwrap();
    let out = mirrorhost(
        work.path(),
        &["plugin", "new", "bot-token", "--world", "auth-provider"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cargo(
        &work.path().join("bot-token"),
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );

    let up = Upstream::with_main();
    let auth = crate::http_git::BasicAuth {
        username: Some("ci-bot".into()),
        password: "tok-7Qx-distinctive".into(),
    };
    let http = crate::http_git::HttpGit::start_with_auth(up.dir.path(), Some(auth)).await;
    let server = local_server();
    let api = Api::new(&server);
    let component = std::fs::read(target_wasm("bot_token")).unwrap();
    let (status, meta) = upload(&server, "name=bot-token&world=auth-provider", &component).await;
    assert_eq!(status, 201, "{meta}");

    let id = api
        .create(
            "pull",
            json!({"project_id": "kit/auth", "url": http.url("upstream.git"), "auth_method": "token"}),
        )
        .await;
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{id}/credentials"),
            json!({"type": "token", "token": "tok-7Qx-distinctive"}),
        )
        .await;
    assert_eq!(status, 200);
    let refused = api.sync(id).await;
    assert_eq!(
        refused["status"], "failed",
        "the built-in provider sends oauth2"
    );

    let patch = |body: Value| {
        let api = &api;
        async move {
            api.call(
                reqwest::Method::PATCH,
                &format!("/api/v1/mirrors/{id}"),
                Some(body),
            )
            .await
        }
    };
    // The plugin checks its config when the mirror is saved.
    let (status, err) =
        patch(json!({"auth_provider": "bot-token", "auth_provider_config": {"user": 1}})).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("auth_provider_config")),
        "{err}"
    );
    let (status, err) = patch(json!({"auth_provider": "regex-filter"})).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("auth_provider")),
        "{err}"
    );
    let (status, mirror) = patch(
        json!({"auth_provider": "bot-token", "auth_provider_config": {"username": "ci-bot"}}),
    )
    .await;
    assert_eq!(status, 200, "{mirror}");
    assert_eq!(mirror["auth_provider"], "bot-token");

    assert_eq!(api.sync(id).await["status"], "succeeded");
    assert_eq!(
        refs_of(&project_repo(&server, "kit/auth")),
        refs_of(&up.bare())
    );
    // In use: it cannot be deleted.
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/bot-token", None)
        .await;
    assert_eq!(status, 409);
}
