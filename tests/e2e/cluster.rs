//! Several `mirrorhost serve` nodes on one PostgreSQL database (the
//! PostgreSQL pass only: SQLite serves one node): real processes, mirrors of
//! upstreams over smart HTTP, webhooks sent to random nodes, one node
//! killed with SIGKILL in the middle of runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::http_git::HttpGit;
use crate::support::{Api, LOCAL_REMOTES, Server, Upstream, fsck, refs_of};
use crate::webhooks::{SECRET, github, github_push};

const NODES: usize = 3;
const MIRRORS: usize = 300;
const UPSTREAMS: usize = 20;
const LEASE_SECONDS: u64 = 3;

/// One mirror of the test: its project and the upstream it pulls.
struct Mirror {
    id: i64,
    project: String,
    upstream: usize,
}

/// Rows of the shared database, read by the test itself.
fn query(url: &str, sql: &str) -> Vec<postgres::Row> {
    let (url, sql) = (url.to_string(), sql.to_string());
    // The synchronous client may not block a thread that drives a runtime.
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.query(&sql, &[]).unwrap()
    })
    .join()
    .unwrap()
}

fn count(url: &str, sql: &str) -> i64 {
    query(url, sql)[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_mirrors_and_outlive_one_killed_mid_run() {
    let Some(url) = crate::test_postgres::schema_url(&crate::test_postgres::fresh_schema()) else {
        eprintln!("cluster test skipped: it runs in the PostgreSQL pass (tests/on-postgres.sh)");
        return;
    };
    let key = hex::encode(rand::random::<[u8; 32]>());
    let lease = LEASE_SECONDS.to_string();
    let mut envs: Vec<(&str, &str)> = LOCAL_REMOTES.to_vec();
    envs.extend([
        ("MIRRORHOST_DATABASE_URL", url.as_str()),
        ("MIRRORHOST_MASTER_KEY", key.as_str()),
        ("MIRRORHOST_LEASE_SECONDS", lease.as_str()),
        ("MIRRORHOST_MAX_CONCURRENT_RUNS", "6"),
        ("MIRRORHOST_MAX_RUNS_PER_HOST", "6"),
    ]);
    let mut nodes: Vec<Option<Server>> = (0..NODES).map(|_| Some(Server::start(&envs))).collect();
    let node_ids: Vec<String> = nodes
        .iter()
        .map(|n| {
            let dir = n.as_ref().unwrap().data_dir.path();
            std::fs::read_to_string(dir.join("node-id")).unwrap()
        })
        .collect();

    let upstreams: Vec<Upstream> = (0..UPSTREAMS).map(|_| Upstream::with_main()).collect();
    let mut servers = Vec::new();
    for up in &upstreams {
        servers.push(HttpGit::start(up.dir.path()).await);
    }
    let clone_urls: Vec<String> = servers.iter().map(|s| s.url("upstream.git")).collect();

    // Any node answers the admin API: mirrors made, and their first runs
    // queued, through the nodes in turn, a dozen requests at a time.
    let made = Instant::now();
    let mirrors: Vec<Mirror> = futures_util::stream::iter(0..MIRRORS)
        .map(|i| {
            let api = Api::new(nodes[i % NODES].as_ref().unwrap());
            let url = clone_urls[i % UPSTREAMS].clone();
            async move { add_mirror(&api, i, &url).await }
        })
        .buffered(12)
        .collect()
        .await;
    eprintln!("{MIRRORS} mirrors made and queued: {:?}", made.elapsed());
    let first = Instant::now();
    converge(&url, &mirrors, "", Duration::from_secs(180)).await;
    eprintln!(
        "{MIRRORS} first runs on {NODES} nodes: {:?}",
        first.elapsed()
    );
    let owners = count(&url, "SELECT COUNT(DISTINCT node) FROM project_leases");
    assert_eq!(owners, NODES as i64, "every node owns projects");

    // A push to every upstream, announced by webhooks to random nodes; a
    // node is killed while it runs some of the runs they queue.
    let since = query(&url, "SELECT clock_now_ms()::TEXT")[0].get::<_, String>(0);
    for (u, up) in upstreams.iter().enumerate() {
        let tip = up.commit("main", "second");
        up.push(&["main"]);
        let node = nodes[rand::random_range(0..NODES)].as_ref().unwrap();
        let payload = github_push(&clone_urls[u], &tip);
        let (status, answer) = github(node, "push", &format!("c-{u}"), &payload, SECRET).await;
        assert_eq!(status, 202, "{answer}");
    }
    let victim = &node_ids[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = format!("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND node = '{victim}'");
    while count(&url, &busy) == 0 {
        assert!(
            Instant::now() < deadline,
            "node 0 never ran a webhook's run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    let dead_dir = nodes[0].take().unwrap().crash();
    let cut: Vec<i64> = query(
        &url,
        &format!("SELECT run_id FROM jobs WHERE state = 'running' AND node = '{victim}'"),
    )
    .iter()
    .map(|r| r.get(0))
    .collect();

    // The runs the kill cut off run again elsewhere within the lease term
    // plus a run (a generous one: a debug build, its slots shared with the
    // other webhooks' runs); every mirror converges.
    let retried = format!(
        "SELECT COUNT(DISTINCT r.mirror_id) FROM runs r JOIN runs c ON c.mirror_id = r.mirror_id \
         WHERE c.id IN ({}) AND r.id > c.id AND r.status = 'succeeded' AND r.node <> '{victim}'",
        cut.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bound = Duration::from_secs(LEASE_SECONDS + 30);
    while count(&url, &retried) < cut.len() as i64 {
        assert!(
            killed_at.elapsed() < bound,
            "the cut runs were not retried within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} runs cut off by the kill succeeded elsewhere {:?} after it (lease {LEASE_SECONDS} s)",
        cut.len(),
        killed_at.elapsed()
    );
    converge(&url, &mirrors, &since, Duration::from_secs(120)).await;
    eprintln!(
        "every mirror converged {:?} after the kill",
        killed_at.elapsed()
    );
    check_history(&url, victim);

    // Every copy on every node, the dead one's included, checks out; the
    // copy where each project's last run landed is the upstream's.
    let dirs: BTreeMap<&str, &std::path::Path> = node_ids
        .iter()
        .zip(&nodes)
        .map(|(id, node)| {
            let dir = node.as_ref().map_or(dead_dir.path(), |n| n.data_dir.path());
            (id.as_str(), dir)
        })
        .collect();
    check_copies(&url, &mirrors, &upstreams, &dirs);
}

/// What the run records say after the kill: runs were cut off, each was
/// retried on another node and succeeded there; no two runs of one project
/// overlapped; none is left waiting.
fn check_history(url: &str, victim: &str) {
    let interrupted = count(
        url,
        "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'",
    );
    assert!(interrupted > 0, "the kill cut runs off");
    let unretried = count(
        url,
        &format!(
            "SELECT COUNT(*) FROM runs r WHERE r.status = 'interrupted' AND NOT EXISTS \
             (SELECT 1 FROM runs s WHERE s.mirror_id = r.mirror_id AND s.id > r.id \
              AND s.status = 'succeeded' AND s.node <> '{victim}')"
        ),
    );
    assert_eq!(
        unretried, 0,
        "every run the kill cut off succeeded again elsewhere"
    );
    let overlaps = count(
        url,
        "SELECT COUNT(*) FROM runs a JOIN mirrors ma ON ma.id = a.mirror_id \
         JOIN runs b ON b.id > a.id JOIN mirrors mb ON mb.id = b.mirror_id \
         WHERE ma.project_id = mb.project_id AND a.started_at IS NOT NULL \
         AND b.started_at IS NOT NULL AND a.started_at < b.finished_at \
         AND b.started_at < a.finished_at",
    );
    assert_eq!(overlaps, 0, "runs of one project overlapped");
    let open = count(
        url,
        "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')",
    );
    assert_eq!(open, 0, "a triggered run was left waiting");
}

/// `git fsck` of every copy in `dirs` (node id -> data dir); the copy on
/// the node of each mirror's last successful run (the dead node's, for runs
/// it finished before the kill) holds its upstream's tip.
fn check_copies(
    url: &str,
    mirrors: &[Mirror],
    upstreams: &[Upstream],
    dirs: &BTreeMap<&str, &std::path::Path>,
) {
    let last_nodes: BTreeMap<i64, String> = query(
        url,
        "SELECT DISTINCT ON (mirror_id) mirror_id, node FROM runs \
         WHERE status = 'succeeded' ORDER BY mirror_id, id DESC",
    )
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    for m in mirrors {
        let dir = dirs[last_nodes[&m.id].as_str()];
        let copy = dir.join("repos").join(format!("{}.git", m.project));
        assert_eq!(
            refs_of(&copy)["refs/heads/main"],
            refs_of(&upstreams[m.upstream].bare())["refs/heads/main"]
        );
    }
    for dir in dirs.values() {
        let repos = dir.join("repos").join("cluster");
        for entry in std::fs::read_dir(&repos).into_iter().flatten() {
            fsck(&entry.unwrap().path());
        }
    }
}

/// Mirror `i` of upstream `url`, with its project's webhook secret, and its
/// first run queued.
async fn add_mirror(api: &Api<'_>, i: usize, url: &str) -> Mirror {
    let project = format!("cluster/p{i}");
    let id = api
        .create("pull", json!({"project_id": project, "url": url}))
        .await;
    let path = format!("/api/v1/projects/{}/webhook", project.replace('/', "%2F"));
    let (status, set) = api.put(&path, json!({"secret": SECRET})).await;
    assert_eq!(status, 200, "{set}");
    api.queue(id).await;
    Mirror {
        id,
        project,
        upstream: i % UPSTREAMS,
    }
}

/// Waits until every mirror's latest run succeeded, queued after `since`
/// (unix ms as text; "" for any), and no run is left open.
async fn converge(url: &str, mirrors: &[Mirror], since: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let since_ms: i64 = since.parse().unwrap_or(0);
    let done = format!(
        "SELECT COUNT(DISTINCT mirror_id) FROM runs WHERE status = 'succeeded' \
         AND started_at >= to_char(to_timestamp({since_ms} / 1000.0) AT TIME ZONE 'UTC', \
         'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    );
    let open = "SELECT COUNT(*) FROM jobs";
    loop {
        let (ok, waiting) = (count(url, &done), count(url, open));
        if ok == mirrors.len() as i64 && waiting == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ok} of {} mirrors converged, {waiting} jobs open",
            mirrors.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
