//! Push mirrors: several destinations fed by a pull's cascade, divergent
//! destination refs kept or overwritten, and deletions limited to what the
//! mirror itself pushed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Api, Upstream, bare_repo, fsck, git, local_server, project_repo, refs_of};

const PROJECT: &str = "acme/gadgets";

/// Waits until `mirror_id` has a finished run triggered by `trigger`; returns it.
async fn finished_run(api: &Api<'_>, mirror_id: i64, trigger: &str, after_run: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{mirror_id}/runs")).await;
        let done = runs["runs"].as_array().unwrap().iter().find(|r| {
            r["trigger"] == trigger
                && r["run_id"].as_i64().unwrap() > after_run
                && matches!(r["status"].as_str(), Some("succeeded" | "failed"))
        });
        if let Some(run) = done {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no finished {trigger} run of mirror {mirror_id}: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_pull_cascades_to_three_push_mirrors() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    git(&up.work(), &["tag", "-a", "v1", "-m", "v1", "main"]);
    up.push(&["main", "dev", "v1"]);
    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create("pull", json!({"project_id": PROJECT, "url": up.url()}))
        .await;
    let dests = tempfile::tempdir().unwrap();
    let mut pushes = Vec::new();
    for name in ["one.git", "two.git", "three.git"] {
        let dest = bare_repo(dests.path(), name);
        let url = format!("file://{}", dest.display());
        let id = api
            .create("push", json!({"project_id": PROJECT, "url": url}))
            .await;
        pushes.push((id, dest));
    }

    for round in 0..2 {
        if round == 1 {
            up.commit("main", "c");
            up.push(&["main", ":dev"]);
        }
        let pulled = api.sync(pull).await;
        assert_eq!(pulled["status"], "succeeded", "{pulled}");
        let local = refs_of(&project_repo(&server, PROJECT));
        // Cascade runs are queued when the pull ends: their ids are larger.
        let pull_run = pulled["run_id"].as_i64().unwrap();
        for (id, dest) in &pushes {
            let run = finished_run(&api, *id, "cascade", pull_run).await;
            assert_eq!(run["status"], "succeeded", "{run}");
            assert_eq!(refs_of(dest), local, "destination {}", dest.display());
            fsck(dest);
        }
    }
}

/// A project with one pulled branch `main` and a destination whose `main` has a
/// commit of its own.
async fn diverged_destination(
    api: &Api<'_>,
    project: &str,
    keep: bool,
) -> (Upstream, tempfile::TempDir, i64) {
    let up = Upstream::with_main();
    let pull = api
        .create("pull", json!({"project_id": project, "url": up.url()}))
        .await;
    api.sync(pull).await;
    let dests = tempfile::tempdir().unwrap();
    let dest = bare_repo(dests.path(), "dest.git");
    let url = format!("file://{}", dest.display());
    // The destination gets a commit nobody else has.
    git(&up.work(), &["push", "-q", url.as_str(), "main"]);
    git(
        &up.work(),
        &["commit", "-q", "--allow-empty", "-m", "destination only"],
    );
    git(&up.work(), &["push", "-q", url.as_str(), "main"]);
    git(&up.work(), &["reset", "-q", "--hard", "HEAD~1"]);
    up.commit("main", "b");
    up.push(&["main"]);
    api.sync(pull).await;
    let push = api
        .create(
            "push",
            json!({"project_id": project, "url": url, "keep_divergent_refs": keep}),
        )
        .await;
    (up, dests, push)
}

#[tokio::test]
async fn keep_divergent_refs_keeps_and_records_or_overwrites() {
    let server = local_server();
    let api = Api::new(&server);
    for keep in [true, false] {
        let project = format!("divergent/{keep}");
        let (_up, dests, push) = diverged_destination(&api, &project, keep).await;
        let dest = dests.path().join("dest.git");
        let theirs = git(&dest, &["rev-parse", "refs/heads/main"])
            .trim()
            .to_string();
        let ours = git(
            &project_repo(&server, &project),
            &["rev-parse", "refs/heads/main"],
        )
        .trim()
        .to_string();
        let run = api.sync(push).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let now = git(&dest, &["rev-parse", "refs/heads/main"])
            .trim()
            .to_string();
        let (_, conflicts) = api.get(&format!("/api/v1/mirrors/{push}/conflicts")).await;
        let conflict = &conflicts["conflicts"][0];
        assert_eq!(conflict["ref_name"], "refs/heads/main");
        assert_eq!(conflict["remote_oid"], theirs.as_str());
        assert!(conflict["merge_base"].is_string(), "{conflict}");
        if keep {
            assert_eq!(now, theirs, "kept");
            assert_eq!(conflict["status"], "open");
            assert_eq!(run["refs_skipped"], 1, "{run}");
        } else {
            assert_eq!(now, ours, "force-updated");
            assert_eq!(conflict["status"], "resolved");
        }
        fsck(&dest);
    }
}

#[tokio::test]
async fn only_refs_this_mirror_pushed_are_deleted_on_the_destination() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("gone", "b");
    up.push(&["main", "gone"]);
    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create("pull", json!({"project_id": PROJECT, "url": up.url()}))
        .await;
    api.sync(pull).await;
    let dests = tempfile::tempdir().unwrap();
    let dest = bare_repo(dests.path(), "dest.git");
    let url = format!("file://{}", dest.display());
    // A branch that only the destination has.
    git(
        &up.work(),
        &["push", "-q", url.as_str(), "main:refs/heads/foreign"],
    );
    let push = api
        .create("push", json!({"project_id": PROJECT, "url": url}))
        .await;
    assert_eq!(api.sync(push).await["status"], "succeeded");
    assert!(refs_of(&dest).contains_key("refs/heads/gone"));

    up.push(&[":gone"]);
    api.sync(pull).await;
    let run = api.sync(push).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let names: Vec<String> = refs_of(&dest).into_keys().collect();
    assert_eq!(names, ["refs/heads/foreign", "refs/heads/main"]);
    fsck(&dest);
}
