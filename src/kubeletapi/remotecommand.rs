//! `/exec` and `/attach`: a process's stdin, stdout, stderr, terminal size and exit status over
//! WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) or SPDY/3.1 (`v4.channel.k8s.io`,
//! one SPDY stream per channel, named by its `streamtype` header).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};
use tracing::debug;

use super::upgrade::{self, Kind, Upgraded};
use super::{Body, bad_request, channel, find, query_flag, query_pairs, spdy};
use crate::runtime::container::{Runtime, Status};
use crate::runtime::exec::{self, ExecOptions};
use crate::runtime::logs::{LogReader, Stream as LogStream};

pub const WEBSOCKET_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
pub const SPDY_PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];
/// How long a SPDY client has to open the streams it asked for.
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// Output that children of an exited process keep sending is taken for this long.
const DRAIN: Duration = Duration::from_secs(2);

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// One output channel towards the client.
#[derive(Clone)]
pub enum Out {
    WebSocket {
        tx: mpsc::Sender<Vec<u8>>,
        channel: u8,
    },
    Spdy(spdy::StreamWriter),
}

impl Out {
    /// False once the client is gone.
    pub async fn write(&self, data: &[u8]) -> bool {
        match self {
            Out::WebSocket { tx, channel } => {
                tx.send(channel::encode(*channel, data)).await.is_ok()
            }
            Out::Spdy(w) => w.write(data).await.is_ok(),
        }
    }

    pub async fn close(&self) {
        if let Out::Spdy(w) = self {
            w.close().await;
        }
    }
}

/// The client's side of a remote command, whatever carries it.
pub struct Session {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    pub stdout: Option<Out>,
    pub stderr: Option<Out>,
    pub error: Out,
}

impl Session {
    /// Sends the final status and closes every channel.
    pub async fn finish(self, status: Value) {
        self.error.write(status.to_string().as_bytes()).await;
        self.error.close().await;
        for out in [&self.stdout, &self.stderr].into_iter().flatten() {
            out.close().await;
        }
    }
}

pub fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

pub fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return success();
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

pub fn failure(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

pub async fn handle(
    runtime: Arc<Runtime>,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    attach: bool,
) -> Response<Body> {
    let query = query_pairs(&req);
    let want = Want {
        stdin: query_flag(&query, "stdin") || query_flag(&query, "input"),
        stdout: query_flag(&query, "stdout") || query_flag(&query, "output"),
        stderr: query_flag(&query, "stderr") || query_flag(&query, "error"),
        tty: query_flag(&query, "tty"),
    };
    let argv: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if !attach && argv.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }
    if !want.stdin && !want.stdout && !want.stderr {
        return bad_request("you must specify at least one of stdin, stdout, stderr");
    }
    let Some(found) = find::current(&runtime, ns, pod, container) else {
        return bad_request(&format!(
            "container {container} is not valid for pod {pod}: it does not run on this node"
        ));
    };
    if found.state.status != Status::Running {
        return bad_request(&format!(
            "cannot {} into a container in a completed pod; current phase is not Running (container {container} is not running)",
            if attach { "attach" } else { "exec" }
        ));
    }
    let kind = match upgrade::negotiate(&req, &WEBSOCKET_PROTOCOLS, &SPDY_PROTOCOLS) {
        Ok(k) => k,
        Err(resp) => return *resp,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let answer = upgrade::switching(&kind);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(up) => hyper_util::rt::TokioIo::new(up),
            Err(e) => return debug!(error = %e, "upgrade failed"),
        };
        let session = match &kind {
            Kind::WebSocket { .. } => websocket_session(io, want).await,
            Kind::Spdy { .. } => match spdy_session(io, want).await {
                Some(s) => s,
                None => return,
            },
        };
        if attach {
            run_attach(&runtime, &found, session).await;
        } else {
            run_exec(&runtime, &found.id, &argv, want.tty, session).await;
        }
    });
    answer
}

/// Sends every message given to the returned sender as a binary WebSocket frame, and a normal
/// close once all senders are gone; the handle ends after the close went out (or the peer left).
pub fn spawn_websocket_writer<S>(
    mut sink: S,
    capacity: usize,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>)
where
    S: futures::Sink<Message> + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(Message::Binary(message.into())).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.flush().await;
    });
    (tx, writer)
}

pub async fn websocket_session(io: Upgraded, want: Want) -> Session {
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, mut stream) = ws.split();
    let (out_tx, _writer) = spawn_websocket_writer(sink, 32);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(32);
    let (resize_tx, resize_rx) = mpsc::channel::<(u16, u16)>(8);
    tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(message) = stream.next().await {
            let data = match message {
                Ok(Message::Binary(b)) => b.to_vec(),
                // Clients that write text (the Python client's str stdin) frame it the same
                // way, channel byte first; kubelet reads both kinds alike.
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match channel::decode(&data) {
                channel::Incoming::Stdin(d) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(Bytes::from(d)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                channel::Incoming::Resize { width, height } => {
                    let _ = resize_tx.try_send((width, height));
                }
                channel::Incoming::Close(channel::STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let out = |channel: u8| Out::WebSocket {
        tx: out_tx.clone(),
        channel,
    };
    Session {
        stdin: want.stdin.then_some(stdin_rx),
        resize: want.tty.then_some(resize_rx),
        stdout: want.stdout.then(|| out(channel::STDOUT)),
        stderr: (want.stderr && !want.tty).then(|| out(channel::STDERR)),
        error: out(channel::ERROR),
    }
}

/// Waits for the streams the client asked for; None when it does not open them.
pub async fn spdy_session<IO>(io: IO, want: Want) -> Option<Session>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<spdy::Stream>(8);
    tokio::spawn(async move {
        if let Err(e) = spdy::serve(io, tx).await {
            debug!(error = %e, "SPDY connection ended");
        }
    });
    let mut stdin = None;
    let mut resize = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut error = None;
    let complete = |stdin: &Option<_>,
                    stdout: &Option<_>,
                    stderr: &Option<_>,
                    resize: &Option<_>,
                    error: &Option<Out>| {
        error.is_some()
            && (!want.stdin || stdin.is_some())
            && (!want.stdout || stdout.is_some())
            && (!want.stderr || want.tty || stderr.is_some())
            && (!want.tty || resize.is_some())
    };
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    while !complete(&stdin, &stdout, &stderr, &resize, &error) {
        let stream = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => s,
            _ => {
                debug!("the client did not open the streams it asked for");
                return None;
            }
        };
        match spdy::header(&stream.headers, "streamtype").unwrap_or("") {
            "error" => error = Some(Out::Spdy(stream.writer)),
            "stdin" => stdin = Some(stream.incoming),
            "stdout" => stdout = Some(Out::Spdy(stream.writer)),
            "stderr" => stderr = Some(Out::Spdy(stream.writer)),
            "resize" => resize = Some(resize_events(stream.incoming)),
            other => debug!(id = stream.id, streamtype = other, "unknown stream ignored"),
        }
    }
    // Later streams (none expected) are accepted and left alone.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Some(Session {
        stdin,
        resize,
        stdout,
        stderr: if want.tty { None } else { stderr },
        error: error?,
    })
}

/// Terminal sizes from a stream of JSON objects (`{"Width":…,"Height":…}`, one after another).
fn resize_events(mut incoming: mpsc::Receiver<Bytes>) -> mpsc::Receiver<(u16, u16)> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(data) = incoming.recv().await {
            buffer.extend_from_slice(&data);
            let mut consumed = 0;
            let mut values = serde_json::Deserializer::from_slice(&buffer).into_iter::<Value>();
            while let Some(Ok(v)) = values.next() {
                consumed = values.byte_offset();
                if let Some(channel::Incoming::Resize { width, height }) =
                    channel::parse_resize(v.to_string().as_bytes())
                {
                    let _ = tx.try_send((width, height));
                }
            }
            buffer.drain(..consumed);
        }
    });
    rx
}

async fn pump(reader: Option<Box<dyn AsyncRead + Send + Unpin>>, out: Option<Out>) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(out) = &out
                    && !out.write(&buf[..n]).await
                {
                    // The client is gone; keep reading so the process never blocks on us.
                    continue;
                }
            }
        }
    }
}

pub async fn run_exec(runtime: &Runtime, id: &str, argv: &[String], tty: bool, mut s: Session) {
    let options = ExecOptions {
        tty,
        stdin: s.stdin.is_some(),
    };
    let mut process = match exec::start(runtime, id, argv, &options).await {
        Ok(p) => p,
        Err(e) => {
            return s.finish(failure(&format!("{e:#}"))).await;
        }
    };
    if let (Some(mut from_client), Some(mut to_process)) = (s.stdin.take(), process.stdin.take()) {
        tokio::spawn(async move {
            while let Some(data) = from_client.recv().await {
                if to_process.write_all(&data).await.is_err() {
                    break;
                }
                let _ = to_process.flush().await;
            }
            let _ = to_process.shutdown().await;
        });
    }
    if let Some(mut sizes) = s.resize.take() {
        let resizer = process.resizer();
        tokio::spawn(async move {
            while let Some((w, h)) = sizes.recv().await {
                resizer.resize(w, h);
            }
        });
    }
    let stdout = process.stdout.take();
    let stderr = process.stderr.take();
    let (out, err) = (s.stdout.clone(), s.stderr.clone());
    let status = {
        let output = async { tokio::join!(pump(stdout, out), pump(stderr, err)) };
        tokio::pin!(output);
        let waiting = process.wait();
        tokio::pin!(waiting);
        tokio::select! {
            _ = &mut output => waiting.await,
            status = &mut waiting => {
                let _ = tokio::time::timeout(DRAIN, &mut output).await;
                status
            }
        }
    };
    let status = match status {
        Ok(code) => exit_status(argv, code),
        Err(e) => failure(&format!("{e:#}")),
    };
    s.finish(status).await;
}

/// Attach: the container's output from now on until it exits, stdin through the container's
/// helper when the container keeps one open. As kubelet, the container's own `tty` decides,
/// not the request's: a terminal cannot be added or taken away after the start.
pub async fn run_attach(runtime: &Runtime, found: &find::Found, mut s: Session) {
    let dir = runtime.dir(&found.id);
    if found.tty {
        return attach_terminal(&dir, s).await;
    }
    let mut reader = match LogReader::open(&runtime.log_path(&found.id)) {
        Ok(r) => r,
        Err(e) => return s.finish(failure(&format!("{e:#}"))).await,
    };
    // What was logged before the attach is not replayed; what the client's input causes is.
    let _ = reader.read_new();
    if let Some(from_client) = s.stdin.take() {
        let socket = dir.join(crate::runtime::shim::ATTACH_SOCKET);
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(conn) => {
                let (_, to_helper) = conn.into_split();
                tokio::spawn(forward_stdin(from_client, to_helper));
            }
            Err(e) => debug!(error = %e, "the container keeps no stdin open"),
        }
    }
    loop {
        let running = crate::runtime::container::read_state(&dir)
            .map(|st| st.status != Status::Exited)
            .unwrap_or(false);
        let lines = reader.read_new().unwrap_or_default();
        for line in lines {
            let out = match line.stream {
                LogStream::Stderr => &s.stderr,
                LogStream::Stdout => &s.stdout,
            };
            if let Some(out) = out {
                let mut text = line.text;
                text.push(b'\n');
                if !out.write(&text).await {
                    return;
                }
            }
        }
        if !running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.finish(success()).await;
}

/// The client's stdin as attach frames to the container's helper.
async fn forward_stdin(
    mut from_client: mpsc::Receiver<Bytes>,
    mut to_helper: tokio::net::unix::OwnedWriteHalf,
) {
    use crate::runtime::attach;
    if to_helper
        .write_all(&attach::encode(attach::KIND_STDIN_OPEN, b""))
        .await
        .is_err()
    {
        return;
    }
    while let Some(data) = from_client.recv().await {
        if to_helper
            .write_all(&attach::encode(attach::KIND_STDIN, &data))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = to_helper
        .write_all(&attach::encode(attach::KIND_STDIN_END, b""))
        .await;
}

/// A terminal container: raw output straight from its helper (prompts without a newline
/// show at once), stdin and window sizes to it.
async fn attach_terminal(dir: &std::path::Path, mut s: Session) {
    use crate::runtime::attach;
    let socket = dir.join(crate::runtime::shim::ATTACH_SOCKET);
    let conn = match tokio::net::UnixStream::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            return s
                .finish(failure(&format!(
                    "cannot attach to the container's terminal ({}): {e}",
                    socket.display()
                )))
                .await;
        }
    };
    let (mut from_helper, to_helper) = conn.into_split();
    let to_helper = Arc::new(tokio::sync::Mutex::new(to_helper));
    if let Some(mut sizes) = s.resize.take() {
        let to_helper = to_helper.clone();
        tokio::spawn(async move {
            while let Some((w, h)) = sizes.recv().await {
                let frame = attach::encode_resize(w, h);
                if to_helper.lock().await.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
    }
    if let Some(mut from_client) = s.stdin.take() {
        let to_helper = to_helper.clone();
        tokio::spawn(async move {
            let send = |frame: Vec<u8>| {
                let to_helper = to_helper.clone();
                async move { to_helper.lock().await.write_all(&frame).await.is_ok() }
            };
            if !send(attach::encode(attach::KIND_STDIN_OPEN, b"")).await {
                return;
            }
            while let Some(data) = from_client.recv().await {
                if !send(attach::encode(attach::KIND_STDIN, &data)).await {
                    return;
                }
            }
            send(attach::encode(attach::KIND_STDIN_END, b"")).await;
        });
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from_helper.read(&mut buf).await {
            // The helper closes every client when the container has ended.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(out) = &s.stdout
                    && !out.write(&buf[..n]).await
                {
                    return;
                }
            }
        }
    }
    s.finish(success()).await;
}
