//! A small WebDriver client for the console's browser tests: Debian's
//! `chromedriver` driving headless `chromium`, spoken to over its HTTP
//! protocol (W3C WebDriver) with the tests' own reqwest.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian puts the browser and its driver.
const DRIVER: &str = "/usr/bin/chromedriver";
const BROWSER: &str = "/usr/bin/chromium";

/// WebDriver's key codes.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// Set (as `.ci/run` sets it) to fail, not skip, where no browser is installed.
const REQUIRE: &str = "MIRRORHOST_REQUIRE_BROWSER";

/// A browser session; the driver process ends with it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// An element found on the page.
pub struct Element(String);

impl Browser {
    /// A headless browser, or `None` (said on stderr) where none is installed
    /// and the run does not require one.
    pub async fn start() -> Option<Self> {
        if !Path::new(DRIVER).exists() || !Path::new(BROWSER).exists() {
            assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set but {DRIVER} or {BROWSER} is missing \
                 (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: no {BROWSER} and {DRIVER}; install chromium and chromium-driver");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready
                && r.json::<Value>().await.unwrap()["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": BROWSER,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,960"]
            }
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"].as_str().unwrap().to_string();
        Some(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        let value = answer["value"].clone();
        assert!(
            value.get("error").is_none(),
            "webdriver {method} {path}: {value}"
        );
        value
    }

    async fn on_session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    pub async fn goto(&self, url: &str) {
        self.on_session("POST", "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        let value = self.on_session("GET", "/url", None).await;
        value.as_str().unwrap().to_string()
    }

    pub async fn source(&self) -> String {
        let value = self.on_session("GET", "/source", None).await;
        value.as_str().unwrap().to_string()
    }

    /// `endpoint` (`/element` or `/elements`) for the CSS selector `css`.
    async fn locate(&self, endpoint: &str, css: &str) -> Value {
        let by = json!({"using": "css selector", "value": css});
        self.on_session("POST", endpoint, Some(by)).await
    }

    /// The first element `css` selects; panics if there is none.
    pub async fn find(&self, css: &str) -> Element {
        let found = self.locate("/element", css).await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"));
        Element(id.to_string())
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        let found = self.locate("/elements", css).await;
        found.as_array().unwrap().len()
    }

    pub async fn click(&self, element: &Element) {
        self.on_session("POST", &format!("/element/{}/click", element.0), None)
            .await;
    }

    /// Clicks what leads to another page, and waits until the browser has
    /// loaded a page whose address `arrived` accepts (a click does not wait
    /// for the navigation it starts).
    pub async fn click_to(&self, element: &Element, arrived: impl Fn(&str) -> bool) {
        self.click(element).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.run("return document.readyState;").await == "complete";
            let url = self.url().await;
            if ready && arrived(&url) {
                return;
            }
            assert!(Instant::now() < deadline, "still on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_into(&self, element: &Element, text: &str) {
        let body = json!({"text": text});
        self.on_session("POST", &format!("/element/{}/value", element.0), Some(body))
            .await;
    }

    /// Presses and releases one key (a WebDriver key code such as
    /// [`TAB`] or [`ENTER`]) on whatever has the focus.
    pub async fn press(&self, key: &str) {
        let strokes = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
        ]}]});
        self.on_session("POST", "/actions", Some(strokes)).await;
    }

    /// Moves the focus with Tab until it is on the control whose text is
    /// `label`, as a keyboard user does; panics if Tab never gets there.
    pub async fn tab_to(&self, label: &str) {
        for _ in 0..60 {
            self.press(TAB).await;
            let focused = self
                .run("return document.activeElement.innerText || '';")
                .await;
            if focused.as_str() == Some(label) {
                return;
            }
        }
        panic!("Tab never reaches {label:?}");
    }

    pub async fn text(&self, element: &Element) -> String {
        let value = self
            .on_session("GET", &format!("/element/{}/text", element.0), None)
            .await;
        value.as_str().unwrap().to_string()
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn run(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.on_session("POST", "/execute/sync", Some(body)).await
    }

    /// Waits until the page's source holds `needle`, reloading as it goes
    /// (the console's script reloads too, when a run ends).
    pub async fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.source().await.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the page never showed {needle:?}: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.on_session("POST", "/refresh", None).await;
        }
    }

    /// Saves a PNG of the window as `name`.png under the screenshot directory.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.on_session("GET", "/screenshot", None).await;
        let bytes = openssl::base64::decode_block(png.as_str().unwrap()).unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// `target/tmp/console-screenshots`: kept after the run, for a person to look at.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own process group, the browser in it: one
        // signal ends both, even when a test failed mid-session.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}
