use super::*;

fn names(kind: &str, wide: bool) -> Vec<String> {
    columns(kind)
        .iter()
        .filter(|c| wide || c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap().to_uppercase())
        .collect()
}

#[test]
fn column_sets_match_kubectl_against_a_real_cluster() {
    assert_eq!(
        names("Pod", false),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(
        names("Pod", true),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    assert_eq!(
        names("Service", true),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    assert_eq!(
        names("Deployment", false),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(
        names("Node", true),
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    assert_eq!(names("Namespace", false), ["NAME", "STATUS", "AGE"]);
    assert_eq!(
        names("EndpointSlice", false),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    assert_eq!(
        names("NetworkPolicy", false),
        ["NAME", "POD-SELECTOR", "AGE"]
    );
    assert_eq!(
        names("Event", false),
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
}

#[test]
fn pod_cells_running_waiting_and_terminating() {
    let now = meta::parse_ts("2026-01-01T00:10:00Z").unwrap();
    let mut pod = json!({
        "kind": "Pod",
        "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 2,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:09:00Z"}}}
        ]}
    });
    assert_eq!(
        cells(&pod, now),
        vec![
            json!("web-1"),
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("2 (60s ago)"),
            json!("10m"),
            json!("10.244.1.5"),
            json!("node-1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
    assert_eq!(cells(&pod, now)[2], "Terminating");
    let pending = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
    let c = cells(&pending, now);
    assert_eq!(
        (c[1].as_str(), c[2].as_str(), c[4].as_str(), c[5].as_str()),
        (
            Some("0/1"),
            Some("Pending"),
            Some("<unknown>"),
            Some("<none>")
        )
    );
}

#[test]
fn service_cells_for_each_type() {
    let now = 0;
    let np = json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {
        "type": "NodePort", "clusterIP": "10.96.0.20", "selector": {"app": "web", "tier": "fe"},
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
    let c = cells(&np, now);
    assert_eq!(
        &c[1..5],
        &[
            json!("NodePort"),
            json!("10.96.0.20"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP")
        ]
    );
    assert_eq!(c[6], "app=web,tier=fe");
    let lb = json!({"kind": "Service", "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.21", "ports": [{"port": 80}]}});
    assert_eq!(cells(&lb, now)[3], "<pending>");
    let lb_ready = json!({"kind": "Service", "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []},
        "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}]}}});
    assert_eq!(cells(&lb_ready, now)[3], "172.18.255.1");
    let headless =
        json!({"kind": "Service", "metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
    assert_eq!(
        &cells(&headless, now)[1..5],
        &[
            json!("ClusterIP"),
            json!("None"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn deployment_node_slice_policy_and_event_cells() {
    let d = json!({"kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        &cells(&d, 0)[..4],
        &[json!("web"), json!("2/3"), json!(3), json!(2)]
    );
    assert_eq!(
        &cells(&d, 0)[5..],
        &[json!("nginx"), json!("nginx:1"), json!("app=web")]
    );
    let n = json!({"kind": "Node", "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.168.33.11"}],
                   "nodeInfo": {"kubeletVersion": "v1.34.0", "osImage": "Debian"}}});
    let c = cells(&n, 0);
    assert_eq!(
        &c[1..3],
        &[json!("Ready,SchedulingDisabled"), json!("control-plane")]
    );
    assert_eq!(
        &c[4..8],
        &[
            json!("v1.34.0"),
            json!("192.168.33.11"),
            json!("<none>"),
            json!("Debian")
        ]
    );
    let es = json!({"kind": "EndpointSlice", "metadata": {"name": "web-abc"}, "addressType": "IPv4",
        "ports": [{"port": 8080}], "endpoints": [
            {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
    assert_eq!(
        &cells(&es, 0)[1..4],
        &[
            json!("IPv4"),
            json!("8080"),
            json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")
        ]
    );
    let np =
        json!({"kind": "NetworkPolicy", "metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
    assert_eq!(cells(&np, 0)[1], "<none>");
    let np = json!({"kind": "NetworkPolicy", "metadata": {"name": "x"}, "spec": {"podSelector": {
        "matchLabels": {"app": "db"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}}});
    assert_eq!(cells(&np, 0)[1], "app=db,tier in (a,b)");
    let ev = json!({"kind": "Event", "metadata": {"name": "web.1"}, "type": "Normal", "reason": "Scheduled",
        "involvedObject": {"kind": "Pod", "name": "web-1"}, "message": "assigned", "source": {"component": "default-scheduler"},
        "lastTimestamp": "1970-01-01T00:00:00Z", "count": 1});
    let c = cells(&ev, 30);
    assert_eq!(
        &c[..4],
        &[
            json!("30s"),
            json!("Normal"),
            json!("Scheduled"),
            json!("pod/web-1")
        ]
    );
    assert_eq!(c[5], "default-scheduler");
    assert_eq!(c.len(), columns("Event").len());
}

#[test]
fn config_secret_account_daemonset_and_rbac_columns() {
    assert_eq!(names("ConfigMap", true), ["NAME", "DATA", "AGE"]);
    assert_eq!(names("Secret", true), ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(names("ServiceAccount", true), ["NAME", "SECRETS", "AGE"]);
    assert_eq!(
        names("DaemonSet", false),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(
        names("DaemonSet", true)[8..],
        ["CONTAINERS", "IMAGES", "SELECTOR"]
    );
    for k in ["Role", "ClusterRole"] {
        assert_eq!(names(k, true), ["NAME", "CREATED AT"]);
    }
    for k in ["RoleBinding", "ClusterRoleBinding"] {
        assert_eq!(names(k, false), ["NAME", "ROLE", "AGE"]);
        assert_eq!(
            names(k, true),
            ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
        );
    }
}

#[test]
fn config_secret_daemonset_and_rbac_cells() {
    let now = meta::parse_ts("2026-01-01T01:00:00Z").unwrap();
    let ts = "2026-01-01T00:00:00Z";
    let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c", "creationTimestamp": ts},
        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(cells(&cm, now), [json!("c"), json!(3), json!("60m")]);
    let s = json!({"kind": "Secret", "metadata": {"name": "s", "creationTimestamp": ts},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        cells(&s, now),
        [
            json!("s"),
            json!("kubernetes.io/tls"),
            json!(2),
            json!("60m")
        ]
    );
    let sa =
        json!({"kind": "ServiceAccount", "metadata": {"name": "sa"}, "secrets": [{"name": "x"}]});
    assert_eq!(cells(&sa, now)[1], 1);
    let ds = json!({"kind": "DaemonSet", "metadata": {"name": "agent", "creationTimestamp": ts},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "containers": [{"name": "a", "image": "sarasa:1"}, {"name": "b", "image": "busybox"}]}}},
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 1, "numberAvailable": 2}});
    assert_eq!(
        cells(&ds, now),
        [
            json!("agent"),
            json!(3),
            json!(3),
            json!(2),
            json!(1),
            json!(2),
            json!("kubernetes.io/os=linux"),
            json!("60m"),
            json!("a,b"),
            json!("sarasa:1,busybox"),
            json!("app=agent")
        ]
    );
    let no_sel =
        json!({"kind": "DaemonSet", "metadata": {"name": "x"}, "spec": {"template": {"spec": {}}}});
    assert_eq!(cells(&no_sel, now)[6], "<none>");
    let role =
        json!({"kind": "ClusterRole", "metadata": {"name": "view", "creationTimestamp": ts}});
    assert_eq!(cells(&role, now), [json!("view"), json!(ts)]);
    let rb = json!({"kind": "RoleBinding", "metadata": {"name": "rb", "creationTimestamp": ts},
        "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                     {"kind": "Group", "name": "devs"},
                     {"kind": "ServiceAccount", "name": "agent", "namespace": "kube-system"}]});
    assert_eq!(
        cells(&rb, now),
        [
            json!("rb"),
            json!("ClusterRole/view"),
            json!("60m"),
            json!("alice, bob"),
            json!("devs"),
            json!("kube-system/agent")
        ]
    );
}
