//! The operator's console: sessions, CSRF, the security headers and the
//! escaping of what remotes and scripts put in the records, over HTTP; then
//! an operator's round in a real browser (headless Chromium).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Api, Server, Upstream, git, local_server, mirror_with_rewritten_main,
    project_repo, slow_mirror, slow_upstream,
};
use crate::webdriver::{Browser, ENTER, screenshot_dir};

/// A client that shows redirects instead of following them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A form body, as a browser sends it.
fn encode(form: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(form).unwrap()
}

/// A signed-in operator: the session cookie, and the CSRF token its pages carry.
pub struct Operator {
    pub cookie: String,
    pub csrf: String,
}

/// `POST /login` with `token`, as the login form sends it.
async fn post_login(server: &Server, token: &str) -> reqwest::Response {
    http()
        .post(server.url("/login"))
        .header(CONTENT_TYPE, FORM)
        .body(encode(&[("token", token)]))
        .send()
        .await
        .unwrap()
}

pub async fn login(server: &Server) -> Operator {
    let answer = post_login(server, ADMIN_TOKEN).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let set = answer.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get_page(server, &cookie, "/").await;
    let csrf = regex::Regex::new(r#"name="csrf" value="([0-9a-f]{64})""#)
        .unwrap()
        .captures(&page)
        .expect("a signed-in page carries the CSRF token")[1]
        .to_string();
    Operator { cookie, csrf }
}

/// `GET path` with the session `cookie`, redirects shown, not followed.
async fn get_as(server: &Server, cookie: &str, path: &str) -> reqwest::Response {
    http()
        .get(server.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

async fn get_page(server: &Server, cookie: &str, path: &str) -> String {
    let answer = get_as(server, cookie, path).await;
    assert_eq!(answer.status(), StatusCode::OK, "GET {path}");
    answer.text().await.unwrap()
}

pub async fn post_form(
    server: &Server,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    http()
        .post(server.url(path))
        .header(COOKIE, cookie)
        .header(CONTENT_TYPE, FORM)
        .body(encode(form))
        .send()
        .await
        .unwrap()
}

fn redirected_to(answer: &reqwest::Response) -> &str {
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    answer.headers()[LOCATION].to_str().unwrap()
}

/// A pull mirror of `project`, synced once: its upstream, id and run.
async fn synced_mirror(api: &Api<'_>, project: &str) -> (Upstream, i64, i64) {
    let up = Upstream::with_main();
    let id = api
        .create("pull", json!({"project_id": project, "url": up.url()}))
        .await;
    let run = api.sync(id).await["run_id"].as_i64().unwrap();
    (up, id, run)
}

/// No inline script, no inline style, nothing from another origin.
fn assert_strict_page(path: &str, page: &str) {
    let inline_script = regex::Regex::new(r"<script(?:\s[^>]*)?>").unwrap();
    for tag in inline_script.find_iter(page) {
        assert!(
            tag.as_str().contains("src=\"/console/"),
            "{path}: {}",
            tag.as_str()
        );
    }
    for needle in [
        " style=",
        "<style",
        " onclick=",
        " onload=",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!page.contains(needle), "{path} holds {needle:?}");
    }
}

/// On the login page: types the admin token into the field, which has the
/// focus, sends the form with Enter, and waits for the mirrors table.
async fn log_in_by_keyboard(browser: &Browser) {
    let token = browser.find("input[name=token]").await;
    browser.type_into(&token, ADMIN_TOKEN).await;
    browser.press(ENTER).await;
    browser
        .wait_for("<h1>Mirrors</h1>", Duration::from_secs(20))
        .await;
}

#[tokio::test]
async fn nothing_of_the_console_is_reached_without_a_session() {
    let server = local_server();
    let api = Api::new(&server);
    let (_up, id, run) = synced_mirror(&api, "c/locked").await;
    for path in [
        "/".to_string(),
        format!("/mirrors/{id}"),
        format!("/runs/{run}"),
        format!("/runs/{run}/progress"),
        "/queue".into(),
        "/plugins".into(),
        "/console/console.js".into(),
    ] {
        let answer = http().get(server.url(&path)).send().await.unwrap();
        assert_eq!(redirected_to(&answer), "/login", "GET {path}");
    }
    for path in [
        format!("/mirrors/{id}/sync"),
        format!("/mirrors/{id}/pause"),
        format!("/runs/{run}/cancel"),
    ] {
        let answer = post_form(&server, "mirrorhost_session=forged", &path, &[]).await;
        assert_eq!(redirected_to(&answer), "/login", "POST {path}");
    }
    let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "no run was queued"
    );

    // A wrong token buys nothing.
    let wrong = post_login(&server, "not-the-token").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(wrong.text().await.unwrap().contains("not the admin token"));
}

#[tokio::test]
async fn a_session_is_a_strict_cookie_and_every_form_needs_its_token() {
    let server = local_server();
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = api
        .create("pull", json!({"project_id": "c/forms", "url": up.url()}))
        .await;
    let login_answer = post_login(&server, ADMIN_TOKEN).await;
    let cookie = login_answer.headers()[SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let op = login(&server).await;

    // Without the token, or with another session's, the form does nothing.
    let other = login(&server).await;
    for form in [vec![], vec![("csrf", other.csrf.as_str())]] {
        let answer = post_form(&server, &op.cookie, &format!("/mirrors/{id}/sync"), &form).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    }
    let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
    assert_eq!(runs["runs"], json!([]), "a forged form queued nothing");

    // With it, the run is queued and its page shows it.
    let form = [("csrf", op.csrf.as_str())];
    let answer = post_form(&server, &op.cookie, &format!("/mirrors/{id}/sync"), &form).await;
    let run_page = redirected_to(&answer).to_string();
    assert!(run_page.starts_with("/runs/"), "{run_page}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = get_page(&server, &op.cookie, &run_page).await;
        if page.contains("run-succeeded") {
            assert!(page.contains("refs/heads/main"), "{page}");
            assert!(page.contains("<td>create</td>"), "{page}");
            break;
        }
        assert!(Instant::now() < deadline, "the run never finished: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause and resume are the mirror's `enabled`.
    let answer = post_form(&server, &op.cookie, &format!("/mirrors/{id}/pause"), &form).await;
    assert_eq!(redirected_to(&answer), format!("/mirrors/{id}"));
    assert_eq!(
        api.get(&format!("/api/v1/mirrors/{id}")).await.1["enabled"],
        false
    );
    let page = get_page(&server, &op.cookie, &format!("/mirrors/{id}")).await;
    assert!(page.contains(">Resume</button>"), "{page}");
    post_form(&server, &op.cookie, &format!("/mirrors/{id}/resume"), &form).await;
    assert_eq!(
        api.get(&format!("/api/v1/mirrors/{id}")).await.1["enabled"],
        true
    );

    // Logout ends the session on the server, whatever the browser keeps.
    let answer = post_form(&server, &op.cookie, "/logout", &form).await;
    assert_eq!(redirected_to(&answer), "/login");
    let after = get_as(&server, &op.cookie, "/").await;
    assert_eq!(redirected_to(&after), "/login");
    get_page(&server, &other.cookie, "/").await;
}

#[tokio::test]
async fn every_page_forbids_inline_script_and_escapes_what_it_shows() {
    let server = local_server();
    let api = Api::new(&server);
    let (_up, id, run) = synced_mirror(&api, "c/escape").await;
    // A script reports an update with an error of its choosing.
    let hostile = "<script>alert('owned')</script><img src=x onerror=alert(1)>";
    let (status, _) = api
        .post(
            &format!("/api/v1/mirrors/{id}/runs"),
            json!({"success": false, "duration_ms": 5, "error": hostile}),
        )
        .await;
    assert_eq!(status, 201);
    let op = login(&server).await;
    for path in [
        "/".to_string(),
        "/?q=c%2Fescape&state=failing&order_by=last_update_at&sort=desc".into(),
        format!("/mirrors/{id}"),
        format!("/runs/{run}"),
        "/queue".into(),
        "/plugins".into(),
        "/login".into(),
    ] {
        let answer = get_as(&server, &op.cookie, &path).await;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let csp = answer.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_string();
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        let page = answer.text().await.unwrap();
        assert!(
            !page.contains("<script>alert"),
            "{path} let the script through"
        );
        assert!(!page.contains("<img"), "{path} let the image through");
        assert_strict_page(&path, &page);
    }
    let page = get_page(&server, &op.cookie, "/?state=failing").await;
    assert!(
        page.contains("&lt;script&gt;alert(&#39;owned&#39;)"),
        "{page}"
    );
    assert!(
        page.contains("c/escape"),
        "the failing mirror is listed: {page}"
    );
    let healthy = get_page(&server, &op.cookie, "/?state=healthy").await;
    assert!(!healthy.contains("c/escape"), "{healthy}");

    // A choice the table does not offer is refused by name.
    let answer = get_as(&server, &op.cookie, "/?order_by=password").await;
    assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.text().await.unwrap().contains("order_by"));
}

/// An operator's round, in a real browser: log in, find the mirror, sync it
/// and watch the run land, resolve the conflict it opened, log out.
#[tokio::test]
async fn an_operator_syncs_and_resolves_a_conflict_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let server = local_server();
    let api = Api::new(&server);
    let (up, id, rewritten) = mirror_with_rewritten_main(&api, "team/console").await;

    let dest = tempfile::tempdir().unwrap();
    let others = mirrors_in_other_states(&api, &up, dest.path()).await;

    browser.goto(&server.url("/")).await;
    assert!(
        browser.url().await.ends_with("/login"),
        "no session, no console"
    );
    browser.screenshot("1-login").await;
    assert_accessible(&browser, "login").await;
    log_in_by_keyboard(&browser).await;
    assert_eq!(browser.url().await, server.url("/"));
    assert_accessible(&browser, "mirrors").await;
    let row = browser
        .text(&browser.find("table.mirrors tbody tr").await)
        .await;
    assert!(
        row.contains("team/console") && row.contains("healthy"),
        "{row}"
    );
    for (id, words) in others {
        let script = format!(
            "return document.querySelector(\"a[href='/mirrors/{id}']\").closest('tr').innerText;"
        );
        let row = browser.run(&script).await.as_str().unwrap().to_string();
        assert!(row.contains(words), "mirror {id}: {row}");
    }
    browser.screenshot("2-mirrors").await;

    let link = browser.find(&format!("a[href='/mirrors/{id}']")).await;
    browser
        .click_to(&link, |u| u.ends_with(&format!("/mirrors/{id}")))
        .await;
    assert_accessible(&browser, "mirror").await;
    // Sync now, by keyboard, shows the run it queued.
    browser.tab_to("Sync now").await;
    browser.press(ENTER).await;
    browser.wait_for("<h1>Run #", Duration::from_secs(20)).await;
    browser
        .wait_for("run-succeeded", Duration::from_secs(60))
        .await;
    assert_accessible(&browser, "run").await;
    let refs = browser.text(&browser.find("table.refs").await).await;
    assert!(
        refs.contains("refs/heads/main") && refs.contains("manual"),
        "{refs}"
    );
    browser.screenshot("3-run").await;

    browser.goto(&server.url(&format!("/mirrors/{id}"))).await;
    assert_eq!(browser.count("#conflicts ~ table tbody tr").await, 1);
    browser.screenshot("4-conflict").await;
    let buttons = browser.count("form[action$='/resolve'] button").await;
    assert_eq!(buttons, 2, "keep ours, take theirs");
    let theirs = browser
        .find("form[action$='/resolve']:nth-of-type(2) button")
        .await;
    assert_eq!(browser.text(&theirs).await, "Take theirs");
    browser
        .click_to(&theirs, |u| u.ends_with("#conflicts"))
        .await;
    let settled = browser.source().await;
    assert!(
        settled.contains("<p>None.</p>"),
        "the conflict is settled: {settled}"
    );
    let main = git(
        &project_repo(&server, "team/console"),
        &["rev-parse", "main"],
    );
    assert_eq!(main.trim(), rewritten);

    let logout = browser.find("form.logout button").await;
    browser.click_to(&logout, |u| u.ends_with("/login")).await;
    browser.goto(&server.url("/")).await;
    assert!(
        browser.url().await.ends_with("/login"),
        "logged out for good"
    );
    eprintln!("screenshots in {}", screenshot_dir().display());
}

/// What a screen reader and a keyboard need of a page: one `h1`, a
/// language, a `main`; every control labelled, every link and button named,
/// every table with column headers.
async fn assert_accessible(browser: &Browser, page: &str) {
    let found = browser
        .run(
            "const all = (q) => [...document.querySelectorAll(q)];
             return {
               h1: all('h1').length,
               lang: document.documentElement.lang,
               main: all('main').length,
               unlabelled: all('input:not([type=hidden]), select, textarea')
                 .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
                 .map(e => e.outerHTML),
               nameless: all('a, button')
                 .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label'))
                 .map(e => e.outerHTML),
               headless: all('table')
                 .filter(t => !t.querySelector('thead th[scope=col]'))
                 .map(t => t.outerHTML.slice(0, 80)),
             };",
        )
        .await;
    let expected = json!({"h1": 1, "lang": "en", "main": 1,
                          "unlabelled": [], "nameless": [], "headless": []});
    assert_eq!(found, expected, "{page} page");
}

/// Mirrors beside the one the operator works on, as a table shows them: a
/// push mirror that succeeded, one whose updates fail, one paused; each
/// with what its row must say.
async fn mirrors_in_other_states(
    api: &Api<'_>,
    up: &Upstream,
    dir: &std::path::Path,
) -> Vec<(i64, &'static str)> {
    let dest = crate::support::bare_repo(dir, "dest.git");
    let push = api
        .create(
            "push",
            json!({"project_id": "team/console", "url": format!("file://{}", dest.display())}),
        )
        .await;
    assert_eq!(api.sync(push).await["status"], "succeeded");
    let failing = api
        .create("pull", json!({"project_id": "team/flaky", "url": up.url()}))
        .await;
    for (success, error) in [(true, None), (false, Some("fatal: the remote end hung up"))] {
        let body = json!({"success": success, "duration_ms": 2300, "error": error});
        let (status, _) = api
            .post(&format!("/api/v1/mirrors/{failing}/runs"), body)
            .await;
        assert_eq!(status, 201);
    }
    let paused = api
        .create(
            "pull",
            json!({"project_id": "team/archive", "url": up.url(), "enabled": false}),
        )
        .await;
    vec![
        (push, "healthy"),
        (failing, "failing"),
        (failing, "50%"),
        (failing, "the remote end hung up"),
        (failing, "1 in a row, since"),
        (paused, "paused"),
    ]
}

/// 20,000 mirrors: the first page of the table is in the browser, whole,
/// in under a second.
#[tokio::test]
async fn the_first_page_of_twenty_thousand_mirrors_renders_in_under_a_second() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    seed_mirrors(data.path(), 20_000);
    let server = Server::start_in(data, crate::support::LOCAL_REMOTES);
    browser.goto(&server.url("/login")).await;
    let token = browser.find("input[name=token]").await;
    browser.type_into(&token, ADMIN_TOKEN).await;
    let button = browser.find("form.login button").await;
    let home = server.url("/");
    browser.click_to(&button, |u| u == home).await;
    // Once warm, as an operator's second look is.
    browser.goto(&server.url("/")).await;
    let took = browser
        .run("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;")
        .await
        .as_f64()
        .unwrap();
    let count = browser.text(&browser.find("p.count").await).await;
    assert_eq!(count, "20000 mirrors");
    assert_eq!(browser.count("table.mirrors tbody tr").await, 50);
    eprintln!("first page of 20000 mirrors: {took:.0} ms");
    assert!(took < 1000.0, "the first page took {took:.0} ms");
    browser.screenshot("5-twenty-thousand").await;
}

/// `n` pull mirrors written straight into a new data dir's database.
fn seed_mirrors(data: &std::path::Path, n: usize) {
    use mirrorhost::store::{MirrorSettings, mirrors};
    let store = crate::support::store_of(data);
    for i in 0..n {
        let url = format!("https://git.example.com/group-{}/repo-{i}.git", i % 97);
        let settings = MirrorSettings::pull(
            &format!("group-{}/repo-{i}", i % 97),
            &url,
            "git.example.com",
        );
        store.with(|c| mirrors::insert(c, &settings)).unwrap();
    }
}

/// A run in progress: its page's script keeps the progress fresh without a
/// reload, the queue lists it, and its Cancel button stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_shows_live_progress_and_is_cancelled_from_its_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let http = slow_upstream(root.path()).await;
    let server = local_server();
    let api = Api::new(&server);
    let id = slow_mirror(&api, &http.url("big.git"), "team/slow").await;
    browser.goto(&server.url("/login")).await;
    log_in_by_keyboard(&browser).await;
    let run = api.queue(id).await;

    browser.goto(&server.url("/queue")).await;
    browser
        .wait_for(&format!("href=\"/runs/{run}\""), Duration::from_secs(20))
        .await;
    browser.goto(&server.url(&format!("/runs/{run}"))).await;
    browser.wait_for("data-run=", Duration::from_secs(20)).await;
    // A mark the page keeps only as long as it is not reloaded.
    browser.run("window.unreloaded = true; return null;").await;
    // The line says the bytes moved so far; big objects arrive one by one,
    // so the bytes move where the object count may not.
    let line = || async {
        let script = "const line = document.querySelector('[data-run] span'); \
                      return line ? line.textContent : document.body.innerText;";
        browser.run(script).await.as_str().unwrap().to_string()
    };
    let first = line().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = line().await;
        assert!(now.contains(" objects, "), "no progress on the page: {now}");
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "the progress never moved: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = browser.run("return window.unreloaded === true;").await;
    assert_eq!(kept, true, "the progress moved without a reload");
    browser.screenshot("6-progress").await;

    let cancel = browser
        .find(&format!("form[action='/runs/{run}/cancel'] button"))
        .await;
    browser
        .click_to(&cancel, |u| u.ends_with(&format!("/runs/{run}")))
        .await;
    browser
        .wait_for("run-cancelled", Duration::from_secs(20))
        .await;
    let (_, record) = api.get(&format!("/api/v1/runs/{run}")).await;
    assert_eq!(record["status"], "cancelled", "{record}");
}
