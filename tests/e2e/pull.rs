//! Pull mirrors over file:// against repositories made with the git CLI; results
//! checked with `git for-each-ref` and `git fsck`.

use serde_json::{Value, json};

use crate::history::{History, generate};
use crate::support::{
    Api, LOCAL_REMOTES, Server, Upstream, bare_repo, fsck, git, local_server, project_repo,
    refs_of, sample, scrape,
};

const PROJECT: &str = "acme/widgets";

fn pull_body(up: &Upstream, extra: Value) -> Value {
    let mut body = json!({"project_id": PROJECT, "url": up.url()});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test]
async fn initial_incremental_and_noop_pulls_match_upstream() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("feature", "b");
    up.commit("main", "c");
    git(&up.work(), &["tag", "-a", "v1.0", "-m", "release", "main"]);
    git(&up.work(), &["tag", "light", "feature"]);
    up.push(&["main", "feature", "v1.0", "light"]);

    let server = local_server();
    let api = Api::new(&server);
    let id = api.create("pull", pull_body(&up, json!({}))).await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["refs_created"], 4, "{run}");
    assert!(run["bytes_transferred"].as_i64().unwrap() > 0, "{run}");
    let local = project_repo(&server, PROJECT);
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);

    // Incremental: a new commit, a new branch, a deleted branch, a new tag, a
    // deleted tag.
    up.commit("main", "d");
    up.commit("topic", "e");
    git(&up.work(), &["tag", "v1.1", "main"]);
    up.push(&["main", "topic", "v1.1", ":feature", ":refs/tags/light"]);
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (
            &run["refs_created"],
            &run["refs_updated"],
            &run["refs_deleted"]
        ),
        (&json!(2), &json!(1), &json!(2)),
        "{run}"
    );
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);

    // Nothing changed upstream: no pack, no ref change.
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["bytes_transferred"], 0, "{run}");
    assert_eq!(
        run["refs_created"].as_i64().unwrap() + run["refs_updated"].as_i64().unwrap(),
        0
    );

    let (status, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
    assert_eq!(status, 200);
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(
        runs[0]["run_id"].as_i64() > runs[1]["run_id"].as_i64(),
        "newest first"
    );
    for run in runs {
        assert_eq!(run["trigger"], "manual");
        assert!(run["duration_ms"].is_i64() && run["finished_at"].is_string());
    }

    // One span per run, carrying the mirror and the trigger.
    let (_, log) = server.terminate();
    let in_span = |event: &str| {
        log.iter().any(|l| {
            l.contains(&format!("run{{mirror_id={id} run_id="))
                && l.contains("trigger=manual}")
                && l.contains(event)
        })
    };
    assert!(
        in_span("run started") && in_span("run succeeded"),
        "{log:#?}"
    );
}

/// Upstream rewrites `main` (force-push) and adds `other` in the same push.
struct Diverged {
    /// Keeps the upstream's directory alive for the rest of the test.
    _upstream: Upstream,
    before: String,
    after: String,
}

fn diverge(up: Upstream) -> Diverged {
    let before = git(&up.bare(), &["rev-parse", "refs/heads/main"])
        .trim()
        .to_string();
    git(&up.work(), &["checkout", "-q", "main"]);
    git(&up.work(), &["reset", "-q", "--hard", "HEAD~1"]);
    let after = up.commit("main", "rewritten");
    up.commit("other", "o");
    git(
        &up.work(),
        &["push", "-q", "--force", "origin", "main", "other"],
    );
    Diverged {
        _upstream: up,
        before,
        after,
    }
}

fn two_commit_upstream() -> Upstream {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("main", "b");
    up.push(&["main"]);
    up
}

async fn local_main(server: &Server) -> String {
    git(
        &project_repo(server, PROJECT),
        &["rev-parse", "refs/heads/main"],
    )
    .trim()
    .to_string()
}

#[tokio::test]
async fn force_push_upstream_under_each_strategy() {
    let server = local_server();
    let api = Api::new(&server);
    for strategy in ["theirs", "ours", "manual", "abort"] {
        let up = two_commit_upstream();
        let project = format!("strategies/{strategy}");
        let body = json!({"project_id": project, "url": up.url(), "conflict_strategy": strategy});
        let id = api.create("pull", body).await;
        assert_eq!(api.sync(id).await["status"], "succeeded");
        let d = diverge(up);
        let run = api.sync(id).await;
        let local = project_repo(&server, &project);
        let main = git(&local, &["rev-parse", "refs/heads/main"])
            .trim()
            .to_string();
        let has_other = refs_of(&local).contains_key("refs/heads/other");
        let (_, conflicts) = api.get(&format!("/api/v1/mirrors/{id}/conflicts")).await;
        let conflict = &conflicts["conflicts"][0];
        match strategy {
            "theirs" => {
                assert_eq!(run["status"], "succeeded", "{run}");
                assert_eq!(main, d.after);
                assert!(has_other);
                assert_eq!(
                    (&conflict["status"], &conflict["resolution"]),
                    (&json!("resolved"), &json!("theirs"))
                );
            }
            "ours" => {
                assert_eq!(run["status"], "succeeded", "{run}");
                assert_eq!(main, d.before);
                assert!(has_other, "other refs still move");
                assert_eq!(run["refs_skipped"], 1, "{run}");
                assert_eq!(conflict["resolution"], "ours");
            }
            "manual" => {
                assert_eq!(run["status"], "succeeded", "{run}");
                assert_eq!(main, d.before);
                assert_eq!(conflict["status"], "open", "{conflicts}");
                assert_eq!(conflict["local_oid"], d.before.as_str());
                assert_eq!(conflict["remote_oid"], d.after.as_str());
                assert!(conflict["merge_base"].is_string(), "{conflict}");
                assert_eq!(
                    (&conflict["ahead"], &conflict["behind"]),
                    (&json!(1), &json!(1))
                );
            }
            _ => {
                assert_eq!(run["status"], "failed", "{run}");
                assert!(
                    run["error"].as_str().unwrap().contains("refs/heads/main"),
                    "{run}"
                );
                assert_eq!(main, d.before);
                assert!(!has_other, "an aborted run changes nothing");
                assert_eq!(conflict["status"], "aborted");
            }
        }
        fsck(&local);
    }
}

#[tokio::test]
async fn manual_conflicts_are_resolved_through_the_api() {
    let server = local_server();
    let api = Api::new(&server);
    let up = two_commit_upstream();
    let id = api
        .create(
            "pull",
            json!({"project_id": PROJECT, "url": up.url(), "conflict_strategy": "manual"}),
        )
        .await;
    api.sync(id).await;
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = bare_repo(dest_dir.path(), "dest.git");
    let push = api
        .create(
            "push",
            json!({"project_id": PROJECT, "url": format!("file://{}", dest.display())}),
        )
        .await;
    let d = diverge(up);

    // Detection is a dry run: it reports the divergence and changes nothing.
    let before_refs = refs_of(&project_repo(&server, PROJECT));
    let (status, detected) = api
        .post(&format!("/api/v1/mirrors/{id}/conflicts/detect"), json!({}))
        .await;
    assert_eq!(status, 200, "{detected}");
    assert_eq!(detected["diverged"], json!(["refs/heads/main"]));
    let main_plan = detected["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ref_name"] == "refs/heads/main")
        .unwrap();
    assert_eq!(main_plan["action"], "manual");
    assert_eq!(refs_of(&project_repo(&server, PROJECT)), before_refs);
    // It opens the divergence as a conflict to resolve by id.
    let opened = &detected["conflicts"][0];
    assert_eq!(
        (
            &opened["ref_name"],
            &opened["status"],
            &opened["remote_oid"]
        ),
        (&json!("refs/heads/main"), &json!("open"), &json!(d.after))
    );
    assert_eq!(opened["run_id"], Value::Null);
    let detected_id = opened["conflict_id"].as_i64().unwrap();

    api.sync(id).await;
    // Neither a second run nor a second detection opens the same conflict twice.
    api.sync(id).await;
    let (_, again) = api
        .post(&format!("/api/v1/mirrors/{id}/conflicts/detect"), json!({}))
        .await;
    assert_eq!(again["conflicts"][0]["conflict_id"], detected_id);
    let (_, conflicts) = api.get(&format!("/api/v1/mirrors/{id}/conflicts")).await;
    let open: Vec<&Value> = conflicts["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "open")
        .collect();
    assert_eq!(open.len(), 1, "{conflicts}");
    let cid = open[0]["conflict_id"].as_i64().unwrap();
    assert_eq!(cid, detected_id);

    let path = format!("/api/v1/mirrors/{id}/conflicts/{cid}/resolve");
    let (status, err) = api.post(&path, json!({"strategy": "sideways"})).await;
    assert_eq!(status, 422, "{err}");
    let (status, resolved) = api.post(&path, json!({"strategy": "theirs"})).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(
        (&resolved["status"], &resolved["resolution"]),
        (&json!("resolved"), &json!("theirs"))
    );
    assert!(resolved["resolved_at"].is_string());
    assert_eq!(local_main(&server).await, d.after);
    // The resolution moved a ref: the project's push mirror carries it on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while refs_of(&dest).get("refs/heads/main") != Some(&d.after) {
        assert!(
            std::time::Instant::now() < deadline,
            "the push mirror never got the resolution: {:?}",
            refs_of(&dest)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, runs) = api.get(&format!("/api/v1/mirrors/{push}/runs")).await;
    assert_eq!(runs["runs"][0]["trigger"], "cascade", "{runs}");
    let (status, _) = api.post(&path, json!({"strategy": "ours"})).await;
    assert_eq!(status, 409, "a resolved conflict is not resolved again");
    fsck(&project_repo(&server, PROJECT));
}

#[tokio::test]
async fn a_detected_conflict_closes_when_a_run_settles_it() {
    let server = local_server();
    let api = Api::new(&server);
    let up = two_commit_upstream();
    // The default strategy takes upstream's side.
    let id = api
        .create("pull", json!({"project_id": PROJECT, "url": up.url()}))
        .await;
    api.sync(id).await;
    let detect = format!("/api/v1/mirrors/{id}/conflicts/detect");
    let (_, nothing) = api.post(&detect, json!({})).await;
    assert_eq!(nothing["conflicts"], json!([]), "{nothing}");
    let d = diverge(up);

    let (_, detected) = api.post(&detect, json!({})).await;
    let opened = &detected["conflicts"][0];
    assert_eq!(
        (&opened["status"], &opened["strategy"]),
        (&json!("open"), &json!("theirs"))
    );
    let cid = opened["conflict_id"].as_i64().unwrap();
    assert_eq!(api.sync(id).await["status"], "succeeded");
    assert_eq!(local_main(&server).await, d.after);

    let (_, listed) = api.get(&format!("/api/v1/mirrors/{id}/conflicts")).await;
    let conflicts = listed["conflicts"].as_array().unwrap();
    assert!(
        conflicts.iter().all(|c| c["status"] == "resolved"),
        "{listed}"
    );
    let detected = conflicts.iter().find(|c| c["conflict_id"] == cid).unwrap();
    assert_eq!(detected["resolution"], "theirs");
    let (status, _) = api
        .post(
            &format!("/api/v1/mirrors/{id}/conflicts/{cid}/resolve"),
            json!({"strategy": "ours"}),
        )
        .await;
    assert_eq!(status, 409, "the run settled it");
}

#[tokio::test]
async fn scope_by_regex_and_protected_branches() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("release/1.0", "b");
    up.commit("wip", "c");
    git(&up.work(), &["tag", "v1", "main"]);
    up.push(&["main", "release/1.0", "wip", "v1"]);
    let server = local_server();
    let api = Api::new(&server);

    let id = api
        .create("pull", json!({"project_id": "scope/regex", "url": up.url(), "mirror_branch_regex": "^(main|release/.*)$"}))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let names: Vec<String> = refs_of(&project_repo(&server, "scope/regex"))
        .into_keys()
        .collect();
    assert_eq!(names, ["refs/heads/main", "refs/heads/release/1.0"]);

    // Protected-only with no protected branch mirrors nothing (GitLab would mirror all).
    let id = api
        .create("pull", json!({"project_id": "scope/protected", "url": up.url(), "only_protected_branches": true}))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    assert!(refs_of(&project_repo(&server, "scope/protected")).is_empty());

    let (status, _) = api
        .put(
            "/api/v1/projects/scope%2Fprotected/protected-branches",
            json!(["main", "release/*"]),
        )
        .await;
    assert_eq!(status, 200);
    api.sync(id).await;
    let names: Vec<String> = refs_of(&project_repo(&server, "scope/protected"))
        .into_keys()
        .collect();
    assert_eq!(names, ["refs/heads/main", "refs/heads/release/1.0"]);

    // Pruning stays inside the scope: deleting an out-of-scope branch upstream, or
    // having one locally, touches nothing else.
    up.push(&[":wip"]);
    api.sync(id).await;
    let names: Vec<String> = refs_of(&project_repo(&server, "scope/protected"))
        .into_keys()
        .collect();
    assert_eq!(names, ["refs/heads/main", "refs/heads/release/1.0"]);
}

/// A mirror that configures no filter takes the upstream's branches and
/// tags, and nothing else it advertises (review refs, notes), without
/// running a plugin.
#[tokio::test]
async fn without_a_filter_branches_and_tags_are_in_scope_and_no_plugin_runs() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("topic", "b");
    git(&up.work(), &["tag", "v1", "main"]);
    git(&up.work(), &["notes", "add", "-m", "note", "main"]);
    up.push(&[
        "main",
        "topic",
        "v1",
        "refs/notes/commits",
        "topic:refs/pull/1/head",
    ]);
    let server = local_server();
    let api = Api::new(&server);
    let id = api.create("pull", pull_body(&up, json!({}))).await;
    let calls = async || {
        sample(
            &scrape(&server).await.0,
            "mirrorhost_plugin_calls_total",
            &[],
        )
    };
    let before = calls().await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let names: Vec<String> = refs_of(&project_repo(&server, PROJECT))
        .into_keys()
        .collect();
    assert_eq!(
        names,
        ["refs/heads/main", "refs/heads/topic", "refs/tags/v1"]
    );
    assert_eq!(calls().await, before, "a plugin ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_and_push_over_smart_http() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    git(&up.work(), &["tag", "-a", "v1", "-m", "v1", "main"]);
    up.push(&["main", "dev", "v1"]);
    let dest = bare_repo(up.dir.path(), "dest.git");
    let http = crate::http_git::HttpGit::start(up.dir.path()).await;

    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create(
            "pull",
            json!({"project_id": "http/project", "url": http.url("upstream.git")}),
        )
        .await;
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let local = project_repo(&server, "http/project");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);
    let (_, mirror) = api.get(&format!("/api/v1/mirrors/{pull}")).await;
    assert_eq!(mirror["update_status"], "finished", "{mirror}");
    assert_eq!(mirror["last_update_at"], run["finished_at"], "{mirror}");
    assert_eq!(mirror["last_successful_update_at"], run["finished_at"]);
    assert_eq!(mirror["last_update_started_at"], run["started_at"]);
    assert_eq!(mirror["last_error"], Value::Null);

    let push = api
        .create(
            "push",
            json!({"project_id": "http/project", "url": http.url("dest.git")}),
        )
        .await;
    let run = api.sync(push).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&dest), refs_of(&local));
    fsck(&dest);

    up.commit("main", "c");
    up.push(&["main"]);
    let run = api.sync(pull).await;
    assert_eq!(
        (&run["status"], &run["refs_updated"]),
        (&json!("succeeded"), &json!(1)),
        "{run}"
    );
    let run = api.sync(push).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));

    let run = api.sync(pull).await;
    assert_eq!(
        run["bytes_transferred"], 0,
        "a no-op pull transfers nothing: {run}"
    );
}

#[tokio::test]
async fn an_object_over_max_object_bytes_fails_the_run_and_changes_nothing() {
    let up = Upstream::with_main();
    let big: String = (0..120_000).map(|i| format!("{i:016x}\n")).collect();
    std::fs::write(up.work().join("big"), big).unwrap();
    git(&up.work(), &["add", "big"]);
    git(&up.work(), &["commit", "-q", "-m", "a 2 MB file"]);
    up.push(&["main"]);

    let mut envs = LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_MAX_OBJECT_BYTES", "1048576"));
    let server = Server::start(&envs);
    let api = Api::new(&server);
    let id = api.create("pull", pull_body(&up, json!({}))).await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("max_object_bytes is 1048576"), "{error}");
    let local = project_repo(&server, PROJECT);
    assert!(refs_of(&local).is_empty(), "no ref may change");
    let packs = std::fs::read_dir(local.join("objects/pack"))
        .unwrap()
        .count();
    assert_eq!(packs, 0, "no pack, partial or whole, is left");
}

/// A run's refs land in one step, however many: updating them must not hold a
/// file open per ref (libgit2's transaction did, and a project with more tags
/// than the service may open files could never be mirrored).
#[tokio::test]
async fn more_refs_than_the_service_may_open_files_land_in_one_run() {
    let upstream = tempfile::tempdir().unwrap();
    let bare = bare_repo(upstream.path(), "many.git");
    // 300 commits with a branch and a tag at each: 601 refs.
    let history = History {
        commits: 300,
        blob_bytes: 16,
        dirs: 1,
        refs_every: 1,
    };
    generate(&bare, history);
    let server = Server::start_with_open_file_limit(256, LOCAL_REMOTES);
    let api = Api::new(&server);
    let url = format!("file://{}", bare.display());
    let id = api
        .create("pull", json!({"project_id": PROJECT, "url": url}))
        .await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["refs_created"], 601, "{run}");
    let local = project_repo(&server, PROJECT);
    assert_eq!(refs_of(&local), refs_of(&bare));
    fsck(&local);
}

/// An upstream may advertise names no mirror can hold: a ref beside a
/// directory of the same name, a name that is not UTF-8. Each is refused by
/// name, with its reason in the run's ref results; the rest lands, and the
/// mirror stays one git can fsck and clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_git_cannot_hold_are_refused_and_the_rest_lands() {
    let up = Upstream::with_main();
    let main = git(&up.bare(), &["rev-parse", "refs/heads/main"]);
    // git itself would never write these, but reads and advertises them.
    let mut packed = format!("{main} refs/heads/a\n{main} refs/heads/a/b\n").into_bytes();
    packed.extend_from_slice(format!("{main} refs/heads/caf").as_bytes());
    packed.extend_from_slice(b"\xe9\n");
    std::fs::write(up.bare().join("packed-refs"), packed).unwrap();
    let http = crate::http_git::HttpGit::start(up.dir.path()).await;

    let server = local_server();
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "names/p", "url": http.url("upstream.git")}),
        )
        .await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["refs_skipped"], 2, "{run}");
    let local = project_repo(&server, "names/p");
    let names: Vec<String> = refs_of(&local).into_keys().collect();
    assert_eq!(names, ["refs/heads/a", "refs/heads/main"]);
    fsck(&local);
    let clone = tempfile::tempdir().unwrap();
    git(
        clone.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            local.to_str().unwrap(),
            "copy.git",
        ],
    );

    let run_id = run["run_id"].as_i64().unwrap();
    let (status, refs) = api.get(&format!("/api/v1/runs/{run_id}/refs")).await;
    assert_eq!(status, 200, "{refs}");
    let refused: Vec<(&str, &str)> = refs["refs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "refused")
        .map(|r| {
            (
                r["ref_name"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(refused.len(), 2, "{refs}");
    assert_eq!(refused[0].0, "refs/heads/a/b");
    assert!(refused[0].1.contains("clashes with refs/heads/a"), "{refs}");
    assert_eq!(refused[1].0, "refs/heads/caf\u{fffd}");
    assert!(refused[1].1.contains("not UTF-8"), "{refs}");
    let created: Vec<&str> = refs["refs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "create")
        .map(|r| r["ref_name"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["refs/heads/a", "refs/heads/main"]);

    // The next run refuses the same names again and changes nothing.
    let again = api.sync(id).await;
    assert_eq!(
        (
            &again["status"],
            &again["refs_created"],
            &again["refs_skipped"]
        ),
        (&json!("succeeded"), &json!(0), &json!(2)),
        "{again}"
    );
}

/// mirrorhost keeps SHA-1 repositories: a SHA-256 upstream fails the run with
/// a message that names the format, over HTTP and file:// alike, and leaves
/// no ref behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha256_remote_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sha256 = ["--object-format=sha256", "-b", "main"];
    git(
        root,
        &[&["init", "-q", "--bare"][..], &sha256, &["upstream.git"]].concat(),
    );
    git(root, &[&["init", "-q"][..], &sha256, &["work"]].concat());
    let work = root.join("work");
    std::fs::write(work.join("f.txt"), "sha256\n").unwrap();
    git(&work, &["add", "f.txt"]);
    git(&work, &["commit", "-q", "-m", "a"]);
    let bare = root.join("upstream.git");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let http = crate::http_git::HttpGit::start(root).await;

    let server = local_server();
    let api = Api::new(&server);
    let urls = [
        ("sha/http", http.url("upstream.git")),
        ("sha/file", format!("file://{}", bare.display())),
    ];
    for (project, url) in urls {
        let id = api
            .create("pull", json!({"project_id": project, "url": url}))
            .await;
        let run = api.sync(id).await;
        assert_eq!(run["status"], "failed", "{run}");
        let error = run["error"].as_str().unwrap();
        assert!(
            error.contains("sha256 object format is not supported"),
            "{project}: {error}"
        );
        assert!(refs_of(&project_repo(&server, project)).is_empty());
    }
}

/// The mirror's HEAD names the upstream's default branch, as `git clone
/// --mirror` sets it, and follows it when it changes: a clone of the mirror
/// checks out what a clone of the upstream would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirrors_head_follows_the_upstreams_default_branch() {
    let up = Upstream::new();
    up.commit("trunk", "on-trunk");
    up.commit("dev", "on-dev");
    up.push(&["trunk", "dev"]);
    git(&up.bare(), &["symbolic-ref", "HEAD", "refs/heads/trunk"]);
    let http = crate::http_git::HttpGit::start(up.dir.path()).await;
    let server = local_server();
    let api = Api::new(&server);
    for (project, url) in [
        ("head/http", http.url("upstream.git")),
        ("head/file", up.url()),
    ] {
        git(&up.bare(), &["symbolic-ref", "HEAD", "refs/heads/trunk"]);
        let id = api
            .create("pull", json!({"project_id": project, "url": url}))
            .await;
        assert_eq!(api.sync(id).await["status"], "succeeded");
        let local = project_repo(&server, project);
        assert_eq!(
            git(&local, &["symbolic-ref", "HEAD"]),
            "refs/heads/trunk",
            "{project}"
        );
        let clone = tempfile::tempdir().unwrap();
        git(
            clone.path(),
            &["clone", "-q", local.to_str().unwrap(), "work"],
        );
        assert!(clone.path().join("work/on-trunk").exists(), "{project}");

        git(&up.bare(), &["symbolic-ref", "HEAD", "refs/heads/dev"]);
        assert_eq!(api.sync(id).await["status"], "succeeded");
        assert_eq!(
            git(&local, &["symbolic-ref", "HEAD"]),
            "refs/heads/dev",
            "{project}"
        );
        fsck(&local);
    }
}

/// file:// remotes are reached as git reaches them, through `git
/// upload-pack` and `git receive-pack` on the path (`sync::local_transport`):
/// a path that is no repository fails with git's own words, and a pull and a
/// push through them land whole.
#[tokio::test]
async fn file_remotes_are_reached_through_gits_own_programs() {
    let server = local_server();
    let api = Api::new(&server);
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    up.push(&["main", "dev"]);
    let missing = format!("file://{}/nothing.git", up.dir.path().display());
    let id = api
        .create(
            "pull",
            json!({"project_id": "local/missing", "url": missing}),
        )
        .await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("does not appear to be a git repository"),
        "{error}"
    );

    let id = api
        .create("pull", json!({"project_id": "local/app", "url": up.url()}))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let local = project_repo(&server, "local/app");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    let dest = bare_repo(up.dir.path(), "dest.git");
    let url = format!("file://{}", dest.display());
    let id = api
        .create("push", json!({"project_id": "local/app", "url": url}))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));
    fsck(&local);
    fsck(&dest);
}

/// A file:// pull has pack-objects make its pack in the remote's repository
/// (`sync::local_fetch`), leaving out what the mirror's refs reach: a later
/// pull moves only the new objects, and one whose old tip is gone upstream
/// still lands; a remote that cannot make its pack fails the run in git's
/// words, leaving no pack and no ref behind.
#[tokio::test]
async fn file_pulls_send_only_what_the_mirror_lacks() {
    let server = local_server();
    let api = Api::new(&server);
    let up = Upstream::new();
    for i in 0..30 {
        up.commit("main", &format!("f{i}"));
    }
    up.commit("stable", "s");
    up.push(&["main", "stable"]);
    let id = api.create("pull", pull_body(&up, json!({}))).await;
    let first = api.sync(id).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let local = project_repo(&server, PROJECT);

    up.commit("main", "f30");
    up.push(&["main"]);
    let second = api.sync(id).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let bytes = |run: &Value| run["bytes_transferred"].as_i64().unwrap();
    assert!(
        bytes(&second) * 5 < bytes(&first),
        "one commit's objects, not the history: {first} then {second}"
    );
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);

    // main rewritten upstream and its old commits pruned there: the mirror's
    // tip of main is no longer a have, stable's still is.
    git(&up.work(), &["checkout", "-q", "main"]);
    git(&up.work(), &["reset", "-q", "--hard", "HEAD~5"]);
    let rewritten = up.commit("main", "rewritten");
    git(&up.work(), &["push", "-q", "--force", "origin", "main"]);
    git(&up.bare(), &["reflog", "expire", "--expire=now", "--all"]);
    git(&up.bare(), &["gc", "-q", "--prune=now"]);
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    git(&local, &["cat-file", "-e", &rewritten]);
    fsck(&local);

    // A blob of the new commit is missing upstream: pack-objects stops
    // halfway through the pack.
    up.commit("main", "broken");
    up.push(&["main"]);
    let blob = git(&up.bare(), &["rev-parse", "main:broken"]);
    let blob = blob.trim();
    std::fs::remove_file(up.bare().join("objects").join(&blob[..2]).join(&blob[2..])).unwrap();
    let (refs, packs) = (refs_of(&local), pack_dir(&local));
    let run = api.sync(id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("git pack-objects in the remote's repository failed")
            && error.contains(blob),
        "{error}"
    );
    assert_eq!(refs_of(&local), refs);
    assert_eq!(
        pack_dir(&local),
        packs,
        "no pack, partial or whole, is left"
    );
}

/// The names in a repository's pack directory, sorted.
fn pack_dir(repo: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
