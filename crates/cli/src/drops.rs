//! The pure part of `sarasa drops`: reading an agent's `GET /drops` reply, following each
//! node's sequence across polls (and across agent restarts), merging the nodes' events by
//! time, filtering by namespace, and the text and JSON forms of one event. No sockets here:
//! `cmd_drops` fetches, this decides.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use sarasa_agent::droplog::{DropEndpoint, DropPage, DropRecord};
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DropsError {
    #[error("malformed HTTP reply from the agent: {0}")]
    Http(String),
    #[error("the agent answered {0}")]
    Status(String),
    #[error("the agent's /drops reply is not a drop page: {0}")]
    Json(String),
}

/// One event and the node whose agent reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDrop {
    pub node: String,
    pub record: DropRecord,
}

/// The drop page in an HTTP/1.1 reply (`Content-Length` or chunked body).
pub fn parse_reply(reply: &[u8]) -> Result<DropPage, DropsError> {
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| DropsError::Http("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let body = &reply[split + 4..];
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(DropsError::Status(status.to_string()));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&body).map_err(|e| DropsError::Json(e.to_string()))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, DropsError> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| DropsError::Http("chunk size line".into()))?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| DropsError::Http(format!("chunk size {size_text:?}")))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err(DropsError::Http("chunk shorter than its size".into()));
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

/// Where each node's agent is in its sequence: (agent start, last seq seen).
#[derive(Debug, Default)]
pub struct Cursor {
    nodes: BTreeMap<String, (u64, u64)>,
}

/// What to do with a page.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// New events (possibly none), and how many the ring evicted before they could be read.
    Events(Vec<DropRecord>, u64),
    /// The agent restarted since the last poll: ask it again from the start.
    Restarted,
}

impl Cursor {
    /// The `since` to ask `node` with.
    pub fn since(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |(_, seq)| *seq)
    }

    pub fn accept(&mut self, node: &str, page: DropPage) -> Accepted {
        match self.nodes.get(node) {
            Some((start, seq)) if *start != page.agent_start_ms && *seq > 0 => {
                self.nodes
                    .insert(node.to_string(), (page.agent_start_ms, 0));
                return Accepted::Restarted;
            }
            _ => {}
        }
        let last = page
            .events
            .iter()
            .map(|e| e.seq)
            .max()
            .unwrap_or(self.since(node))
            .max(self.since(node));
        self.nodes
            .insert(node.to_string(), (page.agent_start_ms, last));
        Accepted::Events(page.events, page.missed)
    }
}

/// True when either end, or the pod whose policy dropped it, is in one of `namespaces`
/// (every event when none are given).
pub fn in_namespaces(r: &DropRecord, namespaces: &[String]) -> bool {
    if namespaces.is_empty() {
        return true;
    }
    let ns_of = |key: &str| key.split_once('/').map(|(ns, _)| ns.to_string());
    [
        r.src.pod.as_deref(),
        r.dst.pod.as_deref(),
        Some(r.pod.as_str()),
    ]
    .into_iter()
    .flatten()
    .filter_map(ns_of)
    .any(|ns| namespaces.contains(&ns))
}

/// Every node's events, filtered, oldest first (ties: node, then its sequence).
pub fn merge(batches: Vec<(String, Vec<DropRecord>)>, namespaces: &[String]) -> Vec<NodeDrop> {
    let mut all: Vec<NodeDrop> = batches
        .into_iter()
        .flat_map(|(node, records)| {
            records.into_iter().map(move |record| NodeDrop {
                node: node.clone(),
                record,
            })
        })
        .filter(|d| in_namespaces(&d.record, namespaces))
        .collect();
    all.sort_by(|a, b| {
        (a.record.time_ms, &a.node, a.record.seq).cmp(&(b.record.time_ms, &b.node, b.record.seq))
    });
    all
}

/// RFC 3339 with milliseconds, UTC.
pub fn time_text(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn end_text(e: &DropEndpoint) -> String {
    match &e.pod {
        Some(p) => format!("{p} ({})", e.ip),
        None => e.ip.to_string(),
    }
}

/// `TIME NODE DIRECTION SRC -> DST:PORT/PROTO at POD by POLICIES`.
pub fn text_line(d: &NodeDrop) -> String {
    let r = &d.record;
    let dst_ip = match r.dst.ip {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        v4 => v4.to_string(),
    };
    let dst = match &r.dst.pod {
        Some(p) => format!("{p} ({dst_ip}:{}/{})", r.port, r.protocol),
        None => format!("{dst_ip}:{}/{}", r.port, r.protocol),
    };
    format!(
        "{} {} {:<7} {} -> {} dropped at {} by {}",
        time_text(r.time_ms),
        d.node,
        r.direction,
        end_text(&r.src),
        dst,
        r.pod,
        if r.policies.is_empty() {
            "-".to_string()
        } else {
            r.policies.join(",")
        }
    )
}

/// One JSON object: the agent's record plus `node` and `time` (RFC 3339).
pub fn json_line(d: &NodeDrop) -> Value {
    let mut v = serde_json::to_value(&d.record).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("node".into(), Value::String(d.node.clone()));
        m.insert("time".into(), Value::String(time_text(d.record.time_ms)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, time_ms: u64, src: Option<&str>, dst: Option<&str>) -> DropRecord {
        DropRecord {
            seq,
            time_ms,
            direction: "ingress".into(),
            pod: dst.unwrap_or("x/a").into(),
            src: DropEndpoint {
                ip: "10.244.2.3".parse().unwrap(),
                pod: src.map(Into::into),
            },
            dst: DropEndpoint {
                ip: "10.244.1.2".parse().unwrap(),
                pod: dst.map(Into::into),
            },
            protocol: "tcp".into(),
            port: 80,
            policies: vec!["x/deny".into(), "x/b-from-z".into()],
        }
    }

    fn page(start: u64, events: Vec<DropRecord>) -> DropPage {
        DropPage {
            agent_start_ms: start,
            latest: events.iter().map(|e| e.seq).max().unwrap_or(0),
            missed: 0,
            events,
        }
    }

    #[test]
    fn reply_with_content_length_or_chunks_gives_the_page() {
        let p = page(7, vec![rec(1, 1000, Some("y/b"), Some("x/a"))]);
        let body = serde_json::to_string(&p).unwrap();
        let plain = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(parse_reply(plain.as_bytes()).unwrap(), p);
        let (a, b) = body.split_at(10);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        assert_eq!(parse_reply(chunked.as_bytes()).unwrap(), p);
        assert!(matches!(
            parse_reply(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(DropsError::Status(_))
        ));
        assert!(matches!(
            parse_reply(b"HTTP/1.1 200 OK\r\n\r\nnot json"),
            Err(DropsError::Json(_))
        ));
        assert!(matches!(parse_reply(b"garbage"), Err(DropsError::Http(_))));
    }

    #[test]
    fn cursor_asks_only_for_new_events_and_restarts_with_the_agent() {
        let mut c = Cursor::default();
        assert_eq!(c.since("node-1"), 0);
        let got = c.accept(
            "node-1",
            page(7, vec![rec(1, 1, None, None), rec(2, 2, None, None)]),
        );
        assert!(matches!(got, Accepted::Events(ref e, 0) if e.len() == 2));
        assert_eq!(c.since("node-1"), 2);
        assert_eq!(
            c.accept("node-1", page(7, vec![])),
            Accepted::Events(vec![], 0)
        );
        assert_eq!(c.since("node-1"), 2);
        // The agent restarted (new start time): ask again from 0.
        assert_eq!(
            c.accept("node-1", page(9, vec![rec(3, 5, None, None)])),
            Accepted::Restarted
        );
        assert_eq!(c.since("node-1"), 0);
        let got = c.accept(
            "node-1",
            page(9, vec![rec(1, 4, None, None), rec(3, 5, None, None)]),
        );
        assert!(matches!(got, Accepted::Events(ref e, 0) if e.len() == 2));
        assert_eq!(c.since("node-1"), 3);
        assert_eq!(c.since("node-2"), 0);
    }

    #[test]
    fn events_merge_by_time_across_nodes_and_filter_by_either_end() {
        let merged = merge(
            vec![
                (
                    "node-2".into(),
                    vec![
                        rec(1, 300, Some("y/b"), Some("x/a")),
                        rec(2, 100, Some("z/c"), Some("z/d")),
                    ],
                ),
                ("node-1".into(), vec![rec(5, 200, Some("y/b"), None)]),
            ],
            &[],
        );
        let order: Vec<(u64, &str)> = merged
            .iter()
            .map(|d| (d.record.time_ms, d.node.as_str()))
            .collect();
        assert_eq!(order, [(100, "node-2"), (200, "node-1"), (300, "node-2")]);
        let only = |ns: &str| -> Vec<u64> {
            merge(
                vec![(
                    "n".into(),
                    vec![
                        rec(1, 1, Some("y/b"), Some("x/a")),
                        rec(2, 2, Some("z/c"), Some("z/d")),
                    ],
                )],
                &[ns.to_string()],
            )
            .iter()
            .map(|d| d.record.seq)
            .collect()
        };
        assert_eq!(only("x"), [1]);
        assert_eq!(only("y"), [1]);
        assert_eq!(only("z"), [2]);
        assert!(only("w").is_empty());
    }

    #[test]
    fn text_and_json_forms_name_node_pods_port_and_policies() {
        let d = NodeDrop {
            node: "node-2".into(),
            record: rec(4, 1_764_656_000_123, Some("y/b"), Some("x/a")),
        };
        assert_eq!(
            text_line(&d),
            "2025-12-02T06:13:20.123Z node-2 ingress y/b (10.244.2.3) -> x/a (10.244.1.2:80/tcp) \
             dropped at x/a by x/deny,x/b-from-z"
        );
        let j = json_line(&d);
        assert_eq!(j["node"], "node-2");
        assert_eq!(j["time"], "2025-12-02T06:13:20.123Z");
        assert_eq!(j["src"]["pod"], "y/b");
        assert_eq!(j["dst"]["ip"], "10.244.1.2");
        assert_eq!(j["port"], 80);
        assert_eq!(j["policies"][1], "x/b-from-z");
        let external = NodeDrop {
            node: "node-1".into(),
            record: rec(1, 0, None, None),
        };
        assert!(text_line(&external).contains(" 10.244.2.3 -> 10.244.1.2:80/tcp "));
    }
}
