//! A mirror's bandwidth cap paces its transfer over smart HTTP. The benchmark
//! (`cargo bench --bench sync`) checks the precise figure on a larger transfer;
//! this test keeps a looser bound so it holds on a busy machine.

use std::time::Instant;

use serde_json::json;

use crate::history::{History, generate};
use crate::http_git::HttpGit;
use crate::support::{Api, bare_repo, local_server, project_repo, refs_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_pull_takes_as_long_as_its_rate_says() {
    let root = tempfile::tempdir().unwrap();
    let upstream = bare_repo(root.path(), "big.git");
    // 3 MiB of incompressible blobs.
    generate(
        &upstream,
        History {
            commits: 12,
            blob_bytes: 256 << 10,
            dirs: 1,
            refs_every: 0,
        },
    );
    let http = HttpGit::start(root.path()).await;
    let server = local_server();
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "bw/capped", "url": http.url("big.git")}),
        )
        .await;
    let path = format!("/api/v1/mirrors/{id}/bandwidth");
    let (status, err) = api.put(&path, json!({"max_bytes_per_second": 0})).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("max_bytes_per_second"))
    );
    let limits = json!({"max_bytes_per_second": 1 << 20, "max_concurrent_updates": 1, "throttle_on_failure": true});
    let (status, set) = api.put(&path, limits.clone()).await;
    assert_eq!((status, &set), (200, &limits));
    assert_eq!(api.get(&path).await.1, limits);

    let started = Instant::now();
    let run = api.sync(id).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(run["status"], "succeeded", "{run}");
    let bytes = run["bytes_transferred"].as_f64().unwrap();
    assert!(bytes > 3.0e6, "{run}");
    // At 1 MiB/s after a quarter-second burst: about 2.6 s for these bytes.
    let expected = bytes / f64::from(1 << 20) - 0.25;
    assert!(
        took > expected * 0.9 && took < expected * 2.0,
        "took {took:.2}s, expected about {expected:.2}s"
    );
    assert_eq!(
        refs_of(&project_repo(&server, "bw/capped")),
        refs_of(&upstream)
    );
}
