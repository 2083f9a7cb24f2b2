//! Uploading custom plugins: checked against the world they claim, usable by
//! mirrors, kept across restarts, and not deletable while in use.

use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Api, LOCAL_REMOTES, Server, Upstream, client, local_server, project_repo, refs_of,
};

const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));

async fn upload(server: &Server, query: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let resp = client()
        .post(server.url(&format!("/api/v1/plugins?{query}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn uploaded_plugins_are_checked_used_kept_and_guarded() {
    let server = local_server();
    let api = Api::new(&server);

    // Refused: not a component, the wrong world, a bad name, a built-in's name.
    let (status, err) = upload(&server, "name=junk&world=branch-filter", b"not wasm").await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("component")),
        "{err}"
    );
    let (status, err) = upload(&server, "name=wrong&world=conflict-strategy", HOSTILE).await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conflict-strategy"),
        "{err}"
    );
    let (status, err) = upload(&server, "name=Bad%20Name&world=branch-filter", HOSTILE).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("name")),
        "{err}"
    );
    let (status, err) = upload(&server, "name=x&world=nonsense", HOSTILE).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("world")),
        "{err}"
    );
    let (status, _) = upload(&server, "name=ours&world=branch-filter", HOSTILE).await;
    assert_eq!(status, 409);

    let (status, meta) = upload(&server, "name=echo-filter&world=branch-filter", HOSTILE).await;
    assert_eq!(status, 201, "{meta}");
    assert_eq!(
        (&meta["builtin"], &meta["world"]),
        (&json!(false), &json!("branch-filter"))
    );
    assert_eq!(meta["size_bytes"], HOSTILE.len());

    // A mirror filtering through it: the hostile guest echoes every ref it is offered.
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    up.push(&["main", "dev"]);
    let body = json!({"project_id": "custom/filter", "url": up.url(),
                      "branch_filter": "echo-filter", "branch_filter_config": "echo"});
    let id = api.create("pull", body).await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        refs_of(&project_repo(&server, "custom/filter")),
        refs_of(&up.bare())
    );

    let (status, err) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/echo-filter", None)
        .await;
    assert_eq!(status, 409, "in use: {err}");
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/ours", None)
        .await;
    assert_eq!(status, 409, "built-ins stay");

    // It survives a restart.
    let data_dir = server.stop();
    let server = Server::start_in(data_dir, LOCAL_REMOTES);
    let api = Api::new(&server);
    let (_, listed) = api.get("/api/v1/plugins").await;
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo-filter")
    );

    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/mirrors/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/api/v1/plugins/echo-filter", None)
        .await;
    assert_eq!(status, 204);
    let (_, listed) = api.get("/api/v1/plugins").await;
    assert!(
        !listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo-filter")
    );
    assert!(
        !server
            .data_dir
            .path()
            .join("plugins/echo-filter.branch-filter.wasm")
            .exists()
    );
}
