//! deploy/ as shipped, read the way the agent and the API see it: the ConfigMap's settings
//! file passes the agent's own validation, every container's command line parses with the
//! agent's own flags, the probes hit endpoints the health server serves, and the DaemonSet has
//! what a node agent needs (host network, every taint tolerated, node identity from the
//! downward API, only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (BIRD's port 179 with backend
//! bgp), hostPath mounts where the agent writes).

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use sarasa_agent::config_file::ConfigFile;
use sarasa_agent::install_cni::InstallCniConfig;
use sarasa_agent::uninstall::UninstallConfig;
use sarasa_agent::AgentConfig;
use serde::Deserialize;
use serde_json::Value;

fn docs(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} missing"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[derive(Parser)]
struct Agent {
    #[command(flatten)]
    agent: AgentConfig,
}
#[derive(Parser)]
struct Install {
    #[command(flatten)]
    c: InstallCniConfig,
}
#[derive(Parser)]
struct Uninstall {
    #[command(flatten)]
    c: UninstallConfig,
}

/// A container's args after `sarasa agent [sub]`.
fn args(c: &Value, sub: Option<&str>) -> Vec<String> {
    let mut cmd = strings(&c["command"]);
    assert_eq!(cmd[..2], ["sarasa".to_string(), "agent".to_string()], "{c}");
    let rest: Vec<String> = cmd.split_off(2);
    match sub {
        Some(s) => assert_eq!(rest.first().map(String::as_str), Some(s), "{c}"),
        None => assert!(rest.is_empty(), "{c}"),
    }
    let mut out = vec!["sarasa".to_string()];
    out.extend(rest.into_iter().skip(usize::from(sub.is_some())));
    out.extend(strings(&c["args"]));
    out
}

#[tokio::test]
async fn the_install_manifest_is_what_the_agent_runs_with() {
    let docs = docs("sarasa.yaml");
    find(&docs, "Namespace", "sarasa-system");
    assert_eq!(sarasa_agent::lease::LEASE_NAMESPACE, "sarasa-system");

    // The settings file passes the agent's validation.
    let cm = find(&docs, "ConfigMap", "sarasa-config");
    let file = ConfigFile::parse(cm["data"]["config.yaml"].as_str().unwrap()).expect("config");
    let mut config = AgentConfig::new("n1");
    file.apply(&mut config, &|_: &str| false).unwrap();
    config.validate().expect("valid settings");
    assert_eq!(config.cluster_cidr[0].to_string(), "10.244.0.0/16");

    let ds = find(&docs, "DaemonSet", "sarasa-agent");
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "sarasa-agent");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );

    let init = &pod["initContainers"][0];
    let install = Install::try_parse_from(args(init, Some("install-cni"))).expect("init args");
    assert!(install.c.sysctls);
    let mounts = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let vol = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .unwrap_or_else(|| panic!("volume {} missing", m["name"]));
                let host = vol["hostPath"]["path"].as_str().unwrap_or("-").to_string();
                (m["mountPath"].as_str().unwrap().to_string(), host)
            })
            .collect()
    };
    let init_mounts = mounts(init);
    assert!(init_mounts.contains(&(
        install.c.cni_bin_dir.display().to_string(),
        "/opt/cni/bin".into()
    )));

    let agent = &pod["containers"][0];
    let mut argv = args(agent, None);
    argv.extend(["--node-name".into(), "n1".into()]);
    let parsed = Agent::try_parse_from(&argv).expect("agent args").agent;
    assert!(parsed.host_netns);
    assert_eq!(
        parsed.config.as_deref(),
        Some(Path::new("/etc/sarasa/config.yaml"))
    );
    let env = agent["env"].as_array().unwrap();
    let node_name = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let caps = &agent["securityContext"]["capabilities"];
    assert_eq!(strings(&caps["add"]), ["NET_ADMIN", "NET_BIND_SERVICE"]);
    assert_eq!(strings(&caps["drop"]), ["ALL"]);
    assert_eq!(agent["securityContext"]["privileged"], false);
    let agent_mounts = mounts(agent);
    // Where the agent writes on the host: the conflist and the IPAM state.
    let host_of = |dir: &Path| {
        agent_mounts
            .iter()
            .find(|(m, _)| dir.starts_with(m))
            .map(|(m, h)| (m.clone(), h.clone()))
            .unwrap_or_else(|| panic!("{} not mounted", dir.display()))
    };
    assert_eq!(host_of(&parsed.cni_conf_dir).1, "/etc/cni/net.d");
    assert_eq!(host_of(&parsed.ipam_data_dir).1, "/var/lib/sarasa");
    assert_eq!(host_of(Path::new("/etc/sarasa/config.yaml")).1, "-");

    // The probes and the metrics port are the health server's.
    let port = &agent["ports"][0];
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(parsed.health_listen.port()))
    );
    let metrics = Arc::new(sarasa_agent::health::Metrics::default());
    let listener = sarasa_agent::health::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sarasa_agent::health::serve(listener, metrics.clone()));
    metrics
        .programmed
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = &agent[probe]["httpGet"];
        assert_eq!(p["port"], port["name"], "{probe}");
        let path = p["path"].as_str().unwrap();
        let status = http_status(addr, path).await;
        assert_eq!(status, 200, "{probe} {path}");
    }
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out[9..12].parse().unwrap()
}

#[test]
fn the_uninstall_manifest_runs_uninstall_on_every_node() {
    let docs = docs("uninstall/uninstall.yaml");
    let ds = find(&docs, "DaemonSet", "sarasa-uninstall");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let init = Uninstall::try_parse_from(args(&pod["initContainers"][0], Some("uninstall")))
        .expect("init args")
        .c;
    assert!(init.host_netns && !init.wait);
    assert_eq!(init.state_dir, Path::new("/host/var/lib/sarasa"));
    let main = Uninstall::try_parse_from(args(&pod["containers"][0], Some("uninstall")))
        .expect("main args")
        .c;
    assert!(main.wait);
    // deploy/ applied as a directory must not uninstall: the file is in a subdirectory.
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/uninstall.yaml")
        .exists());
}
