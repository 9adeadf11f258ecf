//! The remote command stream protocol of `pods/exec` over WebSocket, as kubectl and client-go
//! speak it (k8s.io/apimachinery/pkg/util/remotecommand): every binary message starts with a
//! channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize — and the rest is that
//! channel's data. The error channel carries one JSON `Status` when the command ends: Success,
//! or Failure with reason NonZeroExitCode and the code as an `ExitCode` cause, which kubectl
//! turns into its own exit status. v5 adds a close message (255, channel) so the client can
//! signal the end of stdin, which v4 cannot; this module only frames and parses, the session
//! lives in `http::exec`.

use serde_json::{json, Value};

/// The subprotocol kubectl (client-go ≥ 1.30) asks for.
pub const V5: &str = "v5.channel.k8s.io";
/// The previous version, still accepted (no stdin close).
pub const V4: &str = "v4.channel.k8s.io";
/// Subprotocols this server speaks, preferred first.
pub const PROTOCOLS: [&str; 2] = [V5, V4];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5 only: the next byte names a channel the sender will write no more to.
pub const CLOSE: u8 = 255;

/// The negotiated protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

impl Version {
    pub fn from_name(name: &str) -> Option<Version> {
        match name {
            V5 => Some(Version::V5),
            V4 => Some(Version::V4),
            _ => None,
        }
    }
}

/// A message from the client, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// Data for the process's stdin.
    Stdin(&'a [u8]),
    /// A terminal size (JSON `{"Width":..,"Height":..}`).
    Resize(&'a [u8]),
    /// v5: the client closed this channel (stdin: end of input).
    Close(u8),
    /// An empty message or an unknown channel: ignored, as kube-apiserver ignores them.
    Ignored,
}

/// Parses one binary message of the client.
pub fn parse_client(version: Version, msg: &[u8]) -> ClientFrame<'_> {
    match msg {
        [STDIN, data @ ..] => ClientFrame::Stdin(data),
        [RESIZE, data @ ..] => ClientFrame::Resize(data),
        [CLOSE, channel, ..] if version == Version::V5 => ClientFrame::Close(*channel),
        _ => ClientFrame::Ignored,
    }
}

/// A resize message's terminal size, `{"Width":80,"Height":24}`: (columns, rows).
pub fn parse_size(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let s: Size = serde_json::from_slice(data).ok()?;
    Some((s.width, s.height))
}

/// One message for `channel` carrying `data`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The `Status` the error channel carries when the command exited with `code`, worded as the
/// kubelet words it.
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `Status` the error channel carries when the command could not run to its end.
pub fn failure_status(message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_by_channel_byte() {
        assert_eq!(
            parse_client(Version::V5, b"\x00hi"),
            ClientFrame::Stdin(b"hi")
        );
        assert_eq!(parse_client(Version::V5, b"\x00"), ClientFrame::Stdin(b""));
        assert_eq!(
            parse_client(Version::V5, b"\x04{\"Width\":80,\"Height\":24}"),
            ClientFrame::Resize(b"{\"Width\":80,\"Height\":24}")
        );
        assert_eq!(
            parse_client(Version::V5, &[CLOSE, STDIN]),
            ClientFrame::Close(STDIN)
        );
        // v4 has no close signal: the byte is an unknown channel.
        assert_eq!(
            parse_client(Version::V4, &[CLOSE, STDIN]),
            ClientFrame::Ignored
        );
        assert_eq!(parse_client(Version::V5, b""), ClientFrame::Ignored);
        assert_eq!(parse_client(Version::V5, b"\x07x"), ClientFrame::Ignored);
    }

    #[test]
    fn resize_messages_carry_width_and_height() {
        assert_eq!(parse_size(br#"{"Width":120,"Height":40}"#), Some((120, 40)));
        assert_eq!(parse_size(b"{}"), None);
        assert_eq!(parse_size(b"junk"), None);
    }

    #[test]
    fn frames_lead_with_the_channel() {
        assert_eq!(frame(STDOUT, b"hi\n"), b"\x01hi\n");
        assert_eq!(frame(ERROR, b""), b"\x03");
    }

    #[test]
    fn exit_codes_become_status_causes_client_go_reads() {
        let ok = exit_status(&["true".into()], 0);
        assert_eq!(ok["status"], "Success");
        assert!(ok.get("details").is_none());
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let failed = exit_status(&cmd, 3);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert!(failed["message"]
            .as_str()
            .unwrap()
            .starts_with("command terminated with non-zero exit code"));
    }

    #[test]
    fn protocol_names_map_to_versions() {
        assert_eq!(Version::from_name(V5), Some(Version::V5));
        assert_eq!(Version::from_name(V4), Some(Version::V4));
        assert_eq!(Version::from_name("v3.channel.k8s.io"), None);
    }
}
