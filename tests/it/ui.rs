//! The status page at `/ui/`: sign-in and its cookie over plain HTTP (reqwest), then every page
//! in a real headless Chromium — no console error, the usage chart showing the requests the
//! test made, an account disabled through the admin API showing as disabled after a refresh —
//! and the page's weight and latency beside the snapshot endpoint's.

use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::browser::Browser;
use relayd_tests::http::{Reply, send};
use relayd_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn ask(app: &TestApp, key: &str, model: &str) -> Reply {
    let body = json!({"model": model, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let request = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key);
    send(request.json(&body)).await
}

/// Signs in with `token`: the reply (a 303 with the cookie, or the form again).
async fn sign_in(app: &TestApp, token: &str) -> Reply {
    send(
        client()
            .post(app.url("/ui/login"))
            .form(&[("token", token)]),
    )
    .await
}

/// The `name=value` part of the session cookie a successful sign-in set.
fn session_cookie(reply: &Reply) -> String {
    let set = reply
        .headers
        .get("set-cookie")
        .unwrap_or_else(|| panic!("no cookie set: {reply:?}"))
        .to_str()
        .expect("ascii");
    set.split(';').next().expect("name=value").to_owned()
}

async fn get_with(app: &TestApp, path: &str, cookie: &str) -> Reply {
    send(client().get(app.url(path)).header("cookie", cookie)).await
}

fn location(reply: &Reply) -> &str {
    reply
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_signed_http_only_cookie_and_everything_else_redirects() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let viewer_file = dir.path().join("viewer.token");
    std::fs::write(&viewer_file, "viewer-secret-123\n").expect("viewer token");
    let shared_token = dir.path().join("admin.token");
    std::fs::write(&shared_token, "adm_shared_token_0123456789").expect("admin token");
    let (viewer_path, token_path) = (viewer_file.clone(), shared_token.clone());
    let app = TestApp::start_with(move |c| {
        c.ui.viewer_token_file = Some(viewer_path);
        c.admin_token_file = Some(token_path);
    })
    .await;
    let admin = app.admin();
    admin
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(),
            "deploymentName": "d", "supportedModels": ["m"], "apiKey": "sk-upstream-secret-42"}))
        .await;
    let key = admin.create_key(&json!({"name": "alice"})).await;
    assert_eq!(ask(&app, &key, "m").await.status, 200);

    // Without a cookie every page, and signing out, lead to the sign-in form.
    for path in [
        "/ui/",
        "/ui/accounts",
        "/ui/routing",
        "/ui/keys",
        "/ui/usage",
    ] {
        let reply = send(client().get(app.url(path))).await;
        assert_eq!(
            (reply.status, location(&reply)),
            (303, "/ui/login"),
            "{path}"
        );
    }
    let reply = send(client().post(app.url("/ui/logout"))).await;
    assert_eq!((reply.status, location(&reply)), (303, "/ui/login"));
    let bare = send(client().get(app.url("/ui"))).await;
    assert_eq!(location(&bare), "/ui/");
    let form = send(client().get(app.url("/ui/login"))).await;
    assert_eq!(form.status, 200);
    assert!(form.text.contains("name=\"token\""), "{}", form.text);
    let css = send(client().get(app.url("/ui/assets/style.css"))).await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    // A wrong token: the form again, a 401, the token never repeated.
    let wrong = sign_in(&app, "guess-<b>-7731").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(wrong.text.contains("not the admin token"), "{}", wrong.text);
    assert!(!wrong.text.contains("7731"), "{}", wrong.text);
    assert!(wrong.headers.get("set-cookie").is_none());
    let malformed = send(client().post(app.url("/ui/login")).form(&[("tok", "x")])).await;
    assert_eq!(malformed.status, 400, "{}", malformed.text);

    // The admin token: a cookie that is HttpOnly, SameSite=Strict, scoped to /ui, not Secure
    // (relayd speaks plain HTTP here), and does not contain the token.
    let good = sign_in(&app, &app.admin_token).await;
    assert_eq!(
        (good.status, location(&good)),
        (303, "/ui/"),
        "{}",
        good.text
    );
    let set = good.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    assert!(!set.contains(&app.admin_token), "{set}");
    let cookie = session_cookie(&good);
    let overview = get_with(&app, "/ui/", &cookie).await;
    assert_eq!(overview.status, 200, "{}", overview.text);
    assert!(overview.text.contains(env!("CARGO_PKG_VERSION")));
    assert!(overview.text.contains(">admin<"), "signed in as admin");
    let csp = overview.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");

    // No page shows a secret: not the upstream key, the relay key, or the tokens.
    for path in [
        "/ui/",
        "/ui/accounts",
        "/ui/routing",
        "/ui/keys",
        "/ui/usage",
    ] {
        let page = get_with(&app, path, &cookie).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        for secret in [
            "sk-upstream-secret-42",
            key.as_str(),
            &app.admin_token,
            "viewer-secret",
        ] {
            assert!(!page.text.contains(secret), "{path} shows a secret");
        }
    }
    let keys = get_with(&app, "/ui/keys", &cookie).await;
    assert!(keys.text.contains("data-key=\"alice\""), "{}", keys.text);

    // A changed or forged cookie is no session.
    let (name_value, mac) = cookie.rsplit_once('.').expect("signed value");
    let flipped = if mac.starts_with('0') { "1" } else { "0" };
    let tampered = format!("{name_value}.{flipped}{}", &mac[1..]);
    assert_eq!(get_with(&app, "/ui/", &tampered).await.status, 303);
    let promoted = cookie.replacen(".admin.", ".viewer.", 1);
    assert_eq!(get_with(&app, "/ui/", &promoted).await.status, 303);

    // The viewer token signs in as a viewer.
    let viewer = sign_in(&app, "viewer-secret-123").await;
    assert_eq!(viewer.status, 303, "{}", viewer.text);
    let viewer_page = get_with(&app, "/ui/", &session_cookie(&viewer)).await;
    assert!(
        viewer_page.text.contains(">viewer<"),
        "{}",
        viewer_page.text
    );

    // Another relayd with the same admin token accepts the cookie; one with another does not.
    let token_path = shared_token.clone();
    let twin = TestApp::start_with(move |c| c.admin_token_file = Some(token_path)).await;
    assert_eq!(get_with(&twin, "/ui/", &cookie).await.status, 200);
    let rotated = TestApp::start().await;
    assert_eq!(get_with(&rotated, "/ui/", &cookie).await.status, 303);

    // Signing out clears the cookie.
    let out = send(
        client()
            .post(app.url("/ui/logout"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!((out.status, location(&out)), (303, "/ui/login"));
    let cleared = out.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("relayd_ui=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // A bad chart parameter is a 400 that names it.
    let bad = get_with(&app, "/ui/usage?range=1y", &cookie).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("parameter `range`"), "{}", bad.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_can_be_turned_off() {
    let app = TestApp::start_with(|c| c.ui.enabled = false).await;
    for path in ["/ui/", "/ui/login", "/ui/assets/style.css"] {
        assert_eq!(
            send(client().get(app.url(path))).await.status,
            404,
            "{path}"
        );
    }
    assert_eq!(app.admin().get("/snapshot").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_empty_viewer_token_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "  \n").expect("file");
    for file in [dir.path().join("missing.token"), empty] {
        let config = relayd::config::Config {
            data_dir: dir.path().join("data"),
            ui: relayd::config::UiConfig {
                viewer_token_file: Some(file.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = relayd::cli::build_state(config).await.expect_err("refused");
        let message = format!("{e:#}");
        assert!(message.contains("ui.viewer_token_file"), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
    }
}

/// Waits for the browser to arrive at `url` (a click returns before the navigation it starts
/// has finished).
async fn at_url(browser: &Browser, url: &str) {
    let arrived = browser
        .wait_until(Duration::from_secs(10), || async {
            browser.url().await == url
        })
        .await;
    assert!(arrived, "at {} instead of {url}", browser.url().await);
}

/// The sum of the chart segments of `series` in the chart of `unit` on the current page.
async fn chart_sum(browser: &Browser, unit: &str, series: &str) -> u64 {
    let v = browser
        .eval(
            "return Array.from(document.querySelectorAll(\
               `svg.chart[data-unit=\"${arguments[0]}\"] rect[data-series]`))\
             .filter(r => r.dataset.series === arguments[1])\
             .reduce((sum, r) => sum + Number(r.dataset.value), 0);",
            &[json!(unit), json!(series)],
        )
        .await;
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The `data-state` of account `name` on the accounts page.
async fn account_state(browser: &Browser, name: &str) -> Value {
    browser
        .eval(
            "const row = document.querySelector(`tr[data-account=\"${arguments[0]}\"] td.state`);\
             return row ? row.dataset.state : null;",
            &[json!(name)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin();
    for (name, model) in [("east", "m-east"), ("west", "m-west")] {
        admin
            .create_account(&json!({"name": name, "endpoint": mock.endpoint(),
                "deploymentName": "d", "supportedModels": [model], "concurrency": 3}))
            .await;
    }
    let alice = admin.create_key(&json!({"name": "alice"})).await;
    let bob = admin
        .create_key(&json!({"name": "bob", "limits": {"tokensPerDay": 5000}}))
        .await;
    for _ in 0..5 {
        assert_eq!(ask(&app, &alice, "m-east").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(ask(&app, &bob, "m-west").await.status, 200);
    }
    assert!(app.state.usage.flush_now().await);

    let browser = Browser::start(1280, 900).await;
    // The console check can fail: an uncaught script error on a page is seen. (On relayd's own
    // pages: a JSON error page has no icon link, and the browser's later request for
    // /favicon.ico would be an error of its own.)
    browser.goto(&app.url("/ui/login")).await;
    browser
        .eval(
            "setTimeout(() => { throw new Error('relayd console probe'); }, 0);",
            &[],
        )
        .await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let caught = loop {
        seen.extend(browser.console().await);
        let caught = seen
            .iter()
            .any(|e| e.level == "SEVERE" && e.message.contains("relayd console probe"));
        if caught || Instant::now() > deadline {
            break caught;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(caught, "the probe error is on the console: {seen:#?}");

    // Not signed in: sent to the form. A wrong token is refused there.
    browser.goto(&app.url("/ui/")).await;
    assert_eq!(browser.url().await, app.url("/ui/login"));
    browser.type_into("#token", "not-the-token").await;
    browser.click("button[type=submit]").await;
    // A click does not wait for the form's navigation: wait for the answer's error.
    let refused = browser
        .wait_until(Duration::from_secs(10), || async {
            browser.find(".error").await.is_some()
        })
        .await;
    assert!(refused, "no error shown after a wrong token");
    assert!(browser.text(".error").await.contains("not the admin token"));
    // The refusal is a 401, which Chromium reports; nothing else may be on the console.
    let refused: Vec<_> = browser
        .console()
        .await
        .into_iter()
        .filter(|e| e.level == "SEVERE" && !e.message.contains("401"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    browser.type_into("#token", &app.admin_token).await;
    browser.click("button[type=submit]").await;
    at_url(&browser, &app.url("/ui/")).await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "relayd_ui")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_eq!(session["path"], "/ui", "{session}");
    assert!(
        !session["value"]
            .as_str()
            .unwrap()
            .contains(&app.admin_token)
    );
    // HttpOnly: the page's own script cannot read it.
    let visible = browser.eval("return document.cookie;", &[]).await;
    assert_eq!(visible, "", "document.cookie shows {visible}");

    // Every page loads, with its content and no console error.
    for (path, marker) in [
        ("/ui/", "#requests-per-second"),
        ("/ui/accounts", "tr[data-account=\"east\"]"),
        ("/ui/routing", "tr[data-model=\"m-west\"]"),
        ("/ui/keys", "tr[data-key=\"bob\"]"),
        ("/ui/usage", "svg.chart[data-unit=\"tokens\"]"),
    ] {
        browser.goto(&app.url(path)).await;
        browser.element(marker).await;
        browser.assert_no_console_errors(path).await;
    }
    browser.goto(&app.url("/ui/")).await;
    assert_eq!(browser.text("#store .value").await, "embedded");
    browser.goto(&app.url("/ui/keys")).await;
    let today = browser.text("tr[data-key=\"bob\"]").await;
    assert!(today.contains("5000"), "{today}");

    // The usage chart shows the requests made: by key, then by account.
    browser.goto(&app.url("/ui/usage?range=24h&by=key")).await;
    assert_eq!(chart_sum(&browser, "requests", "alice").await, 5);
    assert_eq!(chart_sum(&browser, "requests", "bob").await, 3);
    assert!(chart_sum(&browser, "tokens", "alice").await > 0);
    let title = browser
        .eval(
            "return document.querySelector('rect[data-series=\"alice\"] title').textContent;",
            &[],
        )
        .await;
    assert!(
        title.as_str().unwrap_or_default().ends_with(": 5 requests"),
        "{title}"
    );
    // Chosen through the form: stacked by account, per day.
    browser.goto(&app.url("/ui/usage")).await;
    browser
        .eval(
            "document.querySelector('select[name=by]').value = 'account';\
             document.querySelector('select[name=step]').value = 'day';",
            &[],
        )
        .await;
    browser.click("form.controls button").await;
    at_url(
        &browser,
        &app.url("/ui/usage?range=24h&step=day&by=account"),
    )
    .await;
    assert_eq!(chart_sum(&browser, "requests", "east").await, 5);
    assert_eq!(chart_sum(&browser, "requests", "west").await, 3);
    browser
        .assert_no_console_errors("/ui/usage?by=account")
        .await;

    // An account disabled through the admin API shows as disabled after a refresh.
    browser.goto(&app.url("/ui/accounts")).await;
    assert_eq!(account_state(&browser, "west").await, "ok");
    assert_eq!(
        admin
            .post("/accounts/west/disable", &json!({}))
            .await
            .status,
        200
    );
    browser.refresh().await;
    assert_eq!(account_state(&browser, "west").await, "disabled");
    assert_eq!(account_state(&browser, "east").await, "ok");
    browser.assert_no_console_errors("/ui/accounts").await;

    // Signing out ends the session.
    browser.click("form.signout button").await;
    at_url(&browser, &app.url("/ui/login")).await;
    browser.goto(&app.url("/ui/keys")).await;
    assert_eq!(browser.url().await, app.url("/ui/login"));
    browser.assert_no_console_errors("/ui/login").await;
}

/// Median of `n` sequential GETs of `path` with `header`.
async fn median_latency(app: &TestApp, path: &str, header: (&str, &str), n: usize) -> Duration {
    let client = client();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let reply = client
            .get(app.url(path))
            .header(header.0, header.1)
            .send()
            .await
            .expect("sent");
        assert_eq!(reply.status(), 200, "{path}");
        reply.bytes().await.expect("body");
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// The page weight (HTML + CSS; there is no script) and the median latency of the snapshot
/// endpoint and the pages, with 10 accounts, 10 keys and their usage: printed for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_weight_and_latency() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin();
    for i in 0..10 {
        admin
            .create_account(
                &json!({"name": format!("box{i:02}"), "endpoint": mock.endpoint(),
                "deploymentName": "d", "supportedModels": [format!("m{i}")]}),
            )
            .await;
        let key = admin
            .create_key(&json!({"name": format!("key{i:02}")}))
            .await;
        assert_eq!(ask(&app, &key, &format!("m{i}")).await.status, 200);
    }
    assert!(app.state.usage.flush_now().await);
    let cookie = session_cookie(&sign_in(&app, &app.admin_token).await);
    let css = send(client().get(app.url("/ui/assets/style.css")))
        .await
        .text
        .len();
    let mut weights = Vec::new();
    for path in ["/ui/", "/ui/usage"] {
        let page = get_with(&app, path, &cookie).await;
        assert_eq!(page.status, 200);
        assert!(!page.text.contains("<script"), "no script on {path}");
        weights.push((path, page.text.len()));
        eprintln!(
            "page weight {path}: {} B HTML + {css} B CSS + 0 B JS = {} B",
            page.text.len(),
            page.text.len() + css
        );
    }
    // A page that grew a per-bucket or per-record blow-up would be far above these.
    assert!(css < 8 * 1024, "CSS {css} B");
    for (path, html) in weights {
        assert!(html < 64 * 1024, "{path}: {html} B");
    }
    let bearer = format!("Bearer {}", app.admin_token);
    let n = 200;
    let snapshot = median_latency(&app, "/admin/v1/snapshot", ("authorization", &bearer), n).await;
    eprintln!("median of {n}: GET /admin/v1/snapshot {snapshot:?}");
    for path in ["/ui/", "/ui/accounts", "/ui/keys", "/ui/usage"] {
        let t = median_latency(&app, path, ("cookie", &cookie), n).await;
        eprintln!("median of {n}: GET {path} {t:?}");
        // Generous for a debug build on a shared machine: guards against a page that grew a
        // store round trip per row, not against noise.
        assert!(t < Duration::from_millis(250), "{path}: {t:?}");
    }
}

/// Writes the README's screenshots, `ui-overview.png` and `ui-usage.png`, into the directory
/// `RELAYD_UI_SCREENSHOTS` names (default: the repository's `docs/`). Ignored, because tests do
/// not write into the repository: run it with
/// `cargo test -p relayd-tests --test it ui::screenshots -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the README's screenshots; run by hand"]
async fn screenshots() {
    use shared::usage::{TokenCounts, UsageRecord};

    let out = std::env::var_os("RELAYD_UI_SCREENSHOTS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&out).expect("screenshot directory");
    let mock = MockUpstream::start().await;
    let failing = MockUpstream::start().await;
    failing.set_responder(|_| relayd_tests::mock_upstream::MockReply::error(500, "boom"));
    let app = TestApp::start().await;
    let admin = app.admin();
    let accounts = [
        ("gpu-a", "qwen3-coder", &mock, 8),
        ("gpu-b", "qwen3-coder", &mock, 8),
        ("llama-box", "gpt-oss-20b", &mock, 4),
        ("spare", "glm-4.6", &failing, 2),
        ("old-azure", "gpt-4o", &mock, 4),
    ];
    for (name, model, upstream, concurrency) in accounts {
        admin
            .create_account(&json!({"name": name, "endpoint": upstream.endpoint(),
                "deploymentName": model, "supportedModels": [model],
                "concurrency": concurrency, "contextWindow": 131072}))
            .await;
    }
    assert_eq!(
        admin
            .post("/accounts/old-azure/disable", &json!({}))
            .await
            .status,
        200
    );
    let mut keys = Vec::new();
    for (name, limits) in [
        ("alice", json!({"tokensPerDay": 2_000_000})),
        ("build-bot", json!({"requestsPerMinute": 120})),
        ("carol", json!({})),
        ("eval-suite", json!({"concurrency": 4})),
    ] {
        let secret = admin
            .create_key(&json!({"name": name, "limits": limits}))
            .await;
        keys.push((name, secret));
    }
    // A day of history, hour by hour, so the chart has something to stack.
    let now = shared::time::now_millis();
    let mut records = Vec::new();
    let routes = [
        ("gpu-a", "qwen3-coder"),
        ("gpu-b", "qwen3-coder"),
        ("llama-box", "gpt-oss-20b"),
    ];
    for hour in 1..24i64 {
        for (k, (key, _)) in keys.iter().enumerate() {
            let k = k as i64;
            let busy = 6
                + (hour * 7 + k * 5) % 17
                + if (9..18).contains(&(hour % 24)) {
                    12
                } else {
                    0
                };
            for n in 0..busy / (k + 1) {
                let (account, model) = routes[((hour + n + k) % 3) as usize];
                records.push(UsageRecord {
                    request_id: format!("seed-{hour}-{k}-{n}"),
                    at: now - hour * 3_600_000,
                    key: (*key).to_owned(),
                    account: Some(account.to_owned()),
                    model: model.to_owned(),
                    upstream_model: Some(model.to_owned()),
                    tokens: TokenCounts {
                        input_tokens: 900 + ((hour * 131 + n * 17) % 700) as u64,
                        output_tokens: 150 + ((hour * 37 + n * 29) % 400) as u64,
                        cache_read_tokens: 0,
                    },
                    estimated: false,
                    status: if (hour + n) % 23 == 0 { 502 } else { 200 },
                    streamed: true,
                    latency_ms: 800,
                    ttfb_ms: Some(120),
                });
            }
        }
    }
    app.state
        .store
        .record_usage(&records, Duration::from_secs(86_400))
        .await
        .expect("seed usage");
    // Live traffic: the overview's rate needs two reads a second or more apart.
    let browser = Browser::start(1280, 820).await;
    browser.goto(&app.url("/ui/login")).await;
    browser.type_into("#token", &app.admin_token).await;
    browser.click("button[type=submit]").await;
    at_url(&browser, &app.url("/ui/")).await;
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_millis(1500) {
        let (_, key) = &keys[i % keys.len()];
        // Now and then a model whose only account fails, so the error rate is not zero.
        let model = ["qwen3-coder", "gpt-oss-20b", "qwen3-coder", "glm-4.6"][i % 4];
        ask(&app, key, model).await;
        i += 1;
    }
    assert!(app.state.usage.flush_now().await);
    browser.refresh().await;
    browser.element("#requests-per-second").await;
    std::fs::write(out.join("ui-overview.png"), browser.screenshot().await).expect("write");
    browser.resize(1280, 1240).await;
    browser.goto(&app.url("/ui/usage?range=24h&by=key")).await;
    browser.element("svg.chart").await;
    browser.assert_no_console_errors("/ui/usage").await;
    std::fs::write(out.join("ui-usage.png"), browser.screenshot().await).expect("write");
    eprintln!(
        "wrote ui-overview.png and ui-usage.png to {}",
        out.display()
    );
}
