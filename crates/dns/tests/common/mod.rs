//! Privileged test fixture: a network namespace `sarasa-t<pid>-<tag>` (removed by a Drop
//! guard, also on failure) holding an in-process lab API server (`127.0.0.1:6443`) and the DNS
//! server (`127.0.0.1:53`, metrics `127.0.0.1:9153`), both on a tokio runtime whose threads
//! live in the namespace, so every socket — listeners, the kube client, upstream queries — is
//! the namespace's. `dig` runs in the namespace with `ip netns exec`.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sarasa_dns::config::ZoneConfig;
use sarasa_dns::server::{self, Settings};
use serde_json::{json, Value};

pub const API: &str = "http://127.0.0.1:6443";
pub const DNS: &str = "127.0.0.1";

pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(ns)
}

/// A network namespace this test made; deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let name = format!("sarasa-t{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = TestNs { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside the namespace (sockets and threads made there stay there).
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = netns_path(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    /// `command args...` inside the namespace.
    pub fn exec(&self, command: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, command])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, its runtime, the API server and the DNS server.
pub struct Fixture {
    // Field order: the runtime stops (closing every socket) before the namespace goes.
    pub rt: Option<tokio::runtime::Runtime>,
    pub client: kube::Client,
    pub dns: tokio::task::JoinHandle<Result<(), server::ServerError>>,
    _state: tempfile::TempDir,
    pub ns: TestNs,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

pub fn settings(upstreams: Vec<SocketAddr>) -> Settings {
    Settings {
        listen: vec![format!("{DNS}:53").parse().unwrap()],
        metrics_listen: Some("127.0.0.1:9153".parse().unwrap()),
        zone: ZoneConfig::new("cluster.local").unwrap(),
        upstreams,
        cache_size: 1000,
        udp_workers: 0,
        fast_path: true,
    }
}

impl Fixture {
    pub fn start(tag: &str, settings: Settings) -> Fixture {
        let ns = TestNs::new(tag);
        let state = tempfile::tempdir().unwrap();
        let api_dir = state.path().join("api");
        let (rt, client, dns) = ns.enter(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (client, dns) = rt.block_on(async move {
                let server =
                    sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(api_dir))
                        .expect("open API server");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:6443")
                    .await
                    .unwrap();
                tokio::spawn(async move { server.serve(listener).await });
                let client = server::client(Some(API)).await.unwrap();
                let c = client.clone();
                let dns = tokio::spawn(async move { server::run(settings, c).await });
                (client, dns)
            });
            (rt, client, dns)
        });
        let fx = Fixture {
            rt: Some(rt),
            client,
            dns,
            _state: state,
            ns,
        };
        fx.wait_ready();
        fx
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    /// Runs `f` on the namespace's runtime (on its worker threads, so in the namespace).
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.rt().spawn(f);
        self.rt().block_on(handle).expect("task")
    }

    /// GET `path` from the metrics endpoint: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let path = path.to_string();
        self.run(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:9153").await else {
                return (0, String::new());
            };
            let req = format!("GET {path} HTTP/1.0\r\nHost: dns\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let code = out
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = out
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            (code, body)
        })
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.http_get("/readyz").0 == 200 {
                return;
            }
            assert!(!self.dns.is_finished(), "the DNS server stopped");
            assert!(
                Instant::now() < deadline,
                "DNS server not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn create(&self, kind: &str, ns: &str, obj: Value) {
        let client = self.client.clone();
        let kind = kind.to_string();
        let ns = ns.to_string();
        self.run(async move {
            let pp = PostParams::default();
            match kind.as_str() {
                "Service" => {
                    let api: Api<Service> = Api::namespaced(client, &ns);
                    api.create(&pp, &serde_json::from_value(obj).unwrap())
                        .await
                        .map(|_| ())
                }
                "Pod" => {
                    let api: Api<Pod> = Api::namespaced(client, &ns);
                    api.create(&pp, &serde_json::from_value(obj).unwrap())
                        .await
                        .map(|_| ())
                }
                "Namespace" => {
                    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
                    api.create(&pp, &serde_json::from_value(obj).unwrap())
                        .await
                        .map(|_| ())
                }
                "EndpointSlice" => {
                    let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
                        Api::namespaced(client, &ns);
                    api.create(&pp, &serde_json::from_value(obj).unwrap())
                        .await
                        .map(|_| ())
                }
                other => panic!("kind {other}"),
            }
        })
        .unwrap_or_else(|e| panic!("create: {e}"));
    }

    pub fn delete_service(&self, ns: &str, name: &str) {
        let client = self.client.clone();
        let (ns, name) = (ns.to_string(), name.to_string());
        self.run(async move {
            let api: Api<Service> = Api::namespaced(client, &ns);
            api.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
        })
        .expect("delete service");
    }

    /// The Service's allocated clusterIP.
    pub fn cluster_ip(&self, ns: &str, name: &str) -> String {
        let client = self.client.clone();
        let (ns, name) = (ns.to_string(), name.to_string());
        self.run(async move {
            let api: Api<Service> = Api::namespaced(client, &ns);
            api.get(&name)
                .await
                .unwrap()
                .spec
                .unwrap()
                .cluster_ip
                .unwrap()
        })
    }

    /// A pod with an address, Running; `ready` sets its Ready condition.
    pub fn pod(
        &self,
        ns: &str,
        name: &str,
        ip: &str,
        labels: Value,
        extra_spec: Value,
        ready: bool,
    ) {
        let mut spec = json!({"containers": [{"name": "c", "image": "x"}], "nodeName": "node-1"});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        self.create(
            "Pod",
            ns,
            json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
        );
        let client = self.client.clone();
        let (ns, name, ip) = (ns.to_string(), name.to_string(), ip.to_string());
        let status = if ready { "True" } else { "False" };
        self.run(async move {
            let api: Api<Pod> = Api::namespaced(client, &ns);
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": status}]}})),
            )
            .await
            .map(|_| ())
        })
        .expect("pod status");
    }
}

/// What dig printed: status, header flags, sections as (name, ttl, type, data).
#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    pub opt: Option<String>,
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The answer section's data of `rtype`, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }
}

/// Runs dig in the namespace against the server: `args` are dig's (name, type, options).
pub fn dig(ns: &TestNs, args: &[&str]) -> Dig {
    let server = format!("@{DNS}");
    let mut all = vec![
        server.as_str(),
        "+tries=1",
        "+time=3",
        "+nocookie",
        "+noall",
        "+comments",
        "+question",
        "+answer",
        "+authority",
        "+additional",
    ];
    all.extend_from_slice(args);
    let out = ns.exec("dig", &all);
    let mut d = parse_dig(&String::from_utf8_lossy(&out.stdout));
    d.raw.push_str(&String::from_utf8_lossy(&out.stderr));
    d
}

pub fn parse_dig(text: &str) -> Dig {
    let mut d = Dig {
        raw: text.to_string(),
        ..Dig::default()
    };
    let mut section = "";
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix(";; ->>HEADER<<-") {
            d.status = rest
                .split(',')
                .find_map(|p| p.trim().strip_prefix("status: "))
                .unwrap_or("")
                .to_string();
        } else if let Some(rest) = l.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if let Some(rest) = l.strip_prefix("; EDNS:") {
            d.opt = Some(rest.trim().to_string());
        } else if l.starts_with(";; QUESTION SECTION") {
            section = "q";
        } else if l.starts_with(";; ANSWER SECTION") {
            section = "an";
        } else if l.starts_with(";; AUTHORITY SECTION") {
            section = "au";
        } else if l.starts_with(";; ADDITIONAL SECTION") {
            section = "ad";
        } else if l.starts_with(";; OPT PSEUDOSECTION") {
            section = "";
        } else if section == "q" && l.starts_with(';') && !l.starts_with(";;") {
            d.question.push(l.trim_start_matches(';').to_string());
        } else if !l.is_empty() && !l.starts_with(';') {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let rr = Rr {
                name: f[0].to_string(),
                ttl: f[1].parse().unwrap_or(0),
                rtype: f[3].to_string(),
                data: f[4..].join(" "),
            };
            match section {
                "an" => d.answer.push(rr),
                "au" => d.authority.push(rr),
                "ad" => d.additional.push(rr),
                _ => {}
            }
        }
    }
    d
}

/// Polls `f` until it returns true or `timeout` passes; returns the time it took.
pub fn poll(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
