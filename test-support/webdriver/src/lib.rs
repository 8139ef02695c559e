//! A small W3C WebDriver client for the dashboard's browser tests and benchmarks: it starts
//! `chromedriver` on a free loopback port and drives headless Chromium through the handful of
//! commands they need (navigate, find, click, type, read, run a script, cookies, screenshot,
//! browser log). Hand-written over hyper, which the workspace already builds, instead of a
//! WebDriver crate with its own HTTP and TLS stack.
//!
//! Test support: failures panic with what went wrong, which is what a test wants.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser and its driver are, or why the browser tests cannot run.
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let pick = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let chromium = pick("CHROMIUM_BIN", "/usr/bin/chromium");
    let driver = pick("CHROMEDRIVER_BIN", "/usr/bin/chromedriver");
    for (what, p) in [("Chromium", &chromium), ("chromedriver", &driver)] {
        if !p.is_file() {
            return Err(format!(
                "{what} is not installed at {} (apt-get install chromium chromium-driver, or set {})",
                p.display(),
                if what == "Chromium" {
                    "CHROMIUM_BIN"
                } else {
                    "CHROMEDRIVER_BIN"
                }
            ));
        }
    }
    Ok((chromium, driver))
}

/// A running chromedriver with one browser session.
pub struct Browser {
    driver: tokio::process::Child,
    /// The driver's process group (Chromium runs in it too).
    pgid: Option<u32>,
    port: u16,
    session: String,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose profile lives in `profile`.
    pub async fn start(chromium: &Path, driver: &Path, profile: &Path) -> Self {
        let port = free_port();
        // Chromium writes caches and crash reports under HOME and the XDG folders: point them
        // at the test's own folder, never the user's home.
        let home = profile.parent().unwrap_or(profile);
        let driver = loop_engine::process::Cmd::new(driver, home)
            .env("HOME", home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .to_tokio()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let pgid = driver.id();
        let mut browser = Self {
            driver,
            pgid,
            port,
            session: String::new(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = browser.call("GET", "/status", None).await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.to_string_lossy(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"implicit": 0, "pageLoad": 30000, "script": 30000}
        }}});
        let v = browser
            .call("POST", "/session", Some(caps))
            .await
            .expect("a browser session");
        browser.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| format!("connect to chromedriver: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!("{method} {path} answered {status}: {v}"))
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match self.call(method, &path, body).await {
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("webdriver: {e}"),
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        let v = self
            .call(
                "POST",
                &path,
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        match v {
            Ok(v) => v["value"][ELEMENT].as_str().map(|s| Element(s.to_owned())),
            Err(e) if e.contains("no such element") => None,
            Err(e) => panic!("webdriver: {e}"),
        }
    }

    /// The element matching `css` (panics naming it when there is none).
    pub async fn find(&self, css: &str) -> Element {
        match self.try_find(css).await {
            Some(e) => e,
            None => {
                let url = self.url().await;
                let body = self
                    .exec("return document.documentElement.outerHTML.slice(0, 3000);")
                    .await;
                panic!("no element matches `{css}` on {url}:\n{body}")
            }
        }
    }

    /// Clicks an element.
    pub async fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .await;
    }

    /// Types `text` into an element (WebDriver key codes such as `\u{E007}` for Enter work).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Types into whatever has the focus.
    pub async fn keys(&self, text: &str) {
        let active = self.cmd("GET", "/element/active", None).await;
        let id = active[ELEMENT]
            .as_str()
            .expect("an active element")
            .to_owned();
        self.type_into(&Element(id), text).await;
    }

    /// The rendered text of an element.
    pub async fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn exec(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits up to `secs` for `script` to return something truthy, then returns it.
    pub async fn wait_for(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.exec(script).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let body = self
                    .exec("return document.body.innerText.slice(0, 3000);")
                    .await;
                panic!("timed out after {secs} s waiting for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = decode_base64(b64.as_str().expect("base64 text")).expect("valid base64");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Runs a Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`), e.g.
    /// `Page.addScriptToEvaluateOnNewDocument` or `Network.emulateNetworkConditions`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    /// Adds a cookie for the current page's host (navigate there first).
    pub async fn add_cookie(&self, name: &str, value: &str) {
        self.cmd(
            "POST",
            "/cookie",
            Some(json!({"cookie": {"name": name, "value": value, "path": "/", "httpOnly": true, "sameSite": "Strict"}})),
        )
        .await;
    }

    /// The browser console entries since the last call (chromedriver's log endpoint).
    pub async fn console(&self) -> Vec<Value> {
        let path = format!("/session/{}/se/log", self.session);
        match self
            .call("POST", &path, Some(json!({"type": "browser"})))
            .await
        {
            Ok(v) => v["value"].as_array().cloned().unwrap_or_default(),
            Err(e) => panic!("cannot read the browser console: {e}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing the driver ends the rest.
        if !self.session.is_empty() {
            let port = self.port;
            let session = self.session.clone();
            let _ = std::thread::spawn(move || {
                use std::io::{Read, Write};
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = write!(
                        s,
                        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    );
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
            })
            .join();
        }
        // chromedriver and whatever Chromium left behind share the driver's process group.
        if let Some(pgid) = self.pgid {
            loop_engine::process::signal_group(pgid, loop_engine::process::Signal::Kill);
        }
        let _ = self.driver.start_kill();
    }
}

/// Standard base64 (with padding) to bytes.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
    assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
    assert_eq!(decode_base64("a*"), None);
}
