//! A full disk: the data dir on a small tmpfs. A pack that does not fit
//! fails its run with the reason and leaves nothing behind; a disk filled to
//! the last block by something else fails runs (a run in flight is recorded
//! once there is room again) and refuses new ones with 507, not the
//! service; once space is back the mirrors catch up, and nothing was lost.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Api, LOCAL_REMOTES, Server, Upstream, fsck, git, project_repo, refs_of, slow_mirror,
    slow_upstream,
};

/// A tmpfs of `mib` MiB mounted on a new temporary directory, unmounted on
/// drop; `None` (said on stderr) where this process may not mount.
struct SmallDisk {
    dir: Option<tempfile::TempDir>,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().to_path_buf();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&mount)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
            return None;
        }
        Some(Self {
            dir: Some(dir),
            mount,
        })
    }

    /// The directory, handed to a server as its data dir; the mount stays ours.
    fn take_dir(&mut self) -> tempfile::TempDir {
        self.dir.take().unwrap()
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Commits `count` files of `mib` MiB of random bytes (git cannot compress them).
fn commit_random_files(up: &Upstream, count: usize, mib: usize) {
    let work = up.work();
    for i in 0..count {
        let bytes: Vec<u8> = (0..mib << 20).map(|_| rand_byte()).collect();
        std::fs::write(work.join(format!("blob{i}.bin")), bytes).unwrap();
    }
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "big files"]);
    up.push(&["main"]);
}

fn rand_byte() -> u8 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) });
    STATE.with(|s| {
        // xorshift64: incompressible enough for zlib, and fast.
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 24) as u8
    })
}

fn temporary_files(repo: &Path) -> Vec<String> {
    let pack = repo.join("objects/pack");
    std::fs::read_dir(&pack)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !(n.ends_with(".pack") || n.ends_with(".idx")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_runs_not_the_service_and_loses_nothing() {
    let Some(mut disk) = SmallDisk::mount(48) else {
        return;
    };
    let server = Server::start_in(disk.take_dir(), LOCAL_REMOTES);
    let api = Api::new(&server);

    // A small project that fits, synced.
    let small = Upstream::with_main();
    let kept = api
        .create(
            "pull",
            json!({"project_id": "disk/small", "url": small.url()}),
        )
        .await;
    assert_eq!(api.sync(kept).await["status"], "succeeded");
    let small_refs = refs_of(&project_repo(&server, "disk/small"));

    // A pack bigger than the whole disk.
    let big = Upstream::with_main();
    commit_random_files(&big, 8, 8);
    let big_id = api
        .create("pull", json!({"project_id": "disk/big", "url": big.url()}))
        .await;
    let free_before = disk.free_bytes();
    let run = api.sync(big_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    let big_repo = project_repo(&server, "disk/big");
    assert!(refs_of(&big_repo).is_empty(), "no ref landed");
    assert_eq!(temporary_files(&big_repo), Vec::<String>::new());
    assert!(
        disk.free_bytes() + (1 << 20) >= free_before,
        "the partial pack's space came back: {} before, {} after",
        free_before,
        disk.free_bytes()
    );

    // A run mid-transfer when something else fills the disk to the last
    // block: it fails, and still gets recorded once there is room.
    let root = tempfile::tempdir().unwrap();
    let http = slow_upstream(root.path()).await;
    let slow = slow_mirror(&api, &http.url("big.git"), "disk/slow").await;
    let slow_run = api.queue(slow).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = api.get(&format!("/api/v1/runs/{slow_run}")).await;
        if run["progress"]["bytes"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never moved a byte: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = disk.mount.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    small.commit("main", "while-full");
    small.push(&["main"]);
    // On SQLite the store shares the full disk: a run cannot even be queued.
    // (On PostgreSQL the store is elsewhere and has room.)
    if crate::test_postgres::url().is_none() {
        // The run cannot even be queued: the answer says why, and nothing moved.
        let (status, answer) = api
            .post(&format!("/api/v1/mirrors/{kept}/sync"), json!({}))
            .await;
        assert_eq!(status, 507, "{answer}");
        assert_eq!(answer["error"]["code"], "disk_full", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("disk is full"),
            "{answer}"
        );
        let (status, _) = api.get("/api/v1/mirrors").await;
        assert_eq!(status, 200, "the API answers on a full disk");
        // The console too: its pages read, and its actions say why they cannot.
        let operator = crate::console::login(&server).await;
        let form = [("csrf", operator.csrf.as_str())];
        let path = format!("/mirrors/{kept}/sync");
        let answer = crate::console::post_form(&server, &operator.cookie, &path, &form).await;
        assert_eq!(answer.status(), 507);
        assert!(answer.text().await.unwrap().contains("disk is full"));
    }
    assert_eq!(refs_of(&project_repo(&server, "disk/small")), small_refs);

    tokio::time::sleep(Duration::from_secs(2)).await;

    // Space back: the run in flight is recorded, the mirrors catch up, and
    // every copy checks out.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, run) = api.get(&format!("/api/v1/runs/{slow_run}")).await;
        if run["finished_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the run never ended: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.sync(slow).await["status"], "succeeded");
    fsck(&project_repo(&server, "disk/slow"));
    let run = api.sync(kept).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let tip = git(&small.bare(), &["rev-parse", "main"]);
    let ours = refs_of(&project_repo(&server, "disk/small"));
    assert_eq!(ours["refs/heads/main"], tip.trim());
    fsck(&project_repo(&server, "disk/small"));
    for id in [kept, big_id, slow] {
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
        let hanging = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "running" || r["status"] == "queued")
            .count();
        assert_eq!(hanging, 0, "no run left hanging: {runs}");
    }
}
