//! Which pack indexer an installed service starts: `mirrorhost-index-pack`
//! beside its executable, held open so that an upgrade replacing the file
//! changes nothing until a restart; `mirrorhost index-pack` where it is
//! missing (as after `cargo run`, which builds only `mirrorhost`).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::{Api, LOCAL_REMOTES, Server, Upstream, refs_of};

/// What refuses the indexer's arguments, in place of the indexer: the
/// service's own executable, an ELF file (a script cannot be started
/// through `/proc/self/fd`, and an install holds none).
const STAND_IN: &str = env!("CARGO_BIN_EXE_mirrorhost");

/// How the stand-in refuses the indexer's first argument.
const STAND_IN_REFUSAL: &str = "unexpected argument '--protocol'";

/// A directory the service is installed in: links to the built binaries
/// (beside the target directory, so that hard links reach them).
fn install(with_indexer: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let link = |built: &str, installed: &str| {
        std::fs::hard_link(built, dir.path().join(installed)).unwrap();
    };
    link(env!("CARGO_BIN_EXE_mirrorhost"), "mirrorhost");
    if with_indexer {
        link(
            env!("CARGO_BIN_EXE_mirrorhost-index-pack"),
            "mirrorhost-index-pack",
        );
    }
    let exe = dir.path().join("mirrorhost");
    (dir, exe)
}

/// Replaces `path` as a package upgrade does: a new file renamed over it.
fn replace_with_stand_in(path: &Path) {
    let new = path.with_extension("new");
    std::fs::hard_link(STAND_IN, &new).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// A pull mirror of `up` for `project`: its id.
async fn mirror(api: &Api<'_>, up: &Upstream, project: &str) -> i64 {
    api.create("pull", json!({"project_id": project, "url": up.url()}))
        .await
}

/// A pull mirror of `up` for `project`, synced once: the run.
async fn pull(api: &Api<'_>, up: &Upstream, project: &str) -> serde_json::Value {
    let id = mirror(api, up, project).await;
    api.sync(id).await
}

#[tokio::test]
async fn without_the_indexer_beside_it_the_service_indexes_with_itself() {
    let (_dir, exe) = install(false);
    let server = Server::start_installed(&exe, LOCAL_REMOTES);
    let said = server.seen.iter().any(|line| {
        line.contains("pack indexer: `mirrorhost index-pack`")
            && line.contains("not installed beside this executable")
    });
    assert!(said, "the service did not say which indexer it runs");
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let run = pull(&api, &up, "installed/alone").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let local = crate::support::project_repo(&server, "installed/alone");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
}

#[tokio::test]
async fn the_indexer_beside_the_service_is_the_one_it_starts() {
    let (dir, exe) = install(false);
    replace_with_stand_in(&dir.path().join("mirrorhost-index-pack"));
    let server = Server::start_installed(&exe, LOCAL_REMOTES);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let run = pull(&api, &up, "installed/stand-in").await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains(STAND_IN_REFUSAL), "{error}");
}

#[tokio::test]
async fn an_upgrade_that_replaces_the_indexer_changes_nothing_until_a_restart() {
    let (dir, exe) = install(true);
    let server = Server::start_installed(&exe, LOCAL_REMOTES);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = mirror(&api, &up, "installed/upgraded").await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    replace_with_stand_in(&dir.path().join("mirrorhost-index-pack"));
    up.commit("main", "b");
    up.push(&["main"]);
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let local = crate::support::project_repo(&server, "installed/upgraded");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    // A restart starts what is installed now.
    drop(server);
    let server = Server::start_installed(&exe, LOCAL_REMOTES);
    let api = Api::new(&server);
    let run = pull(&api, &up, "installed/restarted").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains(STAND_IN_REFUSAL));
}
