//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: a WebSocket to the
//! browser, one page attached as a flat session, and just the calls the tests need (evaluate,
//! screenshot). The protocol is a handful of JSON messages, so the project's tokio-tungstenite
//! does it without a browser-automation crate.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    runtime: tokio::runtime::Runtime,
    socket: WebSocketStream<tokio::net::TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens `url` in a page of `width`×`height`.
    pub fn open(url: &str, width: u32, height: u32) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "these tests need Debian's chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run installs it)"
        );
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                // Root in a container has no user namespace for Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                // Nothing but loopback resolves: the browser cannot reach outside the machine.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chromium");
        let stderr = child.stderr.take().expect("chromium's stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the DevTools address, then keeps draining so Chromium never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        });
        let ws_url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("chromium did not print its DevTools address within 60 s ({status:?})")
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let host = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {ws_url:?}"))
            .to_string();
        let socket = runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(&host)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to DevTools at {host}: {e}"));
            tokio_tungstenite::client_async(ws_url.as_str(), stream)
                .await
                .unwrap_or_else(|e| panic!("DevTools WebSocket handshake failed: {e}"))
                .0
        });
        let mut browser = Browser {
            child,
            runtime,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        let navigated = browser.call("Page.navigate", json!({"url": url}));
        if let Some(error) = navigated.get("errorText") {
            panic!("chromium cannot load {url}: {error}");
        }
        browser.wait_true(
            &format!("{url} to load"),
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                serde_json::to_string(url).unwrap_or_default()
            ),
            Duration::from_secs(60),
        );
        browser
    }

    /// One DevTools command (on the page's session once attached); its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = Value::String(self.session.clone());
        }
        let socket = &mut self.socket;
        self.runtime.block_on(async {
            socket
                .send(Message::text(message.to_string()))
                .await
                .unwrap_or_else(|e| panic!("cannot send {method} to chromium: {e}"));
            let reply = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    let frame = socket
                        .next()
                        .await
                        .unwrap_or_else(|| panic!("chromium closed DevTools during {method}"))
                        .unwrap_or_else(|e| panic!("DevTools read failed during {method}: {e}"));
                    let Message::Text(text) = frame else { continue };
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("DevTools sent no JSON ({e}): {text}"));
                    // Events (no id) and other replies are not ours.
                    if value["id"] == id {
                        return value;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("chromium did not answer {method} within 60 s"));
            if let Some(error) = reply.get("error") {
                panic!("{method} failed: {error}");
            }
            reply["result"].clone()
        })
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is true; on time-out fails with `what` and the page's text.
    pub fn wait_true(&mut self, what: &str, expression: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(expression) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = self.eval("document.body ? document.body.innerText : ''");
        panic!(
            "timed out after {timeout:?} waiting for {what} ({expression}); the page shows:\n{}",
            text.as_str().unwrap_or("")
        );
    }

    /// A PNG of the page as it is drawn now.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png).expect("cannot write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
