//! `pods/log` and `pods/exec` through a real server: exec over a real WebSocket client with
//! real host processes behind a small runtime (framing, v4/v5, stdin and its v5 close, resize
//! ignored, exit codes on the error channel, the normal close), and the Kubernetes errors for
//! unknown pods and containers, pods without a node and nodes without a runtime.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::status_of;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, PostParams};
use sarasa_apiserver::runtime::{
    ExecOptions, ExecProcess, ExitStatus, LogOptions, LogStream, PodRef, PodRuntime, RuntimeError,
};
use sarasa_apiserver::{ApiServer, Config};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Runs exec'd commands as host processes and serves logs from files: node "n1" only.
struct HostRuntime {
    logs: PathBuf,
    /// Chunks a following log reader gets, fed by the test.
    follow: Mutex<Option<tokio::sync::mpsc::Receiver<Vec<u8>>>>,
}

impl PodRuntime for HostRuntime {
    fn serves_node(&self, node: &str) -> bool {
        node == "n1"
    }

    fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        if opts.previous {
            return Err(RuntimeError::BadRequest(format!(
                "previous terminated container {container:?} in pod {:?} not found",
                pod.name
            )));
        }
        let text = std::fs::read(self.logs.join(format!("{}_{container}.log", pod.name)))
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let head = futures::stream::iter(vec![Ok(text)]);
        if !opts.follow {
            return Ok(head.boxed());
        }
        let rx = self.follow.lock().unwrap().take().expect("one follower");
        let tail =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
            );
        Ok(head.chain(tail).boxed())
    }

    fn check_exec(&self, pod: &PodRef, _container: &str) -> Result<(), RuntimeError> {
        if pod.name == "stopped" {
            return Err(RuntimeError::BadRequest(
                "container \"app\" in pod \"stopped\" is not running".into(),
            ));
        }
        Ok(())
    }

    fn exec(
        &self,
        _pod: &PodRef,
        _container: &str,
        opts: &ExecOptions,
    ) -> Result<ExecProcess, RuntimeError> {
        let mut cmd = tokio::process::Command::new(&opts.command[0]);
        cmd.args(&opts.command[1..])
            .stdin(if opts.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let stdin = child.stdin.take().map(|w| Box::pin(w) as _);
        let stdout = child.stdout.take().map(|r| Box::pin(r) as _);
        let stderr = child.stderr.take().map(|r| Box::pin(r) as _);
        let exit = async move {
            let s = child.wait().await?;
            Ok(ExitStatus {
                code: s.code().unwrap_or(128),
            })
        };
        Ok(ExecProcess {
            stdin,
            stdout,
            stderr,
            exit: Box::pin(exit),
            resize: None,
        })
    }
}

struct Harness {
    _state: tempfile::TempDir,
    addr: std::net::SocketAddr,
    client: kube::Client,
    logs: tempfile::TempDir,
    follow: tokio::sync::mpsc::Sender<Vec<u8>>,
    server: ApiServer,
}

async fn start() -> Harness {
    let logs = tempfile::tempdir().unwrap();
    let (follow, rx) = tokio::sync::mpsc::channel(4);
    let runtime = Arc::new(HostRuntime {
        logs: logs.path().to_path_buf(),
        follow: Mutex::new(Some(rx)),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path().join("state"));
    let server = ApiServer::open(config).unwrap().with_runtime(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s2 = server.clone();
    tokio::spawn(async move { s2.serve(listener).await });
    let url = format!("http://{addr}").parse().unwrap();
    let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, node, containers) in [
        ("web", Some("n1"), vec!["app"]),
        ("two", Some("n1"), vec!["a", "b"]),
        ("pending", None, vec!["app"]),
        ("elsewhere", Some("n9"), vec!["app"]),
        ("stopped", Some("n1"), vec!["app"]),
    ] {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": containers.iter().map(|c| json!({"name": c, "image": "x"})).collect::<Vec<_>>()}
        });
        if let Some(n) = node {
            pod["spec"]["nodeName"] = json!(n);
        }
        api.create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();
    }
    Harness {
        _state: dir,
        addr,
        client,
        logs,
        follow,
        server,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    h: &Harness,
    pod: &str,
    query: &str,
    protocol: &str,
) -> Result<(Ws, String), (u16, Value)> {
    let url = format!(
        "ws://{}/api/v1/namespaces/default/pods/{pod}/exec?{query}",
        h.addr
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            Ok((ws, proto))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).unwrap();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("connecting: {e}"),
    }
}

/// Everything the server sends until its close: bytes per channel, and the close code.
async fn collect(ws: &mut Ws) -> (Vec<Vec<u8>>, Option<CloseCode>) {
    let mut channels = vec![Vec::new(); 5];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the session ends in time");
        match msg {
            Some(Ok(Message::Binary(b))) => {
                let (ch, data) = b.split_first().expect("a channel byte");
                channels[*ch as usize].extend_from_slice(data);
            }
            Some(Ok(Message::Close(c))) => return (channels, c.map(|c| c.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error: {e}"),
            None => return (channels, None),
        }
    }
}

fn q(cmd: &[&str], extra: &str) -> String {
    let mut s: Vec<String> = cmd
        .iter()
        .map(|c| {
            format!(
                "command={}",
                c.replace(' ', "%20")
                    .replace('>', "%3E")
                    .replace('&', "%26")
            )
        })
        .collect();
    s.push(extra.to_string());
    s.join("&")
}

#[tokio::test]
async fn exec_v5_separates_streams_and_reports_the_exit_code() {
    let h = start().await;
    let (mut ws, proto) = connect(
        &h,
        "web",
        &q(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            "container=app&stdout=true&stderr=true",
        ),
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await
    .unwrap();
    assert_eq!(proto, "v5.channel.k8s.io");
    let (ch, close) = collect(&mut ws).await;
    assert_eq!(ch[1], b"out\n");
    assert_eq!(ch[2], b"err\n");
    let status: Value = serde_json::from_slice(&ch[3]).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(close, Some(CloseCode::Normal));

    // Success: the status says so, and a single container needs no `container=`.
    let (mut ws, _) = connect(
        &h,
        "web",
        &q(&["echo", "hi"], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap();
    let (ch, _) = collect(&mut ws).await;
    assert_eq!(ch[1], b"hi\n");
    assert_eq!(
        serde_json::from_slice::<Value>(&ch[3]).unwrap()["status"],
        "Success"
    );
}

#[tokio::test]
async fn exec_v5_pipes_stdin_until_the_client_closes_it() {
    let h = start().await;
    let (mut ws, _) = connect(
        &h,
        "web",
        &q(&["cat"], "stdin=true&stdout=true&stderr=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap();
    // A resize is read and ignored; stdin data goes through; the close of stdin ends `cat`.
    ws.send(Message::Binary(
        b"\x04{\"Width\":80,\"Height\":24}".to_vec().into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(b"\x00hello ".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00world\n".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let (ch, close) = collect(&mut ws).await;
    assert_eq!(ch[1], b"hello world\n");
    assert_eq!(
        serde_json::from_slice::<Value>(&ch[3]).unwrap()["status"],
        "Success"
    );
    assert_eq!(close, Some(CloseCode::Normal));
}

#[tokio::test]
async fn exec_v4_is_negotiated_when_offered_alone() {
    let h = start().await;
    let (mut ws, proto) = connect(
        &h,
        "web",
        &q(&["sh", "-c", "exit 0"], "stdout=true"),
        "v4.channel.k8s.io",
    )
    .await
    .unwrap();
    assert_eq!(proto, "v4.channel.k8s.io");
    let (ch, _) = collect(&mut ws).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&ch[3]).unwrap()["status"],
        "Success"
    );
}

#[tokio::test]
async fn a_client_that_leaves_takes_the_process_with_it() {
    let h = start().await;
    let marker = h.logs.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", marker.display());
    let (mut ws, _) = connect(
        &h,
        "web",
        &q(&["sh", "-c", &script], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap();
    let pid: i32 = common::eventually(10, "the pid file", || async {
        std::fs::read_to_string(&marker).ok()?.trim().parse().ok()
    })
    .await;
    ws.close(None).await.unwrap();
    common::eventually(10, "the exec'd process to be killed", || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie waiting for its reaper.
        stat.filter(|s| !s.contains(") Z ")).is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn exec_errors_are_kubernetes_statuses() {
    let h = start().await;
    let (code, st) = connect(
        &h,
        "nope",
        &q(&["true"], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap_err();
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(st["message"], "pods \"nope\" not found");

    let (code, st) = connect(
        &h,
        "web",
        &q(&["true"], "container=nope&stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap_err();
    assert_eq!(code, 400);
    assert_eq!(st["message"], "container nope is not valid for pod web");

    let (code, st) = connect(&h, "two", &q(&["true"], "stdout=true"), "v5.channel.k8s.io")
        .await
        .unwrap_err();
    assert_eq!(code, 400);
    assert_eq!(
        st["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );

    let (code, st) = connect(
        &h,
        "pending",
        &q(&["true"], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap_err();
    assert_eq!(code, 400);
    assert_eq!(st["message"], "pod pending does not have a host assigned");

    let (code, st) = connect(
        &h,
        "elsewhere",
        &q(&["true"], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap_err();
    assert_eq!(code, 400);
    assert!(st["message"].as_str().unwrap().contains("n9"), "{st}");

    let (code, st) = connect(
        &h,
        "web",
        &q(&["true"], "stdout=false"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap_err();
    assert_eq!(code, 400);
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("at least 1 of stdin, stdout, stderr"));

    let (code, _) = connect(&h, "web", &q(&["true"], "stdout=true"), "v3.channel.k8s.io")
        .await
        .unwrap_err();
    assert_eq!(code, 400);

    // A plain (or SPDY) request is refused with a Status, after the same checks.
    let http = reqwest_like(
        &h,
        "POST",
        "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true",
    )
    .await;
    assert_eq!(http.0, 400);
    assert!(http.1["message"]
        .as_str()
        .unwrap()
        .contains("Upgrade request required"));
    let http = reqwest_like(
        &h,
        "POST",
        "/api/v1/namespaces/default/pods/nope/exec?command=true&stdout=true",
    )
    .await;
    assert_eq!(http.0, 404);
}

/// One plain HTTP/1.1 request; status code and JSON body.
async fn reqwest_like(h: &Harness, method: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let code = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("{}");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn logs_stream_and_fail_as_kubernetes_does() {
    let h = start().await;
    std::fs::write(h.logs.path().join("web_app.log"), "one\ntwo\n").unwrap();
    let api: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    assert_eq!(
        api.logs("web", &LogParams::default()).await.unwrap(),
        "one\ntwo\n"
    );
    let lp = LogParams {
        limit_bytes: Some(5),
        ..LogParams::default()
    };
    assert_eq!(api.logs("web", &lp).await.unwrap(), "one\nt");

    // Following: a chunk written later arrives while the response is still open.
    let lp = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut stream = api.log_stream("web", &lp).await.unwrap();
    let mut seen = Vec::new();
    h.follow.send(b"three\n".to_vec()).await.unwrap();
    use futures::AsyncBufReadExt;
    let mut lines = (&mut stream).lines();
    for _ in 0..3 {
        let l = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("a followed line in time")
            .unwrap()
            .unwrap();
        seen.push(l);
    }
    assert_eq!(seen, ["one", "two", "three"]);

    let s = status_of(api.logs("nope", &LogParams::default()).await);
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "pods \"nope\" not found")
    );
    let lp = LogParams {
        container: Some("nope".into()),
        ..LogParams::default()
    };
    let s = status_of(api.logs("web", &lp).await);
    assert_eq!(
        (s.code, s.message.as_str()),
        (400, "container nope is not valid for pod web")
    );
    let lp = LogParams {
        previous: true,
        ..LogParams::default()
    };
    let s = status_of(api.logs("web", &lp).await);
    assert_eq!(s.code, 400);
    assert!(
        s.message.contains("previous terminated container"),
        "{}",
        s.message
    );
    let lp = LogParams {
        tail_lines: Some(-1),
        ..LogParams::default()
    };
    let s = status_of(api.logs("web", &lp).await);
    assert_eq!(s.code, 422);
    assert!(s.message.contains("tailLines"), "{}", s.message);
    // Other pod subresources still reach the generic handler.
    let st = api.get_status("web").await.unwrap();
    assert_eq!(st.metadata.name.as_deref(), Some("web"));
    h.server.shutdown();
}

#[tokio::test]
async fn runtime_refusals_reach_websocket_and_fallback_attempts_alike() {
    let h = start().await;
    let (code, st) = connect(
        &h,
        "stopped",
        &q(&["true"], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap_err();
    assert_eq!(code, 400);
    assert_eq!(
        st["message"],
        "container \"app\" in pod \"stopped\" is not running"
    );
    let (code, st) = reqwest_like(
        &h,
        "POST",
        "/api/v1/namespaces/default/pods/stopped/exec?command=true&stdout=true",
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        st["message"],
        "container \"app\" in pod \"stopped\" is not running"
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_on_the_error_channel() {
    let h = start().await;
    let (mut ws, _) = connect(
        &h,
        "web",
        &q(&["/nonexistent/program"], "stdout=true"),
        "v5.channel.k8s.io",
    )
    .await
    .unwrap();
    let (ch, close) = collect(&mut ws).await;
    let status: Value = serde_json::from_slice(&ch[3]).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "InternalError");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("error executing command in container"),
        "{status}"
    );
    assert_eq!(close, Some(CloseCode::Normal));
}
