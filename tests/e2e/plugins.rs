//! Uploading custom plugins: checked against the world they claim, usable by
//! mirrors, kept across restarts, and not deletable while in use.

use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Api, LOCAL_REMOTES, Server, Upstream, client, local_server, project_repo, refs_of,
};

const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));

/// Uploads a component; (status, answer).
pub async fn upload(server: &Server, query: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let resp = client()
        .post(server.url(&format!("/api/v1/plugins?{query}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn uploaded_plugins_are_checked_used_kept_and_guarded() {
    let server = local_server();
    let api = Api::new(&server);

    // Refused: not a component, the wrong world, a bad name, a built-in's name.
    let (status, err) = upload(&server, "name=junk&world=branch-filter", b"not wasm").await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("component")),
        "{err}"
    );
    let (status, err) = upload(&server, "name=wrong&world=conflict-strategy", HOSTILE).await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conflict-strategy"),
        "{err}"
    );
    let (status, err) = upload(&server, "name=Bad%20Name&world=branch-filter", HOSTILE).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("name")),
        "{err}"
    );
    let (status, err) = upload(&server, "name=x&world=nonsense", HOSTILE).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("world")),
        "{err}"
    );
    let (status, _) = upload(&server, "name=ours&world=branch-filter", HOSTILE).await;
    assert_eq!(status, 409);

    let (status, meta) = upload(&server, "name=echo-filter&world=branch-filter", HOSTILE).await;
    assert_eq!(status, 201, "{meta}");
    assert_eq!(
        (&meta["builtin"], &meta["world"]),
        (&json!(false), &json!("branch-filter"))
    );
    assert_eq!(meta["size_bytes"], HOSTILE.len());

    // A mirror filtering through it: the hostile guest echoes every ref it is offered.
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    up.push(&["main", "dev"]);
    let body = json!({"project_id": "custom/filter", "url": up.url(),
                      "branch_filter": "echo-filter", "branch_filter_config": "echo"});
    let id = api.create("pull", body).await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        refs_of(&project_repo(&server, "custom/filter")),
        refs_of(&up.bare())
    );

    let (status, err) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/echo-filter", None)
        .await;
    assert_eq!(status, 409, "in use: {err}");
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/ours", None)
        .await;
    assert_eq!(status, 409, "built-ins stay");

    // It survives a restart.
    let data_dir = server.stop();
    let server = Server::start_in(data_dir, LOCAL_REMOTES);
    let api = Api::new(&server);
    let (_, listed) = api.get("/api/v1/plugins").await;
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo-filter")
    );

    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/mirrors/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/echo-filter", None)
        .await;
    assert_eq!(status, 204);
    let (_, listed) = api.get("/api/v1/plugins").await;
    assert!(
        !listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo-filter")
    );
    assert!(
        !server
            .data_dir
            .path()
            .join("plugins/echo-filter.branch-filter.wasm")
            .exists()
    );
}

const SEMVER_RELEASE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/semver_release_filter.wasm"));
const THEIRS_UNLESS_PROTECTED: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/theirs_unless_protected.wasm"));

#[tokio::test]
async fn the_example_filter_mirrors_only_semver_tags_and_release_branches() {
    let server = local_server();
    let api = Api::new(&server);
    let (status, meta) = upload(
        &server,
        "name=semver-release&world=branch-filter",
        SEMVER_RELEASE,
    )
    .await;
    assert_eq!(status, 201, "{meta}");
    // The wrong world is refused.
    let (status, _) = upload(
        &server,
        "name=semver-strategy&world=conflict-strategy",
        SEMVER_RELEASE,
    )
    .await;
    assert_eq!(status, 422);

    let up = Upstream::new();
    up.commit("main", "a");
    for branch in ["release/1.0", "release-2", "feature/x"] {
        up.commit(branch, "b");
    }
    for tag in ["v1.2.3", "2.0.0-rc.1", "nightly-2026", "v1.02.0"] {
        crate::support::git(&up.work(), &["tag", tag]);
    }
    up.push(&["--all"]);
    up.push(&["--tags"]);

    let create = |project: &str, config: serde_json::Value| {
        json!({"project_id": project, "url": up.url(), "branch_filter": "semver-release",
               "branch_filter_config": config})
    };
    let id = api
        .create("pull", create("examples/semver", json!({})))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let names: Vec<String> = refs_of(&project_repo(&server, "examples/semver"))
        .into_keys()
        .collect();
    assert_eq!(
        names,
        [
            "refs/heads/release-2",
            "refs/heads/release/1.0",
            "refs/tags/2.0.0-rc.1",
            "refs/tags/v1.2.3"
        ]
    );

    let strict = api
        .create(
            "pull",
            create(
                "examples/stable",
                json!({"prereleases": false, "release_prefixes": ["release/"]}),
            ),
        )
        .await;
    assert_eq!(api.sync(strict).await["status"], "succeeded");
    let names: Vec<String> = refs_of(&project_repo(&server, "examples/stable"))
        .into_keys()
        .collect();
    assert_eq!(names, ["refs/heads/release/1.0", "refs/tags/v1.2.3"]);

    // A config the plugin rejects is refused when the mirror is saved.
    let (status, err) = api
        .post(
            "/api/v1/mirrors/pull",
            create("examples/bad", json!({"prereleases": "yes"})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("branch_filter_config")),
        "{err}"
    );
}

#[tokio::test]
async fn the_example_strategy_takes_theirs_except_on_protected_branches() {
    let server = local_server();
    let api = Api::new(&server);
    let (status, meta) = upload(
        &server,
        "name=theirs-unless-protected&world=conflict-strategy",
        THEIRS_UNLESS_PROTECTED,
    )
    .await;
    assert_eq!(status, 201, "{meta}");
    let (status, _) = api
        .put(
            "/api/v1/projects/examples%2Fstrategy/protected-branches",
            json!(["main"]),
        )
        .await;
    assert_eq!(status, 200);

    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("main", "b");
    up.commit("dev", "c");
    up.commit("dev", "d");
    up.push(&["main", "dev"]);
    let id = api
        .create(
            "pull",
            json!({"project_id": "examples/strategy", "url": up.url(),
                   "conflict_strategy": "theirs-unless-protected"}),
        )
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let local = project_repo(&server, "examples/strategy");
    let before = refs_of(&local);

    // Upstream rewrites both branches.
    let git = |args: &[&str]| crate::support::git(&up.work(), args);
    git(&["checkout", "-q", "main"]);
    git(&["reset", "-q", "--hard", "HEAD~1"]);
    up.commit("main", "rewritten-main");
    git(&["checkout", "-q", "dev"]);
    git(&["reset", "-q", "--hard", "HEAD~1"]);
    let new_dev = up.commit("dev", "rewritten-dev");
    git(&["push", "-q", "--force", "origin", "main", "dev"]);

    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let after = refs_of(&local);
    assert_eq!(after["refs/heads/dev"], new_dev, "unprotected: theirs");
    assert_eq!(
        after["refs/heads/main"], before["refs/heads/main"],
        "protected: kept"
    );
    let (_, conflicts) = api.get(&format!("/api/v1/mirrors/{id}/conflicts")).await;
    let conflicts = conflicts["conflicts"].as_array().unwrap();
    let open: Vec<&str> = conflicts
        .iter()
        .filter(|c| c["status"] == "open")
        .map(|c| c["ref_name"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["refs/heads/main"]);
}
