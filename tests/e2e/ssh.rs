//! Pull and push over SSH against a real sshd: host keys detected, confirmed and
//! enforced; a plain key and a passphrase-protected key; wrong keys and
//! passphrases failing cleanly.

use serde_json::json;

use crate::sshd::{Sshd, keygen};
use crate::support::{Api, Upstream, bare_repo, fsck, local_server, project_repo, refs_of};

const PASSPHRASE: &str = "open-Sesame-4Rt-distinctive";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_keys_and_host_keys() {
    let keys = tempfile::tempdir().unwrap();
    let plain = keygen(keys.path(), "plain", "");
    let locked = keygen(keys.path(), "locked", PASSPHRASE);
    let stranger = keygen(keys.path(), "stranger", "");
    let sshd = Sshd::start(&[&plain, &locked]);
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    up.push(&["main", "dev"]);
    let dest = bare_repo(up.dir.path(), "dest.git");

    let server = local_server();
    let api = Api::new(&server);
    let pull = api
        .create(
            "pull",
            json!({"project_id": "ssh/project", "url": sshd.url(&up.bare()),
                               "auth_method": "ssh_key"}),
        )
        .await;
    let creds = format!("/api/v1/mirrors/{pull}/credentials");
    let (status, meta) = api
        .put(
            &creds,
            json!({"type": "ssh_key", "private_key": plain.private_key}),
        )
        .await;
    assert_eq!(status, 200, "{meta}");
    assert!(
        meta["fingerprint"].as_str().unwrap().starts_with("SHA256:"),
        "{meta}"
    );

    // No trusted host key yet: refused, nothing changes.
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("trusts no host key"),
        "{run}"
    );
    // A pinned wrong key is refused too.
    let host_keys = format!("/api/v1/mirrors/{pull}/ssh-host-keys");
    let wrong = json!({"host_keys": [{"fingerprint": format!("SHA256:{}", "A".repeat(43))}]});
    assert_eq!(api.put(&host_keys, wrong).await.0, 200);
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("does not match"),
        "{run}"
    );
    assert!(refs_of(&project_repo(&server, "ssh/project")).is_empty());

    // Detect, compare with what ssh-keygen says, confirm.
    let (status, detected) = api.post(&format!("{host_keys}/detect"), json!({})).await;
    assert_eq!(status, 200, "{detected}");
    let offered = &detected["host_keys"][0];
    assert_eq!(offered["fingerprint"], sshd.host_key_fingerprint.as_str());
    assert_eq!(offered["type"], "ssh-ed25519");
    assert_eq!(
        api.put(&host_keys, json!({"host_keys": [offered]})).await.0,
        200
    );
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let local = project_repo(&server, "ssh/project");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    fsck(&local);

    // Push with the passphrase-protected key.
    let push = api
        .create(
            "push",
            json!({"project_id": "ssh/project", "url": sshd.url(&dest),
                               "auth_method": "ssh_key"}),
        )
        .await;
    let push_creds = format!("/api/v1/mirrors/{push}/credentials");
    let (status, err) = api
        .put(
            &push_creds,
            json!({"type": "ssh_key", "private_key": locked.private_key}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("passphrase")),
        "{err}"
    );
    let (status, err) = api
        .put(
            &push_creds,
            json!({"type": "ssh_key", "private_key": locked.private_key, "passphrase": "wrong"}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("passphrase")),
        "{err}"
    );
    let (status, _) = api
        .put(
            &push_creds,
            json!({"type": "ssh_key", "private_key": locked.private_key, "passphrase": PASSPHRASE}),
        )
        .await;
    assert_eq!(status, 200);
    let push_keys = format!("/api/v1/mirrors/{push}/ssh-host-keys");
    api.put(
        &push_keys,
        json!({"host_keys": [{"fingerprint": sshd.host_key_fingerprint}]}),
    )
    .await;
    let run = api.sync(push).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));
    fsck(&dest);

    // The other way round: pull with the protected key, push with the plain one.
    let body =
        json!({"project_id": "ssh/other", "url": sshd.url(&up.bare()), "auth_method": "ssh_key"});
    let pull_locked = api.create("pull", body).await;
    let locked_key =
        json!({"type": "ssh_key", "private_key": locked.private_key, "passphrase": PASSPHRASE});
    api.put(
        &format!("/api/v1/mirrors/{pull_locked}/credentials"),
        locked_key,
    )
    .await;
    let pinned = json!({"host_keys": [{"fingerprint": sshd.host_key_fingerprint}]});
    api.put(
        &format!("/api/v1/mirrors/{pull_locked}/ssh-host-keys"),
        pinned.clone(),
    )
    .await;
    assert_eq!(api.sync(pull_locked).await["status"], "succeeded");
    let other_dest = bare_repo(up.dir.path(), "other-dest.git");
    let body =
        json!({"project_id": "ssh/other", "url": sshd.url(&other_dest), "auth_method": "ssh_key"});
    let push_plain = api.create("push", body).await;
    let plain_key = json!({"type": "ssh_key", "private_key": plain.private_key});
    api.put(
        &format!("/api/v1/mirrors/{push_plain}/credentials"),
        plain_key,
    )
    .await;
    api.put(
        &format!("/api/v1/mirrors/{push_plain}/ssh-host-keys"),
        pinned,
    )
    .await;
    let run = api.sync(push_plain).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&other_dest), refs_of(&up.bare()));

    // A key the server does not accept fails the run cleanly.
    api.put(
        &creds,
        json!({"type": "ssh_key", "private_key": stranger.private_key}),
    )
    .await;
    up.commit("main", "c");
    up.push(&["main"]);
    let before = refs_of(&local);
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{run}"
    );
    assert_eq!(refs_of(&local), before);

    // Neither the passphrase nor any key's body is anywhere in the data dir.
    let key_body = |k: &crate::sshd::KeyPair| k.private_key.lines().nth(2).unwrap().to_string();
    let secrets = [PASSPHRASE.to_string(), key_body(&plain), key_body(&locked)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    crate::auth::assert_no_secret_in(server.data_dir.path(), &secrets);
}
