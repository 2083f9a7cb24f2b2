//! GitHub and GitLab push webhooks as triggers, with payloads in their formats,
//! signed the way they sign them.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::http_git::HttpGit;
use crate::support::{Api, Server, Upstream, bare_repo, client, git, local_server, refs_of};

pub(crate) const SECRET: &str = "hook-secret-Vb7q";

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A push event as GitHub sends it (the fields mirrorhost reads, and their neighbours).
pub(crate) fn github_push(clone_url: &str, after: &str) -> Value {
    let html_url = clone_url.trim_end_matches(".git");
    json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": false, "deleted": false, "forced": false,
        "repository": {
            "id": 1296269, "name": "upstream", "full_name": "acme/upstream", "private": false,
            "html_url": html_url, "url": html_url, "clone_url": clone_url,
            "git_url": clone_url.replacen("http://", "git://", 1),
            "ssh_url": "git@example.invalid:acme/upstream.git",
            "default_branch": "main"
        },
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 1},
        "commits": [], "head_commit": null
    })
}

fn gitlab_push(http_url: &str, event_ref: &str, after: &str) -> Value {
    json!({
        "object_kind": if event_ref.starts_with("refs/tags/") { "tag_push" } else { "push" },
        "ref": event_ref, "before": "0000000000000000000000000000000000000000", "after": after,
        "user_name": "Administrator", "project_id": 15,
        "project": {
            "id": 15, "name": "upstream", "path_with_namespace": "acme/upstream",
            "web_url": http_url.trim_end_matches(".git"),
            "git_http_url": http_url, "git_ssh_url": "git@example.invalid:acme/upstream.git",
            "default_branch": "main"
        },
        "repository": {"name": "upstream", "url": http_url, "git_http_url": http_url},
        "commits": [], "total_commits_count": 0
    })
}

async fn deliver(
    server: &Server,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client()
        .post(server.url(path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn github(
    server: &Server,
    event: &str,
    delivery: &str,
    body: &Value,
    secret: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let headers = [
        ("x-github-event", event.to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("x-hub-signature-256", sign(&body, secret)),
    ];
    deliver(server, "/hooks/github", &headers, body).await
}

async fn run_count(api: &Api<'_>, mirror: i64) -> usize {
    api.get(&format!("/api/v1/mirrors/{mirror}/runs")).await.1["runs"]
        .as_array()
        .unwrap()
        .len()
}

/// Waits until the refs of `dest` satisfy `holds`.
async fn wait_for_refs(
    dest: &std::path::Path,
    what: &str,
    holds: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !holds(&refs_of(dest)) {
        assert!(
            Instant::now() < deadline,
            "{} never had {what}",
            dest.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_tip(dest: &std::path::Path, oid: &str) {
    wait_for_refs(dest, oid, |refs| {
        refs.get("refs/heads/main").map(String::as_str) == Some(oid)
    })
    .await;
}

/// An upstream served over smart HTTP; a service with a pull mirror of it and a
/// push mirror into a local bare repository; the project's webhook secret set.
struct Hooked {
    up: Upstream,
    clone_url: String,
    server: Server,
    pull: i64,
    dest: std::path::PathBuf,
    _http: HttpGit,
    _dests: tempfile::TempDir,
}

async fn hooked(project: &str) -> Hooked {
    let up = Upstream::with_main();
    let http = HttpGit::start(up.dir.path()).await;
    let clone_url = http.url("upstream.git");
    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create("pull", json!({"project_id": project, "url": clone_url}))
        .await;
    let dests = tempfile::tempdir().unwrap();
    let dest = bare_repo(dests.path(), "dest.git");
    let dest_url = format!("file://{}", dest.display());
    api.create("push", json!({"project_id": project, "url": dest_url}))
        .await;
    put_secret(&api, &project.replace('/', "%2F")).await;
    drop(api);
    Hooked {
        up,
        clone_url,
        server,
        pull,
        dest,
        _http: http,
        _dests: dests,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_and_gitlab_pushes_reach_every_push_mirror() {
    let fixture = hooked("hooks/p").await;
    let Hooked {
        up,
        clone_url,
        server,
        pull,
        dest,
        ..
    } = &fixture;
    let pull = *pull;
    let api = Api::new(server);

    // A signed push: the new commit reaches the push mirror through the cascade.
    let tip = up.commit("main", "b");
    up.push(&["main"]);
    let payload = github_push(clone_url, &tip);
    let (status, queued) = github(server, "push", "delivery-1", &payload, SECRET).await;
    assert_eq!(status, 202, "{queued}");
    wait_for_tip(dest, &tip).await;
    let runs = run_count(&api, pull).await;

    // Nothing else acts: a replay, a wrong secret, no signature, an unknown repo.
    let (status, replay) = github(server, "push", "delivery-1", &payload, SECRET).await;
    assert_eq!((status, &replay["duplicate"]), (200, &json!(true)));
    let (status, _) = github(server, "push", "delivery-2", &payload, "wrong-secret").await;
    assert_eq!(status, 401);
    let body = serde_json::to_vec(&payload).unwrap();
    let unsigned = [
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", "delivery-3".to_string()),
    ];
    assert_eq!(
        deliver(server, "/hooks/github", &unsigned, body.clone())
            .await
            .0,
        401
    );
    // An empty delivery id is no id: refused by name before anything else.
    let anonymous = [
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", String::new()),
        ("x-hub-signature-256", sign(&body, SECRET)),
    ];
    let (status, refused) = deliver(server, "/hooks/github", &anonymous, body).await;
    assert_eq!(
        (status, &refused["error"]["field"]),
        (422, &json!("x-github-delivery")),
        "{refused}"
    );
    let elsewhere = github_push("https://github.com/someone/else.git", &tip);
    assert_eq!(
        github(server, "push", "delivery-4", &elsewhere, SECRET)
            .await
            .0,
        404
    );
    let garbage = b"{not json".to_vec();
    let headers = [
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", "delivery-5".to_string()),
        ("x-hub-signature-256", sign(&garbage, SECRET)),
    ];
    assert_eq!(
        deliver(server, "/hooks/github", &headers, garbage).await.0,
        400
    );
    let huge = vec![b' '; 26 << 20];
    let headers = [
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", "delivery-6".to_string()),
        ("x-hub-signature-256", sign(&huge, SECRET)),
    ];
    assert_eq!(
        deliver(server, "/hooks/github", &headers, huge).await.0,
        413
    );
    let (status, pong) = github(
        server,
        "ping",
        "delivery-7",
        &github_push(clone_url, &tip),
        SECRET,
    )
    .await;
    assert_eq!((status, &pong["pong"]), (200, &json!(true)));
    assert_eq!(
        run_count(&api, pull).await,
        runs,
        "none of those queued a run"
    );

    // GitLab: a push hook and a tag push hook with the token; a wrong token.
    let tip = up.commit("main", "c");
    git(&up.work(), &["tag", "v2", "main"]);
    up.push(&["main", "v2"]);
    let gitlab = |event: &str, uuid: &str, token: &str, body: &Value| {
        let headers = vec![
            ("x-gitlab-event", event.to_string()),
            ("x-gitlab-event-uuid", uuid.to_string()),
            ("x-gitlab-token", token.to_string()),
        ];
        (headers, serde_json::to_vec(body).unwrap())
    };
    let (headers, body) = gitlab(
        "Push Hook",
        "uuid-1",
        "wrong-token",
        &gitlab_push(clone_url, "refs/heads/main", &tip),
    );
    assert_eq!(
        deliver(server, "/hooks/gitlab", &headers, body).await.0,
        401
    );
    let (headers, body) = gitlab(
        "Tag Push Hook",
        "uuid-2",
        SECRET,
        &gitlab_push(clone_url, "refs/tags/v2", &tip),
    );
    let (status, queued) = deliver(server, "/hooks/gitlab", &headers, body).await;
    assert_eq!(status, 202, "{queued}");
    wait_for_tip(dest, &tip).await;
    wait_for_refs(dest, "the tag", |refs| refs.contains_key("refs/tags/v2")).await;

    // Every delivery above is counted by what became of it.
    let (scrape, _) = crate::support::scrape(server).await;
    let count = |provider: &str, result: &str| {
        crate::support::sample(
            &scrape,
            "mirrorhost_webhook_deliveries_total",
            &[("provider", provider), ("result", result)],
        )
    };
    let github_results = [
        ("queued", 1.0),
        ("duplicate", 1.0),
        ("unauthorized", 2.0),
        ("not_found", 1.0),
        ("ping", 1.0),
    ];
    for (result, expected) in github_results {
        assert_eq!(count("github", result), expected, "github {result}");
    }
    assert_eq!(count("gitlab", "queued"), 1.0);
    assert_eq!(count("gitlab", "unauthorized"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deliveries_give_at_most_two_runs() {
    let up = Upstream::with_main();
    // Every answer of this upstream is 300 ms late, so a run takes over a second
    // and the whole burst lands while the first one is still going.
    let http = HttpGit::start_slow(up.dir.path(), Duration::from_millis(300)).await;
    let clone_url = http.url("upstream.git");
    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create(
            "pull",
            json!({"project_id": "hooks/burst", "url": clone_url}),
        )
        .await;
    assert_eq!(api.sync(pull).await["status"], "succeeded");
    let runs_before = run_count(&api, pull).await;
    put_secret(&api, "hooks%2Fburst").await;
    for i in 0..3 {
        up.commit("main", &format!("burst-{i}"));
    }
    let tip = git(&up.work(), &["rev-parse", "HEAD"]).trim().to_string();
    up.push(&["main"]);

    // Fifty deliveries at once, each its own task and connection.
    let body = serde_json::to_vec(&github_push(&clone_url, &tip)).unwrap();
    let signature = sign(&body, SECRET);
    let url = server.url("/hooks/github");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (url, body, signature) = (url.clone(), body.clone(), signature.clone());
            tokio::spawn(async move {
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("burst-{i}"))
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 202);
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{pull}/runs")).await;
        let runs = runs["runs"].as_array().unwrap().clone();
        let new = &runs[..runs.len() - runs_before];
        if !new.is_empty() && new.iter().all(|r| r["status"] == "succeeded") {
            assert!(new.len() <= 2, "50 deliveries made {} runs", new.len());
            break;
        }
        assert!(Instant::now() < deadline, "runs never finished: {runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let local = refs_of(&crate::support::project_repo(&server, "hooks/burst"));
    assert_eq!(
        local.get("refs/heads/main"),
        refs_of(&up.bare()).get("refs/heads/main")
    );
}

async fn put_secret(api: &Api<'_>, project: &str) {
    let path = format!("/api/v1/projects/{project}/webhook");
    let (status, set) = api.put(&path, json!({"secret": SECRET})).await;
    assert_eq!(status, 200, "{set}");
    assert!(
        !set.to_string().contains(SECRET),
        "the secret is never shown"
    );
}

/// GitHub's push event for a branch created (`before` all zeros, `created`) or
/// deleted (`after` all zeros, `deleted`).
fn github_branch_event(clone_url: &str, branch: &str, tip: &str, created: bool) -> Value {
    let zeros = "0000000000000000000000000000000000000000";
    let mut event = github_push(clone_url, tip);
    event["ref"] = json!(format!("refs/heads/{branch}"));
    event["before"] = json!(if created { zeros } else { tip });
    event["after"] = json!(if created { tip } else { zeros });
    event["created"] = json!(created);
    event["deleted"] = json!(!created);
    event["head_commit"] = if created {
        json!({"id": tip})
    } else {
        Value::Null
    };
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_create_and_delete_events_reach_the_push_mirrors() {
    let fixture = hooked("hooks/branches").await;
    let Hooked {
        up,
        clone_url,
        server,
        pull,
        dest,
        ..
    } = &fixture;
    assert_eq!(Api::new(server).sync(*pull).await["status"], "succeeded");
    let has_feature =
        |refs: &std::collections::BTreeMap<String, String>| refs.contains_key("refs/heads/feature");

    let tip = up.commit("feature", "f");
    up.push(&["feature"]);
    let created = github_branch_event(clone_url, "feature", &tip, true);
    let (status, _) = github(server, "push", "create-1", &created, SECRET).await;
    assert_eq!(status, 202);
    wait_for_refs(dest, "the new branch", has_feature).await;
    assert_eq!(refs_of(dest)["refs/heads/feature"], tip);

    git(&up.work(), &["push", "-q", "origin", "--delete", "feature"]);
    let deleted = github_branch_event(clone_url, "feature", &tip, false);
    let (status, _) = github(server, "push", "delete-1", &deleted, SECRET).await;
    assert_eq!(status, 202);
    wait_for_refs(dest, "the branch deleted", |refs| !has_feature(refs)).await;
    assert!(refs_of(dest).contains_key("refs/heads/main"), "main stays");
}

/// A delivery for a push the mirror already holds queues nothing: a flood of
/// deliveries for one push costs one run, whenever they arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_mirror_already_holds_queues_nothing() {
    let h = hooked("hooks/held").await;
    let api = Api::new(&h.server);
    assert_eq!(api.sync(h.pull).await["status"], "succeeded");
    let runs = run_count(&api, h.pull).await;
    let held = git(&h.up.bare(), &["rev-parse", "refs/heads/main"]);

    let body = github_push(&h.clone_url, &held);
    let (status, answer) = github(&h.server, "push", "held-1", &body, SECRET).await;
    assert_eq!((status, &answer), (200, &json!({"up_to_date": true})));
    assert_eq!(run_count(&api, h.pull).await, runs, "nothing queued");

    // A new push is queued; once it landed, its later deliveries are not.
    let tip = h.up.commit("main", "new");
    h.up.push(&["main"]);
    let body = github_push(&h.clone_url, &tip);
    let (status, answer) = github(&h.server, "push", "new-1", &body, SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let local = crate::support::project_repo(&h.server, "hooks/held");
    wait_for_tip(&local, &tip).await;
    // The cascade to the push mirror may still be running; let the pull's
    // record land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_one = run_count(&api, h.pull).await;
    for i in 0..20 {
        let (status, answer) =
            github(&h.server, "push", &format!("new-again-{i}"), &body, SECRET).await;
        assert_eq!((status, &answer), (200, &json!({"up_to_date": true})));
    }
    // A GitLab delivery of a deletion the mirror already reflects, likewise.
    let gone = gitlab_push(&h.clone_url, "refs/heads/gone", &"0".repeat(40));
    let body = serde_json::to_vec(&gone).unwrap();
    let headers = [
        ("x-gitlab-event", "Push Hook".to_string()),
        ("x-gitlab-event-uuid", "gone-1".to_string()),
        ("x-gitlab-token", SECRET.to_string()),
    ];
    let (status, answer) = deliver(&h.server, "/hooks/gitlab", &headers, body).await;
    assert_eq!((status, &answer), (200, &json!({"up_to_date": true})));
    assert_eq!(run_count(&api, h.pull).await, after_one);
}

/// A lone push runs at once; the next push's run waits until the spacing
/// since the previous run's start has passed (a flood costs a run per
/// spacing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_runs_of_one_mirror_are_spaced() {
    let up = Upstream::with_main();
    let http = HttpGit::start(up.dir.path()).await;
    let clone_url = http.url("upstream.git");
    let mut envs = crate::support::LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_WEBHOOK_SPACING_MS", "1500"));
    let server = Server::start(&envs);
    let api = Api::new(&server);
    let pull = api
        .create(
            "pull",
            json!({"project_id": "hooks/spaced", "url": clone_url}),
        )
        .await;
    put_secret(&api, "hooks%2Fspaced").await;
    let local = crate::support::project_repo(&server, "hooks/spaced");

    let started = |run: &Value| chrono_ms(run["started_at"].as_str().unwrap());
    let mut starts = Vec::new();
    for i in 0..2 {
        let tip = up.commit("main", &format!("spaced-{i}"));
        up.push(&["main"]);
        let delivered = Instant::now();
        let body = github_push(&clone_url, &tip);
        let (status, answer) = github(&server, "push", &format!("spaced-{i}"), &body, SECRET).await;
        assert_eq!(status, 202, "{answer}");
        // The first run creates the mirror's repository.
        while !local.join("HEAD").exists() {
            assert!(
                delivered.elapsed() < Duration::from_secs(30),
                "no repository"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_for_tip(&local, &tip).await;
        if i == 0 {
            assert!(
                delivered.elapsed() < Duration::from_secs(5),
                "a lone push waits for nothing"
            );
        }
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{pull}/runs")).await;
        starts.push(started(&runs["runs"][0]));
    }
    assert!(
        starts[1] - starts[0] >= 1500,
        "runs {} ms apart",
        starts[1] - starts[0]
    );
}

/// Milliseconds of an RFC 3339 UTC time as the API writes it
/// (`2026-12-02T13:14:44.730Z`), within one day.
fn chrono_ms(at: &str) -> i64 {
    let time = at.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: i64 = parts.next().unwrap().parse().unwrap();
    let m: i64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    (h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as i64
}

/// A hard-failed mirror waits for a manual sync or a settings change: a
/// webhook does not run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_failed_mirror_is_not_run_by_a_webhook() {
    let mut envs = crate::support::LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_MAX_FAILURES", "1"));
    let server = Server::start(&envs);
    let api = Api::new(&server);
    // Nothing listens on port 1: every run fails at once.
    let url = "http://127.0.0.1:1/acme/broken.git";
    let pull = api
        .create("pull", json!({"project_id": "hooks/broken", "url": url}))
        .await;
    put_secret(&api, "hooks%2Fbroken").await;
    assert_eq!(api.sync(pull).await["status"], "failed");
    let (_, health) = api.get(&format!("/api/v1/mirrors/{pull}/health")).await;
    assert_eq!(health["state"], "hard_failed", "{health}");
    let runs = run_count(&api, pull).await;

    let body = github_push(url, &"1".repeat(40));
    let (status, answer) = github(&server, "push", "broken-1", &body, SECRET).await;
    assert_eq!((status, &answer), (202, &json!({"queued": []})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run_count(&api, pull).await, runs, "nothing ran");
}
