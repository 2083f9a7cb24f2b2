//! Housekeeping of a project repository: automatic after pulls past the pack
//! limit, on demand through the API; checked with `git fsck` and the refs.

use serde_json::json;

use crate::support::{ADMIN_TOKEN, Api, Server, Upstream, fsck, git, project_repo, refs_of};

const PROJECT: &str = "acme/tidy";

/// Packs in the repository's pack directory, a cruft pack not counted.
fn packs(repo: &std::path::Path) -> usize {
    std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|name| name.strip_suffix(".pack").map(str::to_owned))
        .filter(|stem| !repo.join(format!("objects/pack/{stem}.mtimes")).exists())
        .count()
}

#[tokio::test]
async fn pulls_past_the_pack_limit_are_packed_anew_and_on_demand_too() {
    let server = Server::start(&[
        ("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN),
        ("MIRRORHOST_ALLOW_LOCAL_REMOTES", "true"),
        ("MIRRORHOST_HOUSEKEEPING_PACK_LIMIT", "3"),
    ]);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = api
        .create("pull", json!({"project_id": PROJECT, "url": up.url()}))
        .await;
    let path = "/api/v1/projects/acme%2Ftidy/housekeeping";
    let (status, body) = api.post(path, json!({})).await;
    assert_eq!(status, 409, "no repository before the first run: {body}");

    let local = project_repo(&server, PROJECT);
    let mut most = 0;
    for n in 0..12 {
        up.commit("main", &format!("f{n}"));
        up.push(&["main"]);
        assert_eq!(api.sync(id).await["status"], "succeeded");
        most = most.max(packs(&local));
    }
    assert!(most <= 3, "a run left {most} packs with a limit of 3");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);

    // A force-push orphans a commit; housekeeping keeps it for the grace
    // period (14 days by default) in a cruft pack.
    let orphan = git(&up.work(), &["rev-parse", "HEAD"]).trim().to_string();
    git(&up.work(), &["reset", "-q", "--hard", "HEAD~2"]);
    up.commit("main", "again");
    up.push(&["-f", "main"]);
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let (status, pass) = api.post(path, json!({})).await;
    assert_eq!(status, 200, "{pass}");
    assert_eq!(pass["packs_after"], 1, "{pass}");
    assert!(pass["bytes_after"].as_u64().unwrap() > 0, "{pass}");
    assert_eq!(packs(&local), 1);
    git(&local, &["cat-file", "-e", &orphan]);
    fsck(&local);

    // The repository serves the next run as before.
    up.commit("main", "after");
    up.push(&["main"]);
    assert_eq!(api.sync(id).await["status"], "succeeded");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);

    let (status, body) = api
        .post("/api/v1/projects/no%2Fsuch/housekeeping", json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
}
