//! A real headless Chromium driven over the W3C WebDriver HTTP API of `chromedriver` (Debian's
//! `chromium` and `chromium-driver` packages), with reqwest: no WebDriver crate needed for the
//! dozen calls the status-page tests make.
//!
//! chromedriver is started with `--port=0` and says which port it took on its first lines; it
//! accepts local connections only. The browser gets a fresh profile directory, and a host
//! resolver that maps every name to nothing, so it can reach 127.0.0.1 only (background
//! services, safe browsing and the like cannot resolve their hosts). Console messages are read
//! through chromedriver's log endpoint so a page's errors can fail a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key WebDriver wraps element references in.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session. chromedriver (and with it Chromium) is stopped when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// A console message.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`…
    pub level: String,
    /// The text, with the source URL chromedriver prefixes.
    pub message: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Self {
        let mut driver = Command::new("/usr/bin/chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver)");
        let stdout = driver.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the port from the start-up lines, then keeps draining so chromedriver never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().ok());
                }
                line.clear();
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .expect("chromedriver reports its port");
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
            // Only 127.0.0.1: no name resolves, and the services that would call out are off.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
            "--no-proxy-server".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-features=Translate,OptimizationHints,MediaRouter".to_owned(),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let client = reqwest::Client::new();
        let created = post(&client, port, "/session", &capabilities).await;
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Self {
            driver,
            port,
            session,
            client,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.port, self.session
        );
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let value: Value = response.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {value}");
        value["value"].clone()
    }

    /// Loads `url` and waits for it (WebDriver's navigation waits for the load event).
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(&json!({"url": url})))
            .await;
    }

    /// Reloads the current page.
    pub async fn refresh(&self) {
        self.call(reqwest::Method::POST, "/refresh", Some(&json!({})))
            .await;
    }

    /// Resizes the window (screenshots show the viewport only).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await;
        v.as_str().expect("url").to_owned()
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_owned)
    }

    /// The element matching `css`; panics when there is none.
    pub async fn element(&self, css: &str) -> String {
        match self.find(css).await {
            Some(e) => e,
            None => panic!("no element {css} on {}", self.url().await),
        }
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(&json!({"text": text})),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(&json!({})),
        )
        .await;
    }

    /// The rendered text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its
    /// result: for reading many DOM values in one call.
    pub async fn eval(&self, script: &str, args: &[Value]) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
        .await
    }

    /// The cookies the browser holds for the current page, as WebDriver reports them
    /// (`name`, `value`, `httpOnly`, `sameSite`, `secure`, `path`…).
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self.call(reqwest::Method::GET, "/cookie", None).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Console messages since the last call (chromedriver's log endpoint; it hands each entry
    /// out once).
    pub async fn console(&self) -> Vec<LogEntry> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/se/log",
                Some(&json!({"type": "browser"})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Panics with the messages when the console has an error (level `SEVERE`) since the last
    /// read.
    pub async fn assert_no_console_errors(&self, page: &str) {
        let errors: Vec<LogEntry> = self
            .console()
            .await
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect();
        assert!(errors.is_empty(), "console errors on {page}: {errors:#?}");
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("PNG")
    }

    /// Polls `check` until it is true or `timeout` passes; returns whether it became true.
    pub async fn wait_until<F, Fut>(&self, timeout: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if check().await {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn post(client: &reqwest::Client, port: u16, path: &str, body: &Value) -> Value {
    let response = client
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(body)
        .send()
        .await
        .expect("chromedriver answers");
    let status = response.status();
    let value: Value = response.json().await.expect("WebDriver JSON");
    assert!(status.is_success(), "WebDriver {path}: {status} {value}");
    value["value"].clone()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session so chromedriver stops Chromium (killing chromedriver alone would
        // leave it running). Plain blocking HTTP: Drop cannot await.
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.session, self.port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
