//! `pods/exec` over WebSocket: validates the `PodExecOptions`, starts the command through the
//! runtime and then runs one session — the process's stdout and stderr go out as channel
//! messages, the client's stdin messages go in, the v5 close message ends stdin, resize
//! messages are read and dropped (no terminals here), and when the process exits its status
//! goes out on the error channel before a normal close. A client that goes away takes the
//! process with it. SPDY is not spoken: a non-WebSocket request gets 400 after the same pod
//! and container checks, so kubectl's SPDY fallback reports the real error.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::pod_streams::{flag, resolve, runtime_error, Query};
use super::App;
use crate::error::ApiError;
use crate::remotecommand::{self as rc, ClientFrame, Version};
use crate::runtime::{ExecOptions, ExecProcess, RuntimeError};

/// How long output may keep coming after the process exited (a background child holding the
/// pipes open must not hold the session forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// How long to wait for the client's answer to our close.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(5);

pub(crate) fn exec(
    app: &App,
    namespace: &str,
    name: &str,
    query: &Query,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let opts = ExecOptions {
        command: query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag(query, "stdin")?,
        stdout: flag(query, "stdout")?,
        stderr: flag(query, "stderr")?,
        tty: flag(query, "tty")?,
    };
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if opts.command.is_empty() {
        return Err(ApiError::bad_request(
            "command: Required value: you must specify at least one command for the container",
        ));
    }
    let container = super::pod_streams::param(query, "container");
    let (pod, container, runtime) = resolve(app, namespace, name, container)?;
    // Before the upgrade check, so a client falling back to SPDY hears the same answer.
    runtime
        .check_exec(&pod, &container)
        .map_err(runtime_error)?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(format!(
            "Upgrade request required: pods/exec is served over WebSocket ({}) only: {e}",
            rc::PROTOCOLS.join(", ")
        ))
    })?;
    let version = upgrade
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .flat_map(|p| p.split(','))
        .filter_map(|p| Version::from_name(p.trim()))
        .max_by_key(|v| *v == Version::V5)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "none of the requested subprotocols is supported; this server speaks {}",
                rc::PROTOCOLS.join(", ")
            ))
        })?;
    let upgrade = upgrade.protocols(rc::PROTOCOLS);
    let command = opts.command.clone();
    match runtime.exec(&pod, &container, &opts) {
        Ok(process) => Ok(upgrade.on_upgrade(move |ws| session(ws, version, process, command))),
        Err(e @ RuntimeError::BadRequest(_)) => Err(runtime_error(e)),
        // The command could not start (no such program, ...): as the kubelet does, that is
        // told on the error channel of an upgraded stream.
        Err(RuntimeError::Internal(why)) => Ok(upgrade.on_upgrade(move |ws| failed(ws, why))),
    }
}

/// A session whose command never started: the failure on the error channel, then the close.
async fn failed(ws: WebSocket, why: String) {
    let (mut tx, rx) = ws.split();
    let status = rc::failure_status(&format!(
        "Internal error occurred: error executing command in container: {why}"
    ));
    let client = tokio::spawn(read_client(rx, None, None, Version::V4));
    close_with(&mut tx, &status, client).await;
}

/// Sends the final status on the error channel and closes normally, waiting (bounded) for the
/// client to answer the close before the connection drops, so it reads a clean end.
async fn close_with(
    tx: &mut SplitSink<WebSocket, Message>,
    status: &serde_json::Value,
    client: tokio::task::JoinHandle<()>,
) {
    let body = serde_json::to_vec(status).unwrap_or_default();
    if tx
        .send(Message::Binary(rc::frame(rc::ERROR, &body).into()))
        .await
        .is_err()
    {
        return;
    }
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, client).await;
}

/// Runs one exec session to its end.
async fn session(ws: WebSocket, version: Version, process: ExecProcess, command: Vec<String>) {
    let ExecProcess {
        stdin,
        stdout,
        stderr,
        exit,
        resize,
    } = process;
    let (mut tx, rx) = ws.split();
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(8);
    if let Some(out) = stdout {
        tokio::spawn(pump(out, rc::STDOUT, frames.clone()));
    }
    if let Some(err) = stderr {
        tokio::spawn(pump(err, rc::STDERR, frames.clone()));
    }
    drop(frames);
    let mut client = tokio::spawn(read_client(rx, stdin, resize, version));
    let mut exit = exit;
    let mut status = None;
    let mut output_open = true;
    let mut client_gone = false;
    let mut drain_deadline = None::<tokio::time::Instant>;
    while output_open || status.is_none() {
        let drain = async {
            match drain_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = outgoing.recv(), if output_open => match frame {
                Some(f) => {
                    if tx.send(Message::Binary(f.into())).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                None => output_open = false,
            },
            s = &mut exit, if status.is_none() => {
                status = Some(s);
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = drain => break,
            _ = &mut client => {
                client_gone = true;
                break;
            }
        }
    }
    if client_gone {
        // Dropping `exit` kills the process (runtimes hand it over with kill-on-drop).
        tracing::debug!("exec client went away before {command:?} finished");
        return;
    }
    let status = match status {
        Some(Ok(s)) => rc::exit_status(&command, s.code),
        Some(Err(e)) => rc::failure_status(&format!("waiting for {command:?}: {e}")),
        None => rc::failure_status("the command's output ended before it exited"),
    };
    close_with(&mut tx, &status, client).await;
}

/// Copies one of the process's outputs into channel messages.
async fn pump(
    mut from: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    channel: u8,
    to: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(rc::frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the client's messages until it closes: stdin data into the process, the close of
/// stdin, terminal sizes to the terminal (without one they are ignored). Returns when the
/// connection ends.
async fn read_client(
    mut rx: SplitStream<WebSocket>,
    mut stdin: Option<std::pin::Pin<Box<dyn AsyncWrite + Send>>>,
    resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    version: Version,
) {
    while let Some(Ok(msg)) = rx.next().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            // Pings are answered by the WebSocket layer; text is not part of the protocol.
            _ => continue,
        };
        match rc::parse_client(version, &data) {
            ClientFrame::Stdin(bytes) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(bytes).await.is_err() || w.flush().await.is_err() {
                        // The process closed its stdin; drop what else comes.
                        stdin = None;
                    }
                }
            }
            ClientFrame::Close(rc::STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            ClientFrame::Resize(size) => {
                if let (Some(set), Some((w, h))) = (resize.as_ref(), rc::parse_size(size)) {
                    set(w, h);
                }
            }
            ClientFrame::Close(_) | ClientFrame::Ignored => {}
        }
    }
}
