//! The web dashboard: its files served with strict headers, and the whole flow in headless Chromium over
//! WebDriver (log in, a validation error beside its field, deploy against the simulator, the list updating
//! without a reload, the live log, destroy with confirmation), saving screenshots of each view.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::{tool, TestApp, ADMIN};

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_strict_headers() {
    let app = TestApp::spawn().await;
    let c = reqwest::Client::new();
    let page = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let hdr = |r: &reqwest::Response, n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(hdr(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(hdr(&page, "cache-control"), "no-cache");
    assert_eq!(hdr(&page, "x-content-type-options"), "nosniff");
    expect_test::expect![[r#"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"#]]
        .assert_eq(&hdr(&page, "content-security-policy"));
    let etag = hdr(&page, "etag");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js"></script>"#), "{html}");
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style: the CSP would block it");

    for (name, ty) in [("app.js", "text/javascript; charset=utf-8"), ("api.js", "text/javascript; charset=utf-8"), ("views.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"), ("icon.svg", "image/svg+xml")] {
        let r = c.get(app.url(&format!("/assets/{name}"))).send().await.unwrap();
        assert_eq!((r.status().as_u16(), hdr(&r, "content-type")), (200, ty.to_string()), "{name}");
        assert!(hdr(&r, "content-security-policy").starts_with("default-src 'self'"), "{name}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("url(http") && !body.contains("import 'http") && !body.contains("from 'http"), "{name}: nothing from another origin");
    }
    // revalidation: the same version answers 304 without a body
    let again = c.get(app.url("/")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    // only the listed files: no screenshots, no path tricks
    for path in ["/assets/screenshots", "/assets/..%2Fsrc%2Fweb.rs", "/assets/nope.js"] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // the API is where it was, and still wants a token
    let (s, _) = app.get("/api/v1/deployments", None).await;
    assert_eq!(s, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_change_stream_reports_every_status_change_live() {
    use futures_util::StreamExt;
    let app = TestApp::spawn().await;
    let (s, _) = app.get("/api/v1/events", None).await;
    assert_eq!(s, 401, "the stream needs a token");
    let resp = app.client.get(app.url("/api/v1/events")).bearer_auth(crate::helpers::READER).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    // changes made after the stream opened arrive on it
    let id = app.create("streamed").await["id"].as_str().unwrap().to_string();
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    let mut text = String::new();
    while !text.contains(r#""status":"destroyed""#) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("events in time").expect("stream open").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let seen: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let statuses: Vec<&str> = seen.iter().filter(|e| e["deployment"] == id.as_str()).map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.first(), Some(&"pending"), "{text}");
    assert!(statuses.ends_with(&["destroying", "destroyed"]), "{statuses:?}");
    assert!(text.contains("event: status"), "{text}");
    drop(body);
    app.stop().await;
}

// ---------- A minimal W3C WebDriver client (JSON over HTTP) ----------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver started by the test, with one Chromium session; both stopped in `Drop`, even on failure.
struct Browser {
    http: reqwest::Client,
    driver: String,
    session: String,
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(chromium: &std::path::Path, chromedriver: &std::path::Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1").stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("chromedriver starts");
        let driver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let profile = tempfile::tempdir().unwrap();
        let mut ready = false;
        // Up to 60 s: a cold chromedriver on a loaded CI machine is slow to listen.
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{driver}/status")).send().await {
                if r.json::<Value>().await.ok().and_then(|v| v["value"]["ready"].as_bool()) == Some(true) {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut b = Browser { http, driver, session: String::new(), child, _profile: profile };
        assert!(ready, "chromedriver never became ready");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}}}});
        let r = b.call("POST", "/session", caps).await;
        b.session = r["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    /// One WebDriver command; `Err` with the driver's error object when it refused.
    async fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = if path == "/session" { format!("{}{path}", self.driver) } else { format!("{}/session/{}{path}", self.driver, self.session) };
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.expect("webdriver answers").json().await.expect("webdriver json");
        if v["value"]["error"].is_string() {
            return Err(v["value"].clone());
        }
        Ok(v["value"].clone())
    }

    async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url})).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self.wait(&format!("document.querySelector({css:?}) !== null"), css).await;
        drop(v);
        let e = self.call("POST", "/element", json!({"using": "css selector", "value": css})).await;
        e[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks the element `css` selects. The page re-renders live (a status change redraws the list),
    /// so an element found a moment ago may be gone: it is then found again, as a user would look again;
    /// one covered for a moment (a toast sliding in) is clicked once it is uncovered, as a user would wait.
    async fn click(&self, css: &str) {
        let mut last = Value::Null;
        for _ in 0..100 {
            let e = self.find(css).await;
            match self.try_call("POST", &format!("/element/{e}/click"), json!({})).await {
                Ok(_) => return,
                Err(err) if err["error"] == "stale element reference" || err["error"] == "element click intercepted" => {
                    last = err;
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(err) => panic!("webdriver click {css}: {err}"),
            }
        }
        panic!("{css} could not be clicked within 10 s: {last}");
    }

    /// Replaces an input's text by typing it.
    async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call("POST", &format!("/element/{e}/clear"), json!({})).await;
        self.call("POST", &format!("/element/{e}/value"), json!({"text": text})).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Polls a JavaScript expression until it is truthy; returns its value (the page's text on failure).
    async fn wait(&self, expr: &str, what: &str) -> Value {
        self.wait_secs(expr, what, 60).await
    }

    /// As `wait`, for up to `secs` seconds.
    /// A script error (the page in the middle of a navigation) counts as not yet, and is shown if it lasts.
    async fn wait_secs(&self, expr: &str, what: &str, secs: u64) -> Value {
        let mut last_error = Value::Null;
        for _ in 0..secs * 10 {
            match self.try_call("POST", "/execute/sync", json!({"script": format!("return ({expr});"), "args": []})).await {
                Ok(v) if !(v.is_null() || v == false || v == "" || v == 0) => return v,
                Ok(_) => last_error = Value::Null,
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = self.js("return document.body.innerText").await;
        panic!("waited in vain for {what} ({expr}); last script error: {last_error}; page:\n{}", text.as_str().unwrap_or_default());
    }

    /// Sets the viewport exactly (device metrics emulation), `mobile` for phone widths.
    async fn viewport(&self, width: u32, height: u32) {
        let mobile = width < 600;
        self.call("POST", "/goog/cdp/execute", json!({"cmd": "Emulation.setDeviceMetricsOverride",
            "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}})).await;
    }

    /// Saves a PNG of the viewport as `web/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        // let the layout settle after the last DOM change (two animation frames)
        self.call("POST", "/execute/async", json!({"script": "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(1)));", "args": []})).await;
        let b64 = self.call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium runs in chromedriver's process group: stop the whole group we started, then reap chromedriver.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this test created; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = tool("chromium")?;
    let chromedriver = tool("chromedriver")?;
    Some((chromium, chromedriver))
}

const VIEWS: [(&str, &str, &str); 5] = [
    ("dashboard", "#/", ".stat"),
    ("deploy", "#/deploy", "#deploy-form"),
    ("deployments", "#/deployments", "table.list"),
    ("detail", "", "#log span"),
    ("resources", "#/resources", ".nodes"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deploys_watches_and_destroys_from_the_browser() {
    let Some((chromium, chromedriver)) = browser_tools() else { return };
    // real guests: the app really runs and answers at the URL the page shows
    let dir = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&dir.path().join("keys")).unwrap();
    let Some(rig) = crate::rig::start_real_sim(&key.public_openssh).await else { return };
    let server = crate::rig::GitServer::start().await;
    let flask = server.repo("octo/web", "flask");
    let app = crate::rig::agent_with(rig.sim(), dir.path(), &server.host, |c| {
        if let pvedeploy::config::ProxmoxSetting::Cluster(cs) = &mut c.proxmox {
            cs.backups = Some(pvedeploy::config::BackupSettings::to("local"));
        }
    })
    .await;
    let b = Browser::start(&chromium, &chromedriver).await;
    b.viewport(1280, 800).await;

    // log in: a wrong token is refused in words, the right one opens the dashboard
    b.goto(&app.url("/")).await;
    b.fill("#token", "not-a-valid-token-at-all").await;
    b.click("#login button[type=submit]").await;
    let msg = b.wait("document.querySelector('#token-error').textContent", "the refusal").await;
    assert_eq!(msg, "This token was not accepted.");
    b.screenshot("login-desktop").await;
    b.fill("#token", ADMIN).await;
    b.click("#login button[type=submit]").await;
    b.wait("!document.querySelector('#nav').hidden && document.querySelector('.stat')", "the dashboard").await;
    assert_eq!(b.js("return sessionStorage.getItem('pvedeploy.token')").await, ADMIN, "kept for this tab only");

    // a bad name: the API's rule appears next to the field, nothing is created
    b.click("nav a[href='#/deploy']").await;
    // the choices are the API's own lists, as its OpenAPI document states them
    let options = |select: &str| format!("document.querySelector('{select}').options.length > 1 && [...document.querySelector('{select}').options].map((o) => o.value).join(' ')");
    let frameworks = b.wait(&options("#f-framework"), "the frameworks").await;
    assert_eq!(frameworks, pvedeploy::core::deployment::Framework::NAMES.join(" "));
    assert_eq!(b.wait(&options("#f-type"), "the guest types").await, pvedeploy::core::deployment::GuestType::NAMES.join(" "));
    assert_eq!(b.js("return document.querySelector('#f-framework').value").await, "flask", "the default framework");
    b.fill("#f-name", "Bad_Name!").await;
    b.fill("#f-repo_url", &flask.url).await;
    b.fill("#f-cpu", "2").await;
    b.click("#deploy-form button[type=submit]").await;
    let err = b.wait("document.querySelector('#err-name').textContent", "the name's error").await;
    let err = err.as_str().unwrap();
    assert!(err.starts_with("name ") && err.contains("lowercase"), "{err}");
    assert_eq!(b.js("return document.querySelector('#f-name').getAttribute('aria-invalid')").await, "true");
    assert_eq!(b.js("return document.activeElement.id").await, "f-name", "focus moves to the wrong field");
    assert_eq!(b.js("return document.querySelector('#err-repo_url').textContent").await, "", "only wrong fields are marked");
    assert_eq!(app.count_deployments().await, 0, "a rejected request stores nothing");
    b.screenshot("deploy-error-desktop").await;

    // a good one, with an environment variable: lands on the detail page
    b.fill("#f-name", "web-one").await;
    b.fill("#f-repo_url", &flask.url).await;
    b.js("const t = document.querySelector('#f-type'); t.value = 'lxc'; t.dispatchEvent(new Event('change')); return 1").await;
    b.click("fieldset.env button").await;
    b.fill("#env-n-0", "GREETING").await;
    b.fill("#env-v-0", "hello").await;
    b.click("#deploy-form button[type=submit]").await;
    let hash = b.wait("location.hash.startsWith('#/deployments/') && location.hash", "the detail page").await;
    let id = hash.as_str().unwrap().trim_start_matches("#/deployments/").to_string();
    let (s, env) = app.get(&format!("/api/v1/deployments/{id}/env"), Some(ADMIN)).await;
    assert_eq!((s, env.clone()), (200, json!({"names": ["GREETING"]})), "{env}");

    // the list follows the deployment to `running` without a reload; the app answers at the URL shown
    b.click("nav a[href='#/deployments']").await;
    b.find("tr[data-name='web-one']").await;
    let statuses = b.wait(&options("#filter-status"), "the statuses").await;
    assert_eq!(statuses, format!(" {}", pvedeploy::core::status::Status::NAMES.join(" ")), "any, then the API's statuses");
    b.js("window.__notReloaded = true; return 1").await;
    b.wait_secs("['running','failed'].includes(document.querySelector(\"tr[data-name='web-one']\").dataset.status) && document.querySelector(\"tr[data-name='web-one']\").dataset.status", "running on the list", 900).await;
    assert_eq!(b.js("return document.querySelector(\"tr[data-name='web-one']\").dataset.status").await, "running");
    assert_eq!(b.js("return window.__notReloaded === true").await, true, "the page was not reloaded");
    let row = b.js("return document.querySelector(\"tr[data-name='web-one']\").innerText").await;
    let (_, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    let url = d["url"].as_str().unwrap().to_string();
    assert!(row.as_str().unwrap().contains(&url) && row.as_str().unwrap().contains("pve"), "the URL and node are shown: {row}");
    assert_eq!(crate::rig::http_body(&url).await, "hello from flask v1\n");
    assert_eq!(crate::rig::http_body(&format!("{url}/env/GREETING")).await, "hello", "the variable set in the form reached the app");

    // its log (live stream) and timeline on the detail page
    b.click("tr[data-name='web-one'] a.name").await;
    let log = b.wait("document.querySelector('#log').textContent.includes('provision') && document.querySelector('#log').textContent", "log lines").await;
    assert!(log.as_str().unwrap().contains("request"), "{log}");
    b.wait("document.querySelectorAll('.timeline li').length >= 3", "the timeline").await;
    b.wait("document.querySelector('.env-names').textContent.includes('GREETING')", "the env names").await;
    b.click("#tf-show").await;
    b.wait("document.querySelectorAll('#terraform details').length >= 4", "the Terraform files").await;
    b.js("document.querySelector('#terraform details').open = true; return 1").await;

    // snapshots and backups on the detail page: take each from the page; a snapshot's rollback and delete, a
    // backup's restores and delete are offered beside it; deleting the snapshot asks first
    b.fill("#snap-name", "before-change").await;
    b.click("#snap-take button[type=submit]").await;
    b.find("#snap-list li[data-snapshot='before-change'] button[aria-label='Rollback to before-change']").await;
    b.click("button[aria-label='Take backup']").await;
    let backup = b.wait_secs("document.querySelector('#backup-list li[data-backup]') && document.querySelector('#backup-list li[data-backup]').dataset.backup", "a backup listed", 300).await;
    let backup = backup.as_str().unwrap().to_string();
    for label in [format!("Restore {backup}"), format!("Restore {backup} as new"), format!("Delete backup {backup}")] {
        b.find(&format!("button[aria-label='{label}']")).await;
    }
    let (_, listed) = app.get(&format!("/api/v1/deployments/{id}/backups"), Some(ADMIN)).await;
    assert_eq!(listed["items"][0]["name"], backup.as_str(), "{listed}");
    b.click("button[aria-label='Delete snapshot before-change']").await;
    b.wait("document.querySelector('#confirm').open", "the confirmation").await;
    b.click("#confirm-ok").await;
    b.wait("!document.querySelector(\"#snap-list li[data-snapshot='before-change']\")", "the snapshot gone").await;

    // screenshots of every view, desktop then phone
    for (w, h, suffix) in [(1280, 800, "desktop"), (390, 844, "phone")] {
        b.viewport(w, h).await;
        for (name, hash, ready) in VIEWS {
            let target = if hash.is_empty() { format!("#/deployments/{id}") } else { hash.to_string() };
            b.js(&format!("location.hash = {target:?}; return 1")).await;
            b.wait(&format!("document.querySelector({ready:?})"), name).await;
            b.js("document.querySelectorAll('.toast').forEach(t => t.remove()); return 1").await;
            b.screenshot(&format!("{name}-{suffix}")).await;
        }
    }
    b.viewport(1280, 800).await;

    // destroy, confirmed in the dialog
    b.js("location.hash = '#/deployments'; return 1").await;
    b.click("button[aria-label='Destroy web-one']").await;
    b.wait("document.querySelector('#confirm').open", "the confirmation").await;
    b.screenshot("destroy-confirm-desktop").await;
    b.click("#confirm-ok").await;
    b.wait("['destroying','destroyed'].includes(document.querySelector(\"tr[data-name='web-one']\").dataset.status)", "destroying on the list").await;
    crate::rig::wait_for(&app, &id, "destroyed", Duration::from_secs(180), |d| d["status"] == "destroyed").await;
    b.wait("document.querySelector(\"tr[data-name='web-one']\").dataset.status === 'destroyed'", "destroyed on the list").await;
    b.wait("[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('destroyed'))", "a toast").await;

    drop(b);
    app.stop().await;
    rig.stop().await;
    drop(server);
}
