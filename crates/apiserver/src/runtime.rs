//! The container runtime seam of the API server: what `pods/log` and `pods/exec` need from
//! whatever runs the containers. kube-apiserver forwards these subresources to the kubelet of
//! the pod's node; this server stays runtime-agnostic and calls a [`PodRuntime`] instead, which
//! the lab's pod runner implements. The server resolves the pod and the container and answers
//! the Kubernetes errors (unknown pod or container, no node, no runtime) itself, so a runtime
//! only deals with pods it runs.

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncWrite};

/// Which pod a request is about, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`.
    pub node: String,
    /// The Pod object as stored (its containers' env, command, ...).
    pub object: serde_json::Value,
}

/// What `kubectl logs` asks for (`PodLogOptions`), already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The previous, terminated instance of the container (`--previous`).
    pub previous: bool,
    /// Keep the stream open and send lines as they are written (`-f`).
    pub follow: bool,
    /// Only the last N lines (`--tail`); applied before following.
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time (`--since`, `--since-time`).
    pub since: Option<Timestamp>,
    /// Prefix each line with its RFC 3339 time (`--timestamps`).
    pub timestamps: bool,
}

/// The log of a container as a stream of byte chunks, already formatted for the client.
pub type LogStream = BoxStream<'static, std::io::Result<Vec<u8>>>;

/// How an exec'd process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code; 128 + N when killed by signal N, as shells and container runtimes report.
    pub code: i32,
}

/// A process started in a container, its standard streams piped.
pub struct ExecProcess {
    /// Present when the request asked for stdin; dropping it closes the process's stdin.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub stdout: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Resolves when the process exits.
    pub exit: BoxFuture<'static, std::io::Result<ExitStatus>>,
    /// With a terminal: sets its size (columns, rows) when the client sends one.
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
}

/// What an exec request asks for (`PodExecOptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal was requested: the command runs on a pseudo-terminal (stdin, stdout and
    /// stderr all on it, as kubelet's runtimes do), sized by the client's resize messages.
    pub tty: bool,
}

/// Why a runtime could not serve a request. The server turns these into `Status` objects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// The request cannot be served as asked (container not started yet, no previous
    /// instance): 400 BadRequest, as the kubelet's answers reach kubectl.
    #[error("{0}")]
    BadRequest(String),
    /// The runtime failed (process could not start, log unreadable): 500.
    #[error("{0}")]
    Internal(String),
}

/// A container runtime serving the pods of one or more nodes.
pub trait PodRuntime: Send + Sync + 'static {
    /// True when this runtime runs the pods of `node` (else the server answers that the node
    /// has no runtime).
    fn serves_node(&self, node: &str) -> bool;

    /// Opens the log of `container` in `pod`.
    fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<LogStream, RuntimeError>;

    /// Whether `container` of `pod` can take an exec now (it runs); asked before anything
    /// else, so every attempt of a client (WebSocket, then a SPDY fallback) gets the answer.
    fn check_exec(&self, pod: &PodRef, container: &str) -> Result<(), RuntimeError>;

    /// Starts `opts.command` in `container` of `pod`: its namespaces, its environment. An
    /// `Internal` error (the program could not start) reaches the client on the error channel.
    fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &ExecOptions,
    ) -> Result<ExecProcess, RuntimeError>;
}
