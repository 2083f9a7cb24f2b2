//! Bad input to the mirror API: the right status, a JSON error naming the field,
//! and nothing stored.

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Api, Server};

#[tokio::test]
async fn bad_mirror_input_is_refused_by_field_and_stores_nothing() {
    // Local remotes are not allowed here: the URL policy is part of the check.
    let server = Server::start(&[("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let api = Api::new(&server);
    let base = json!({"project_id": "acme/widgets", "url": "https://example.com/acme/widgets.git"});
    let with = |patch: Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(json!({"url": "not a url"})), 422, "url"),
        (with(json!({"url": "file:///srv/x.git"})), 422, "url"),
        (with(json!({"url": "http://127.0.0.1/x.git"})), 422, "url"),
        (
            with(json!({"url": "https://user:secret@example.com/x.git"})),
            422,
            "url",
        ),
        (with(json!({"project_id": "../../etc"})), 422, "project_id"),
        (with(json!({"project_id": "noslash"})), 422, "project_id"),
        (
            with(json!({"mirror_branch_regex": "(unclosed"})),
            422,
            "mirror_branch_regex_config",
        ),
        (
            with(json!({"conflict_strategy": "sideways"})),
            422,
            "conflict_strategy",
        ),
        (
            with(json!({"conflict_strategy": "regex-filter"})),
            422,
            "conflict_strategy",
        ),
        (with(json!({"branch_filter": "nope"})), 422, "branch_filter"),
        (with(json!({"update_interval": -5})), 422, "update_interval"),
        (
            with(json!({"update_interval": "often"})),
            422,
            "update_interval",
        ),
        (with(json!({"auth_method": "magic"})), 422, "auth_method"),
        (with(json!({"enabled": "yes"})), 422, "enabled"),
        (
            with(json!({"keep_divergent_refs": true})),
            422,
            "keep_divergent_refs",
        ),
    ];
    for (body, status, field) in cases {
        let (got, err) = api.post("/api/v1/mirrors/pull", body.clone()).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["error"]["field"], field, "{body} -> {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field.trim_end_matches("_config"))
        );
    }
    let (got, err) = api
        .post("/api/v1/mirrors/pull", with(json!({"url": null})))
        .await;
    assert_eq!(got, 422, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("url"),
        "{err}"
    );

    let resp = crate::support::client()
        .post(server.url("/api/v1/mirrors/pull"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"project_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_json");

    let (status, listed) = api.get("/api/v1/mirrors").await;
    assert_eq!(status, 200);
    assert_eq!(listed["mirrors"], json!([]), "nothing was stored");

    for path in [
        "/api/v1/mirrors/999",
        "/api/v1/mirrors/abc",
        "/api/v1/mirrors/999/runs",
    ] {
        let (status, err) = api.get(path).await;
        assert_eq!(status, 404, "{path}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
    }
    let (status, _) = api.post("/api/v1/mirrors/999/sync", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn mirrors_are_listed_patched_and_deleted() {
    let server = Server::start(&[("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let api = Api::new(&server);
    let body = json!({"project_id": "acme/widgets", "url": "https://example.com/acme/widgets.git",
                      "update_interval": 300, "mirror_branch_regex": "^main$"});
    let id = api.create("pull", body).await;
    api.create(
        "push",
        json!({"project_id": "acme/widgets", "url": "git@example.org:acme/widgets.git",
                              "keep_divergent_refs": true}),
    )
    .await;
    api.create(
        "pull",
        json!({"project_id": "other/thing", "url": "https://example.com/o/t.git"}),
    )
    .await;
    // One upstream per project, as GitLab has it: a second pull mirror of it
    // is refused and stores nothing.
    let (status, err) = api
        .post(
            "/api/v1/mirrors/pull",
            json!({"project_id": "acme/widgets", "url": "https://example.com/acme/other.git"}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("already has pull mirror {id}")),
        "{err}"
    );
    let (_, listed) = api.get("/api/v1/mirrors?project_id=acme%2Fwidgets").await;
    let listed = listed["mirrors"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    // GitLab's status fields, before any run.
    assert_eq!(listed[0]["update_status"], "none", "{listed:?}");
    for field in [
        "last_update_started_at",
        "last_update_at",
        "last_successful_update_at",
        "last_error",
    ] {
        assert_eq!(listed[0][field], Value::Null, "{field}");
    }
    assert_eq!(listed[0]["direction"], "pull");
    assert_eq!(listed[1]["keep_divergent_refs"], true);

    let path = format!("/api/v1/mirrors/{id}");
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"mirror_branch_regex": null, "enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["mirror_branch_regex"], &patched["enabled"]),
        (&Value::Null, &json!(false))
    );
    assert_eq!(patched["update_interval"], 300);
    let (status, err) = api
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"conflict_strategy": "nope"})),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("conflict_strategy"))
    );
    let (_, unchanged) = api.get(&path).await;
    assert_eq!(
        unchanged["conflict_strategy"], "theirs",
        "a refused patch changes nothing"
    );
    let (status, _) = api.post(&format!("{path}/sync"), json!({})).await;
    assert_eq!(status, 409, "a disabled mirror is not synced");

    let (status, _) = api.call(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&path).await;
    assert_eq!(status, 404);
}

/// Lists come in pages, as GitLab's do: `page`/`per_page`, the X-* headers
/// and a Link header that keeps the filters; the filters narrow the count;
/// a parameter that does not parse is a 422 naming it.
#[tokio::test]
async fn mirrors_come_in_pages_and_filter_by_direction_enabled_and_state() {
    let server = Server::start(&[("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let api = Api::new(&server);
    for i in 0..25 {
        let body = json!({"project_id": format!("g/p{i}"), "url": format!("https://example.com/g/p{i}.git"),
                          "enabled": i % 5 != 0});
        api.create(if i % 2 == 0 { "pull" } else { "push" }, body)
            .await;
    }
    let get = |path: &str| {
        crate::support::client()
            .get(server.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let resp = get("/api/v1/mirrors?direction=pull&per_page=4&page=2")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("x-total"), "13");
    assert_eq!(header("x-total-pages"), "4");
    assert_eq!(
        (header("x-page"), header("x-per-page")),
        ("2".into(), "4".into())
    );
    assert_eq!(
        (header("x-prev-page"), header("x-next-page")),
        ("1".into(), "3".into())
    );
    assert!(
        header("link").contains("</api/v1/mirrors?direction=pull&per_page=4&page=3>; rel=\"next\""),
        "{}",
        header("link")
    );
    let page: Value = resp.json().await.unwrap();
    let ids: Vec<i64> = page["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mirror_id"].as_i64().unwrap())
        .collect();
    // Pull mirrors are the odd ids (0-based even i); the second page of four.
    assert_eq!(ids, [9, 11, 13, 15]);

    let (_, disabled) = api.get("/api/v1/mirrors?enabled=false&per_page=100").await;
    assert_eq!(disabled["mirrors"].as_array().unwrap().len(), 5);
    let (_, by_state) = api.get("/api/v1/mirrors?state=disabled&per_page=100").await;
    assert_eq!(by_state["mirrors"], disabled["mirrors"]);
    let (_, healthy) = api.get("/api/v1/mirrors?state=healthy&per_page=100").await;
    assert_eq!(healthy["mirrors"].as_array().unwrap().len(), 20);
    let (_, default_page) = api.get("/api/v1/mirrors").await;
    assert_eq!(default_page["mirrors"].as_array().unwrap().len(), 20);

    // Sorted as asked, ties by id; narrowed by a text in the project or URL.
    let ids_of = |page: &Value| -> Vec<i64> {
        page["mirrors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mirror_id"].as_i64().unwrap())
            .collect()
    };
    let (_, newest) = api
        .get("/api/v1/mirrors?order_by=id&sort=desc&per_page=3")
        .await;
    assert_eq!(ids_of(&newest), [25, 24, 23]);
    let (_, by_project) = api
        .get("/api/v1/mirrors?order_by=project_id&per_page=3")
        .await;
    // g/p0, g/p1, g/p10: text order.
    assert_eq!(ids_of(&by_project), [1, 2, 11]);
    let (_, by_state) = api.get("/api/v1/mirrors?order_by=state&per_page=5").await;
    assert_eq!(ids_of(&by_state), [1, 6, 11, 16, 21], "disabled sort first");
    let (_, found) = api.get("/api/v1/mirrors?search=p1&per_page=100").await;
    assert_eq!(ids_of(&found), [2, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);

    // Runs and conflicts page and filter the same way.
    for (list, status) in [("runs", "failed"), ("conflicts", "open")] {
        let path = format!("/api/v1/mirrors/1/{list}?status={status}&per_page=5");
        let resp = get(&path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-total"], "0", "{path}");
        let (status, err) = api
            .get(&format!("/api/v1/mirrors/1/{list}?status=sad"))
            .await;
        assert_eq!(
            (status, &err["error"]["field"]),
            (422, &json!("status")),
            "{err}"
        );
    }

    for (query, field) in [
        ("page=0", "page"),
        ("page=2147483648", "page"),
        ("per_page=101", "per_page"),
        ("state=sad", "state"),
        ("page=x", "page"),
        ("order_by=password", "order_by"),
        ("sort=sideways", "sort"),
        (&*format!("search={}", "x".repeat(256)), "search"),
    ] {
        let (status, err) = api.get(&format!("/api/v1/mirrors?{query}")).await;
        assert_eq!(status, 422, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
}
