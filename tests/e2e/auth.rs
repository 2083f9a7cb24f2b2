//! Credentials against a real `git http-backend` behind HTTP Basic auth: a
//! password user and a token accepted as the password, pull and push through
//! each, wrong secrets failing cleanly, and no secret anywhere it should not be.

use std::path::Path;

use serde_json::{Value, json};

use crate::http_git::{BasicAuth, HttpGit};
use crate::support::{Api, Upstream, bare_repo, fsck, local_server, project_repo, refs_of};

const PASSWORD: &str = "pw-Zq8vX1-distinctive";
const WRONG_PASSWORD: &str = "pw-Wrong-7Hk2-distinctive";
const TOKEN: &str = "ghp_TOKEN9mR4-distinctive";

/// Every response body the test saw, to search for secrets afterwards.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, (status, body): (u16, Value)) -> (u16, Value) {
        self.0.push(body.to_string());
        (status, body)
    }
}

/// A git http-backend that takes any username with TOKEN as the password, the
/// way GitHub takes a token.
async fn token_server(root: &Path) -> HttpGit {
    let auth = BasicAuth {
        username: None,
        password: TOKEN.into(),
    };
    HttpGit::start_with_auth(root, Some(auth)).await
}

async fn put_credentials(api: &Api<'_>, seen: &mut Seen, id: i64, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/mirrors/{id}/credentials");
    seen.keep(api.put(&path, body).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_token_auth_pull_and_push_and_never_leak() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    up.push(&["main", "dev"]);
    let dest = bare_repo(up.dir.path(), "dest.git");
    let password_server = HttpGit::start_with_auth(
        up.dir.path(),
        Some(BasicAuth {
            username: Some("alice".into()),
            password: PASSWORD.into(),
        }),
    )
    .await;
    let token_server = token_server(up.dir.path()).await;

    let server = local_server();
    let api = Api::new(&server);
    let mut seen = Seen::default();

    // Password: no credentials yet, then a wrong one, then the right one.
    let pull = api
        .create(
            "pull",
            json!({"project_id": "auth/pw", "url": password_server.url("upstream.git"),
                               "auth_method": "password"}),
        )
        .await;
    let run = seen.keep((200, api.sync(pull).await)).1;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("no stored credentials"),
        "{run}"
    );
    let (status, _) = put_credentials(
        &api,
        &mut seen,
        pull,
        json!({"type": "password", "username": "alice", "password": WRONG_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200);
    let run = seen.keep((200, api.sync(pull).await)).1;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{run}"
    );
    assert!(
        refs_of(&project_repo(&server, "auth/pw")).is_empty(),
        "a failed run changes nothing"
    );
    let (status, meta) = put_credentials(
        &api,
        &mut seen,
        pull,
        json!({"type": "password", "username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{meta}");
    assert!(
        meta["rotated_at"].is_string(),
        "the second PUT rotates: {meta}"
    );
    let run = seen.keep((200, api.sync(pull).await)).1;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        refs_of(&project_repo(&server, "auth/pw")),
        refs_of(&up.bare())
    );
    // And a push through the password server.
    let pw_dest = bare_repo(up.dir.path(), "pw-dest.git");
    let body = json!({"project_id": "auth/pw", "url": password_server.url("pw-dest.git"),
                      "auth_method": "password"});
    let pw_push = api.create("push", body).await;
    let alice = json!({"type": "password", "username": "alice", "password": PASSWORD});
    put_credentials(&api, &mut seen, pw_push, alice).await;
    let run = seen.keep((200, api.sync(pw_push).await)).1;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&pw_dest), refs_of(&up.bare()));
    let (status, meta) = seen.keep(
        api.get(&format!("/api/v1/mirrors/{pull}/credentials"))
            .await,
    );
    assert_eq!(status, 200);
    assert_eq!(
        (&meta["type"], &meta["username"]),
        (&json!("password"), &json!("alice"))
    );
    assert!(meta.get("password").is_none(), "{meta}");
    // DELETE removes them: the next run has none and says so.
    let creds = format!("/api/v1/mirrors/{pull}/credentials");
    let (status, _) = api.call(reqwest::Method::DELETE, &creds, None).await;
    assert_eq!(status, 204);
    assert_eq!(seen.keep(api.get(&creds).await).0, 404);
    up.commit("main", "after-delete");
    up.push(&["main"]);
    let run = seen.keep((200, api.sync(pull).await)).1;
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("no stored credentials"),
        "{run}"
    );

    // Token: a pull from the token server and a push through it.
    let pull_token = api
        .create(
            "pull",
            json!({"project_id": "auth/token", "url": token_server.url("upstream.git"),
                               "auth_method": "token"}),
        )
        .await;
    let wrong_token = json!({"type": "token", "token": WRONG_PASSWORD});
    put_credentials(&api, &mut seen, pull_token, wrong_token).await;
    let run = seen.keep((200, api.sync(pull_token).await)).1;
    assert_eq!(run["status"], "failed", "a wrong token fails: {run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{run}"
    );
    let token = json!({"type": "token", "token": TOKEN});
    put_credentials(&api, &mut seen, pull_token, token).await;
    let run = seen.keep((200, api.sync(pull_token).await)).1;
    assert_eq!(run["status"], "succeeded", "{run}");
    let push = api
        .create(
            "push",
            json!({"project_id": "auth/token", "url": token_server.url("dest.git"),
                               "auth_method": "token"}),
        )
        .await;
    put_credentials(
        &api,
        &mut seen,
        push,
        json!({"type": "token", "token": TOKEN}),
    )
    .await;
    let run = seen.keep((200, api.sync(push).await)).1;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));
    fsck(&dest);

    // Bad input: wrong type for the mirror, empty parts, a key that does not parse.
    let (status, err) = put_credentials(
        &api,
        &mut seen,
        pull,
        json!({"type": "token", "token": TOKEN}),
    )
    .await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("type")),
        "{err}"
    );
    let (status, err) = put_credentials(
        &api,
        &mut seen,
        pull,
        json!({"type": "password", "username": "alice", "password": ""}),
    )
    .await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("password")),
        "{err}"
    );
    let ssh = api
        .create(
            "pull",
            json!({"project_id": "auth/ssh", "url": "ssh://git@example.com/x.git",
                               "auth_method": "ssh_key"}),
        )
        .await;
    let (status, err) = put_credentials(
        &api,
        &mut seen,
        ssh,
        json!({"type": "ssh_key", "private_key": "not a key"}),
    )
    .await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("private_key")),
        "{err}"
    );

    // Where the secrets must not be: API responses, the data dir (database
    // included), the server log, the process list.
    let secrets = [PASSWORD, WRONG_PASSWORD, TOKEN];
    for body in &seen.0 {
        for secret in secrets {
            assert!(!body.contains(secret), "secret in an API response: {body}");
        }
    }
    let ps = std::process::Command::new("ps")
        .args(["axww", "-o", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    for secret in secrets {
        assert!(!ps.contains(secret), "secret in the process list");
    }
    assert_no_secret_in(server.data_dir.path(), &secrets);
    let (_, log) = server.terminate();
    for line in &log {
        for secret in secrets {
            assert!(!line.contains(secret), "secret in the server log: {line}");
        }
    }
}

/// No secret in any file under the data dir `dir`, nor in its store.
pub fn assert_no_secret_in(dir: &Path, secrets: &[&str]) {
    assert_no_secret_in_files(dir, secrets);
    let database = crate::support::database_bytes(dir);
    for secret in secrets {
        let found = database
            .windows(secret.len())
            .any(|w| w == secret.as_bytes());
        assert!(!found, "secret found in the store");
    }
}

fn assert_no_secret_in_files(dir: &Path, secrets: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_secret_in_files(&path, secrets);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            for secret in secrets {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "secret found in {}", path.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_credentials_usable() {
    let up = Upstream::with_main();
    let http = token_server(up.dir.path()).await;
    let server = local_server();
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "rotate/me", "url": http.url("upstream.git"),
                               "auth_method": "token"}),
        )
        .await;
    put_credentials(
        &api,
        &mut Seen::default(),
        id,
        json!({"type": "token", "token": TOKEN}),
    )
    .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let data_dir = server.stop();
    let key_path = data_dir.path().join("master.key");
    let old_key = std::fs::read_to_string(&key_path).unwrap();

    let out = crate::support::rotate_master_key(data_dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-sealed 1 stored secrets"));
    let new_key = std::fs::read_to_string(&key_path).unwrap();
    assert_ne!(old_key, new_key);
    assert!(out.stdout.is_empty(), "a key kept in a file is not printed");

    let server = crate::support::Server::start_in(data_dir, crate::support::LOCAL_REMOTES);
    let api = Api::new(&server);
    up.commit("main", "b");
    up.push(&["main"]);
    let run = api.sync(id).await;
    assert_eq!(
        run["status"], "succeeded",
        "the re-sealed token still opens: {run}"
    );
}
