//! Git LFS: a pull mirror fetches the LFS objects of the commits it brings,
//! keeps them where a clone of the mirror finds them, and a push mirror
//! uploads them to the destination's own LFS server. Against giftless and
//! the real `git lfs` client, and against a hostile LFS server for the
//! answers a real one rarely gives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::git::command;
use crate::http_git::{BasicAuth, HttpGit};
use crate::lfs_server::Giftless;
use crate::support::{
    Api, LOCAL_REMOTES, Server, Upstream, fsck, git, local_server, project_repo, refs_of,
};

/// git with git-lfs's filters on, as `git lfs install` would set them
/// globally (the tests' git reads no global configuration).
fn git_lfs(dir: &Path, args: &[&str]) -> String {
    let out = command(dir)
        .args([
            "-c",
            "filter.lfs.process=git-lfs filter-process",
            "-c",
            "filter.lfs.smudge=git-lfs smudge -- %f",
            "-c",
            "filter.lfs.clean=git-lfs clean -- %f",
            "-c",
            "filter.lfs.required=true",
            "-c",
            "lfs.locksverify=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A git-lfs clone of `source` (made in `dir`) holds each file's content.
fn clone_holds(dir: &Path, source: &str, files: &[(&str, &[u8])]) {
    let clone = tempfile::tempdir_in(dir).unwrap();
    let into = clone.path().join("clone");
    git_lfs(dir, &["clone", "-q", source, into.to_str().unwrap()]);
    for (name, content) in files {
        assert_eq!(
            &std::fs::read(into.join(name)).unwrap(),
            content,
            "{name} from {source}"
        );
    }
}

/// `size` bytes that no two calls share.
fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn pointer_text(content: &[u8]) -> String {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        sha256_hex(content),
        content.len()
    )
}

/// Where git-lfs keeps an object of a bare repository.
fn kept_object(repo: &Path, content: &[u8]) -> PathBuf {
    let oid = sha256_hex(content);
    repo.join("lfs/objects")
        .join(&oid[..2])
        .join(&oid[2..4])
        .join(oid)
}

/// The repository keeps `content` as an LFS object, whole.
fn assert_kept(repo: &Path, content: &[u8]) {
    let kept = std::fs::read(kept_object(repo, content)).unwrap();
    assert!(
        kept == content,
        "the kept object of sha256 {} differs",
        sha256_hex(content)
    );
}

/// A manual sync of `mirror`, waited for: it succeeded, moving `objects`
/// LFS objects.
async fn synced(api: &Api<'_>, mirror: i64, objects: i64) {
    let run = api.sync(mirror).await;
    assert_eq!(
        (run["status"].as_str(), run["lfs_objects"].as_i64()),
        (Some("succeeded"), Some(objects)),
        "{run}"
    );
}

/// Turns LFS on for `mirror`.
async fn turn_lfs_on(api: &Api<'_>, mirror: i64) {
    let path = format!("/api/v1/mirrors/{mirror}");
    let (status, answer) = api
        .call(reqwest::Method::PATCH, &path, Some(json!({"lfs": true})))
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// A work tree whose `*.bin` files go to LFS, pushing to `url`.
fn lfs_work_tree(dir: &Path, url: &str) -> PathBuf {
    let work = dir.join("work");
    git(dir, &["init", "-q", "-b", "main", "work"]);
    git(&work, &["remote", "add", "origin", url]);
    git_lfs(&work, &["lfs", "install", "--local"]);
    git_lfs(&work, &["lfs", "track", "*.bin"]);
    work
}

fn add_and_push(work: &Path, files: &[(&str, &[u8])], message: &str) {
    for (name, content) in files {
        std::fs::write(work.join(name), content).unwrap();
    }
    git_lfs(work, &["add", "."]);
    git_lfs(work, &["commit", "-q", "-m", message]);
    git_lfs(work, &["push", "-q", "origin", "main"]);
}

/// Two forges, each `git http-backend` with giftless behind
/// `<repo>.git/info/lfs`, each holding an empty `org/repo.git`: an upstream
/// and a push destination. `None` where giftless or git-lfs is missing.
struct Forges {
    roots: tempfile::TempDir,
    upstream: HttpGit,
    upstream_lfs: Giftless,
    destination: HttpGit,
    destination_lfs: Giftless,
}

impl Forges {
    async fn start() -> Option<Self> {
        let (upstream_lfs, destination_lfs) = (Giftless::start()?, Giftless::start()?);
        let roots = tempfile::tempdir().unwrap();
        let (up_root, down_root) = (roots.path().join("up"), roots.path().join("down"));
        for root in [&up_root, &down_root] {
            std::fs::create_dir_all(root.join("org")).unwrap();
            git(
                &root.join("org"),
                &["init", "-q", "--bare", "-b", "main", "repo.git"],
            );
        }
        Some(Self {
            upstream: HttpGit::start_with_lfs(&up_root, None, upstream_lfs.addr).await,
            destination: HttpGit::start_with_lfs(&down_root, None, destination_lfs.addr).await,
            roots,
            upstream_lfs,
            destination_lfs,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lfs_objects_travel_from_upstream_through_the_mirror_to_a_destination() {
    let Some(Forges {
        roots,
        upstream,
        upstream_lfs,
        destination,
        destination_lfs: _destination_lfs,
    }) = Forges::start().await
    else {
        return;
    };
    let work = lfs_work_tree(roots.path(), &upstream.url("org/repo.git"));
    let (one, two) = (random_bytes(300_000, 1), random_bytes(123_457, 2));
    add_and_push(
        &work,
        &[("one.bin", &one), ("two.bin", &two), ("readme", b"hi\n")],
        "two",
    );
    let stored = std::fs::read_dir(&upstream_lfs.storage).unwrap().count();
    assert!(stored > 0, "git lfs push stored nothing upstream");

    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create(
            "pull",
            json!({"project_id": "org/repo", "url": upstream.url("org/repo.git")}),
        )
        .await;
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_objects"], 2, "{run}");
    assert_eq!(run["lfs_bytes"], one.len() + two.len(), "{run}");
    // The per-ref results count them too.
    let (_, refs) = api
        .get(&format!("/api/v1/runs/{}/refs", run["run_id"]))
        .await;
    let main = &refs["refs"][0];
    assert_eq!(main["ref_name"], "refs/heads/main", "{refs}");
    assert_eq!(
        (main["lfs_objects"].as_i64(), main["lfs_bytes"].as_u64()),
        (Some(2), Some((one.len() + two.len()) as u64)),
        "{refs}"
    );
    let mirror = project_repo(&server, "org/repo");
    for content in [&one, &two] {
        assert_kept(&mirror, content);
    }
    fsck(&mirror);

    // The mirror serves them: a clone of it by path gets every file's content.
    let files: &[(&str, &[u8])] = &[("one.bin", &one), ("two.bin", &two)];
    clone_holds(roots.path(), mirror.to_str().unwrap(), files);

    // A sync that brings nothing does no LFS work.
    let asked = upstream.lfs_requests();
    synced(&api, pull, 0).await;
    assert_eq!(
        upstream.lfs_requests(),
        asked,
        "a no-op sync asked the LFS server"
    );

    // A push mirror uploads them to the destination's own LFS server.
    let push = api
        .create(
            "push",
            json!({"project_id": "org/repo", "url": destination.url("org/repo.git")}),
        )
        .await;
    let run = api.sync(push).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_objects"], 2, "{run}");
    clone_holds(roots.path(), &destination.url("org/repo.git"), files);

    // A destination on this machine gets them in its own lfs/objects, where
    // git-lfs reads a local remote's.
    let local = roots.path().join("local-destination.git");
    git(
        roots.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            "local-destination.git",
        ],
    );
    let to_local = api
        .create(
            "push",
            json!({"project_id": "org/repo", "url": format!("file://{}", local.display())}),
        )
        .await;
    synced(&api, to_local, 2).await;
    clone_holds(roots.path(), local.to_str().unwrap(), files);

    // An incremental pull looks only at what its fetch brought.
    let three = random_bytes(50_000, 3);
    add_and_push(&work, &[("three.bin", &three)], "three");
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_objects"], 1, "{run}");
    assert_eq!(run["lfs_bytes"], three.len(), "{run}");
    assert!(kept_object(&mirror, &three).exists());
    // Health counts what all the mirror's runs moved.
    let (_, health) = api.get(&format!("/api/v1/mirrors/{pull}/health")).await;
    assert_eq!(health["lfs_objects"], 3, "{health}");
    assert_eq!(
        health["lfs_bytes"],
        one.len() + two.len() + three.len(),
        "{health}"
    );
}

/// What the hostile server does with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Serve,
    /// Answers the batch with a 404 error for the object.
    Missing,
    /// Serves a byte short of the object.
    Short,
    /// Serves the right size with other content.
    Corrupt,
    /// Gives an href that expired an hour ago on the first batch.
    ExpiredOnce,
    /// Sends the first kilobyte, then nothing, never ending.
    Stall,
    /// Answers the batch with 64 MiB of JSON whitespace.
    Flood,
}

#[derive(Default)]
struct Hostile {
    objects: Mutex<HashMap<String, (Vec<u8>, Behaviour)>>,
    batches: AtomicUsize,
    /// Batch requests still to be answered 429 with `Retry-After: 1`.
    busy: AtomicUsize,
    expired_given: Mutex<Vec<String>>,
    /// The Authorization header of each batch request.
    authorizations: Mutex<Vec<String>>,
    addr: Mutex<Option<SocketAddr>>,
    /// Downloads begun.
    downloads: AtomicUsize,
}

impl Hostile {
    async fn start() -> Arc<Self> {
        let state = Arc::new(Self::default());
        let app = axum::Router::new()
            .route("/lfs/objects/batch", axum::routing::post(batch))
            .route("/lfs/download/{oid}", axum::routing::get(download))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *state.addr.lock().unwrap() = Some(listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        state
    }

    fn url(&self) -> String {
        format!("http://{}/lfs", self.addr.lock().unwrap().unwrap())
    }

    fn hold(&self, content: &[u8], behaviour: Behaviour) {
        self.objects
            .lock()
            .unwrap()
            .insert(sha256_hex(content), (content.to_vec(), behaviour));
    }
}

async fn batch(
    State(hostile): State<Arc<Hostile>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    hostile.batches.fetch_add(1, Ordering::SeqCst);
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    hostile
        .authorizations
        .lock()
        .unwrap()
        .push(authorization.unwrap_or_default().to_string());
    let busy = hostile
        .busy
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if busy {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let objects = hostile.objects.lock().unwrap();
    if objects.values().any(|(_, b)| *b == Behaviour::Flood) {
        let flood = format!("{{\"objects\": []{}}}", " ".repeat(64 << 20));
        return ([("content-type", "application/vnd.git-lfs+json")], flood).into_response();
    }
    let base = hostile.url();
    let answers: Vec<Value> = request["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap().to_string();
            let href = json!({"href": format!("{base}/download/{oid}")});
            match objects.get(&oid).map(|(_, b)| *b) {
                None | Some(Behaviour::Missing) => {
                    json!({"oid": oid, "size": o["size"], "error": {"code": 404, "message": "Object does not exist"}})
                }
                Some(Behaviour::ExpiredOnce) if !hostile.expired_given.lock().unwrap().contains(&oid) => {
                    hostile.expired_given.lock().unwrap().push(oid.clone());
                    let expired = json!({"href": format!("{base}/download/expired"), "expires_at": "2020-01-01T00:00:00Z"});
                    json!({"oid": oid, "size": o["size"], "actions": {"download": expired}})
                }
                Some(_) => json!({"oid": oid, "size": o["size"], "actions": {"download": href}}),
            }
        })
        .collect();
    let body = json!({"transfer": "basic", "objects": answers}).to_string();
    ([("content-type", "application/vnd.git-lfs+json")], body).into_response()
}

async fn download(
    State(hostile): State<Arc<Hostile>>,
    UrlPath(oid): UrlPath<String>,
    _headers: HeaderMap,
) -> Response {
    hostile.downloads.fetch_add(1, Ordering::SeqCst);
    let objects = hostile.objects.lock().unwrap();
    match objects.get(&oid) {
        Some((content, Behaviour::Stall)) => {
            let first = axum::body::Bytes::copy_from_slice(&content[..1024]);
            axum::body::Body::from_stream(Stalling(Some(first))).into_response()
        }
        Some((content, Behaviour::Short)) => content[..content.len() - 1].to_vec().into_response(),
        Some((content, Behaviour::Corrupt)) => {
            let mut other = content.clone();
            other[0] ^= 0xff;
            other.into_response()
        }
        Some((content, _)) => content.clone().into_response(),
        None => StatusCode::GONE.into_response(),
    }
}

/// A body that sends its first chunk and then waits forever.
struct Stalling(Option<axum::body::Bytes>);

impl futures_core::Stream for Stalling {
    type Item = Result<axum::body::Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.0.take() {
            Some(first) => std::task::Poll::Ready(Some(Ok(first))),
            None => std::task::Poll::Pending,
        }
    }
}

/// An upstream (file://) whose `.lfsconfig` sends LFS to the hostile server,
/// with one pointer file per content.
fn upstream_pointing_at(hostile: &Hostile, contents: &[&[u8]]) -> Upstream {
    let up = Upstream::new();
    add_pointers(&up, hostile, contents);
    up
}

/// Commits and pushes to `up`'s main an `.lfsconfig` sending LFS to the
/// hostile server and one pointer file per content.
fn add_pointers(up: &Upstream, hostile: &Hostile, contents: &[&[u8]]) {
    let work = up.work();
    std::fs::write(
        work.join(".lfsconfig"),
        format!("[lfs]\n\turl = {}\n", hostile.url()),
    )
    .unwrap();
    for (i, content) in contents.iter().enumerate() {
        std::fs::write(work.join(format!("f{i}.bin")), pointer_text(content)).unwrap();
    }
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "pointers"]);
    up.push(&["main"]);
}

/// A history without LFS is not looked at for pointers
/// (`sync::no_lfs_pointers`): its first pull records that none came; the
/// pull that brings the first pointer removes the record and brings the
/// object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_pointer_after_a_history_without_lfs_brings_its_object() {
    let hostile = Hostile::start().await;
    let server = local_server();
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let mirror = api
        .create("pull", json!({"project_id": "org/late", "url": up.url()}))
        .await;
    synced(&api, mirror, 0).await;
    let repo = project_repo(&server, "org/late");
    let record = repo.join("mirrorhost-no-lfs-pointers");
    assert!(record.exists(), "no pointer came");

    let content = random_bytes(30_000, 31);
    hostile.hold(&content, Behaviour::Serve);
    add_pointers(&up, &hostile, &[&content]);
    synced(&api, mirror, 1).await;
    assert_kept(&repo, &content);
    assert!(!record.exists(), "a pointer came");
    assert_eq!(refs_of(&repo), refs_of(&up.bare()));
}

/// A hostile server holding one object of `size` random bytes that it
/// treats as `behaviour`, and an upstream pointing at it.
async fn one_object(
    behaviour: Behaviour,
    size: usize,
    seed: u64,
) -> (Arc<Hostile>, Vec<u8>, Upstream) {
    let hostile = Hostile::start().await;
    let content = random_bytes(size, seed);
    hostile.hold(&content, behaviour);
    let up = upstream_pointing_at(&hostile, &[&content]);
    (hostile, content, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_server_cannot_give_fails_the_run_by_name_or_is_skipped() {
    let hostile = Hostile::start().await;
    let good = random_bytes(10_000, 10);
    let server = local_server();
    let api = Api::new(&server);
    for (i, behaviour) in [Behaviour::Missing, Behaviour::Short, Behaviour::Corrupt]
        .into_iter()
        .enumerate()
    {
        let bad = random_bytes(20_000, 20 + i as u64);
        hostile.hold(&good, Behaviour::Serve);
        hostile.hold(&bad, behaviour);
        let up = upstream_pointing_at(&hostile, &[&good, &bad]);
        let project = format!("org/bad{i}");
        let mirror = api
            .create("pull", json!({"project_id": project, "url": up.url()}))
            .await;
        let run = api.sync(mirror).await;
        assert_eq!(run["status"], "failed", "{behaviour:?}: {run}");
        let error = run["error"].as_str().unwrap();
        assert!(error.contains(&sha256_hex(&bad)), "{behaviour:?}: {error}");
        let repo = project_repo(&server, &project);
        assert!(
            refs_of(&repo).is_empty(),
            "{behaviour:?}: refs landed without their LFS objects"
        );
        assert!(!kept_object(&repo, &bad).exists());

        // With `lfs_missing: skip` the object is named in the run and left out.
        let (status, _) = api
            .call(
                reqwest::Method::PATCH,
                &format!("/api/v1/mirrors/{mirror}"),
                Some(json!({"lfs_missing": "skip"})),
            )
            .await;
        assert_eq!(status, 200);
        let run = api.sync(mirror).await;
        assert_eq!(run["status"], "succeeded", "{behaviour:?}: {run}");
        let skipped = run["lfs_skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 1, "{run}");
        assert!(skipped[0].as_str().unwrap().contains(&sha256_hex(&bad)));
        assert_eq!(refs_of(&repo).len(), 1);
        assert_kept(&repo, &good);
        assert!(!kept_object(&repo, &bad).exists());
        assert!(
            std::fs::read_dir(repo.join("lfs/tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_href_is_asked_for_again_and_429_is_waited_out() {
    let hostile = Hostile::start().await;
    let (expiring, plain) = (random_bytes(5_000, 30), random_bytes(6_000, 31));
    hostile.hold(&expiring, Behaviour::ExpiredOnce);
    hostile.hold(&plain, Behaviour::Serve);
    hostile.busy.store(1, Ordering::SeqCst);
    let up = upstream_pointing_at(&hostile, &[&expiring, &plain]);
    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create(
            "pull",
            json!({"project_id": "org/patient", "url": up.url()}),
        )
        .await;
    let started = std::time::Instant::now();
    let run = api.sync(mirror).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_objects"], 2, "{run}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After was not waited for"
    );
    // The 429, the batch, and the batch asked again for the expired href.
    assert_eq!(hostile.batches.load(Ordering::SeqCst), 3);
    let repo = project_repo(&server, "org/patient");
    assert_kept(&repo, &expiring);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lfs_download_shows_progress_and_is_cancelled_within_two_seconds() {
    let (hostile, content, up) = one_object(Behaviour::Stall, 100_000, 50).await;
    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create(
            "pull",
            json!({"project_id": "org/stalled", "url": up.url()}),
        )
        .await;
    let run_id = api.queue(mirror).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let run = loop {
        let (_, run) = api.get(&format!("/api/v1/runs/{run_id}")).await;
        // The LFS phase reports its own objects: one to fetch, bytes moving.
        if hostile.downloads.load(Ordering::SeqCst) > 0 && run["progress"]["bytes"] == 1024 {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the download never began: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(run["progress"]["total_objects"], 1, "{run}");

    let asked = std::time::Instant::now();
    let (status, run) = api
        .post(&format!("/api/v1/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, run["status"].as_str()),
        (200, Some("cancelled")),
        "{run}"
    );
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let repo = project_repo(&server, "org/stalled");
    assert!(refs_of(&repo).is_empty(), "no ref changed");
    assert!(!kept_object(&repo, &content).exists());
    let left = std::fs::read_dir(repo.join("lfs/tmp")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a partial LFS object was left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lfs_downloads_keep_to_the_mirror_s_bandwidth_cap() {
    let (_hostile, content, up) = one_object(Behaviour::Serve, 400_000, 60).await;
    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create("pull", json!({"project_id": "org/capped", "url": up.url()}))
        .await;
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{mirror}/bandwidth"),
            json!({"max_bytes_per_second": 100_000}),
        )
        .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    let run = api.sync(mirror).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_bytes"], content.len(), "{run}");
    // 400 kB at 100 kB/s, a quarter second's burst free: at least 3.5 s.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(3500), "{took:?}");
}

/// The upstream's LFS server sits behind the same Basic auth as its git:
/// the mirror's stored password opens both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_s_credentials_open_its_upstream_s_lfs_server() {
    let Some(giftless) = Giftless::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("org")).unwrap();
    git(
        &root.path().join("org"),
        &["init", "-q", "--bare", "-b", "main", "repo.git"],
    );
    let auth = BasicAuth {
        username: None,
        password: "s3cret-lfs".into(),
    };
    let upstream = HttpGit::start_with_lfs(root.path(), Some(auth), giftless.addr).await;
    let with_login = upstream
        .url("org/repo.git")
        .replace("http://", "http://alice:s3cret-lfs@");
    let work = lfs_work_tree(root.path(), &with_login);
    let content = random_bytes(70_000, 70);
    add_and_push(&work, &[("data.bin", &content)], "data");

    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create(
            "pull",
            json!({"project_id": "org/locked", "url": upstream.url("org/repo.git"), "auth_method": "password"}),
        )
        .await;
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{mirror}/credentials"),
            json!({"type": "password", "username": "alice", "password": "s3cret-lfs"}),
        )
        .await;
    assert_eq!(status, 200);
    let run = api.sync(mirror).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_objects"], 1, "{run}");
    let repo = project_repo(&server, "org/locked");
    assert_kept(&repo, &content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lfs_download_ends_at_the_stall_limit_naming_it() {
    let (_hostile, content, up) = one_object(Behaviour::Stall, 100_000, 80).await;
    let mut envs = LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_STALL_TIMEOUT_SECONDS", "2"));
    let server = Server::start(&envs);
    let api = Api::new(&server);
    let mirror = api
        .create("pull", json!({"project_id": "org/stall", "url": up.url()}))
        .await;
    let started = std::time::Instant::now();
    let run = api.sync(mirror).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("sent nothing for 2 s (stall timeout"),
        "{error}"
    );
    assert!(error.contains(&sha256_hex(&content)), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(refs_of(&project_repo(&server, "org/stall")).is_empty());
}

/// A diverged tip kept by a manual conflict brings no LFS object (its ref
/// does not move); taking it through the API brings them with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_theirs_in_a_conflict_brings_their_lfs_objects() {
    let (hostile, first, up) = one_object(Behaviour::Serve, 3_000, 90).await;
    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create(
            "pull",
            json!({"project_id": "org/diverged", "url": up.url(), "conflict_strategy": "manual"}),
        )
        .await;
    assert_eq!(api.sync(mirror).await["lfs_objects"], 1);
    // Upstream rewrites main: a new commit with another object, force-pushed.
    let theirs = random_bytes(4_000, 91);
    hostile.hold(&theirs, Behaviour::Serve);
    std::fs::write(up.work().join("f0.bin"), pointer_text(&theirs)).unwrap();
    git(&up.work(), &["commit", "-q", "--amend", "-am", "rewritten"]);
    git(&up.work(), &["push", "-q", "--force", "origin", "main"]);
    synced(&api, mirror, 0).await;
    let repo = project_repo(&server, "org/diverged");
    assert!(
        !kept_object(&repo, &theirs).exists(),
        "a ref that stays needs no object"
    );

    let (_, conflicts) = api
        .get(&format!("/api/v1/mirrors/{mirror}/conflicts"))
        .await;
    let cid = conflicts["conflicts"][0]["conflict_id"].as_i64().unwrap();
    let path = format!("/api/v1/mirrors/{mirror}/conflicts/{cid}/resolve");
    let (status, resolved) = api.post(&path, json!({"strategy": "theirs"})).await;
    assert_eq!(status, 200, "{resolved}");
    assert_kept(&repo, &theirs);
    assert_kept(&repo, &first);
}

/// An SSH remote names its LFS server and a token for it through
/// `git-lfs-authenticate`, as GitHub and GitLab do: the mirror asks over its
/// own SSH connection (the host key confirmed, the mirror's key) and sends
/// the token with its batch requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_remote_names_its_lfs_server_through_git_lfs_authenticate() {
    let (hostile, content, up) = one_object(Behaviour::Serve, 8_000, 100).await;
    // The upstream's .lfsconfig would name the server; this one does not.
    git(&up.work(), &["rm", "-q", ".lfsconfig"]);
    git(&up.work(), &["commit", "-q", "-m", "no lfsconfig"]);
    up.push(&["main"]);
    let bin = tempfile::tempdir().unwrap();
    let script = bin.path().join("git-lfs-authenticate");
    let answer = json!({"href": hostile.url(), "header": {"Authorization": "RemoteAuth t0ken"}});
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$2\" = download ] || exit 1\necho '{answer}'\necho \"$1\" > {}/asked\n",
            bin.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key = crate::sshd::keygen(bin.path(), "client", "");
    let sshd = crate::sshd::Sshd::start_with_programs(&[&key], bin.path());

    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create(
            "pull",
            json!({"project_id": "org/over-ssh", "url": sshd.url(&up.bare()), "auth_method": "ssh_key"}),
        )
        .await;
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{mirror}/credentials"),
            json!({"type": "ssh_key", "private_key": key.private_key}),
        )
        .await;
    assert_eq!(status, 200);
    let keys = json!({"host_keys": [{"fingerprint": sshd.host_key_fingerprint}]});
    let (status, _) = api
        .put(&format!("/api/v1/mirrors/{mirror}/ssh-host-keys"), keys)
        .await;
    assert_eq!(status, 200);
    let run = api.sync(mirror).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["lfs_objects"], 1, "{run}");
    let repo = project_repo(&server, "org/over-ssh");
    assert_kept(&repo, &content);
    assert_eq!(
        hostile.authorizations.lock().unwrap().as_slice(),
        ["RemoteAuth t0ken"],
        "the token went with the batch request"
    );
    // git-lfs's path: the URL's, without its leading slash.
    let asked = std::fs::read_to_string(bin.path().join("asked")).unwrap();
    assert_eq!(
        asked.trim(),
        up.bare().display().to_string().trim_start_matches('/')
    );
}

/// A server that answers a batch with more than any batch answer needs is
/// refused once it passes the bound, not read into memory whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answer_past_its_bound_is_refused() {
    let (_hostile, _content, up) = one_object(Behaviour::Flood, 1_000, 110).await;
    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create("pull", json!({"project_id": "org/flood", "url": up.url()}))
        .await;
    let run = api.sync(mirror).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("answered with more than 8192 KiB"),
        "{error}"
    );
}

/// A mirror with LFS off asks no LFS server; one that landed commits so (or
/// before mirrorhost moved LFS objects) gets the objects its history needs
/// once LFS is on, even from a
/// sync that brings nothing; after that, no-op syncs ask nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_lfs_on_fetches_what_the_history_already_mirrored_needs() {
    let (hostile, content, up) = one_object(Behaviour::Serve, 2_000, 120).await;
    let server = local_server();
    let api = Api::new(&server);
    let mirror = api
        .create(
            "pull",
            json!({"project_id": "org/later", "url": up.url(), "lfs": false}),
        )
        .await;
    // With LFS off, no LFS server is asked and no object kept.
    synced(&api, mirror, 0).await;
    assert_eq!(hostile.batches.load(Ordering::SeqCst), 0);
    let repo = project_repo(&server, "org/later");
    assert!(!kept_object(&repo, &content).exists());
    turn_lfs_on(&api, mirror).await;
    synced(&api, mirror, 1).await;
    assert_kept(&repo, &content);
    let asked = hostile.batches.load(Ordering::SeqCst);
    assert_eq!(api.sync(mirror).await["lfs_objects"], 0);
    assert_eq!(
        hostile.batches.load(Ordering::SeqCst),
        asked,
        "a no-op sync asked again"
    );
}

/// A push mirror that pushed while LFS was off left its destination with
/// pointers only; once LFS is on, its next run uploads what the pushed
/// history needs, even with no commit to push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_lfs_on_uploads_what_a_push_mirror_pushed_before() {
    let Some(Forges {
        roots,
        upstream,
        upstream_lfs: _upstream_lfs,
        destination,
        destination_lfs,
    }) = Forges::start().await
    else {
        return;
    };
    let work = lfs_work_tree(roots.path(), &upstream.url("org/repo.git"));
    let content = random_bytes(90_000, 130);
    add_and_push(&work, &[("data.bin", &content)], "data");

    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create(
            "pull",
            json!({"project_id": "org/repo", "url": upstream.url("org/repo.git")}),
        )
        .await;
    assert_eq!(api.sync(pull).await["lfs_objects"], 1);
    let push = api
        .create(
            "push",
            json!({"project_id": "org/repo", "url": destination.url("org/repo.git"), "lfs": false}),
        )
        .await;
    synced(&api, push, 0).await;
    assert_eq!(
        std::fs::read_dir(&destination_lfs.storage).unwrap().count(),
        0
    );

    turn_lfs_on(&api, push).await;
    synced(&api, push, 1).await;
    clone_holds(
        roots.path(),
        &destination.url("org/repo.git"),
        &[("data.bin", &content)],
    );
    let asked = destination.lfs_requests();
    assert_eq!(api.sync(push).await["lfs_objects"], 0);
    assert_eq!(
        destination.lfs_requests(),
        asked,
        "a no-op push asked the LFS server"
    );
}
