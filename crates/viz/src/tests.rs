//! Renderer tests over made-up labs: 3 nodes with 20 pods (the size the pictures are tuned
//! for) and 5 nodes with 60 pods (must stay sane).

use std::net::IpAddr;

use crate::model::*;
use crate::{render_dot, render_svg, render_text};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A lab of `nodes` nodes and `pods` pods spread round-robin, with a web Service over the
/// `web-*` pods, a NodePort/LoadBalancer Service, one without endpoints and one whose
/// endpoint is not a pod.
pub fn lab(nodes: usize, pods: usize, backend: &str) -> Topology {
    let mut boxes: Vec<NodeBox> = (0..nodes)
        .map(|i| NodeBox {
            name: format!("node-{}", i + 1),
            underlay_ip: ip(&format!("192.168.33.{}", 11 + i)),
            uplink: "eth0".into(),
            pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
            backend: backend.into(),
            vtep: (backend == "vxlan").then(|| VtepBox {
                device: "sarasa.1".into(),
                mac: Some(format!("02:5a:00:00:00:{:02x}", i + 1)),
                vni: 1,
            }),
            bridge: Some("sarasa0".into()),
            cni_mode: "bridge".into(),
            pods: Vec::new(),
        })
        .collect();
    let mut web = Vec::new();
    for p in 0..pods {
        let n = p % nodes;
        let name = match p % 4 {
            0 => format!("web-7c9d8f6b5d-{p:05}"),
            1 => format!("client-{p}"),
            2 => format!("a-very-long-deployment-name-for-testing-{p}-abcde"),
            _ => format!("db-{p}"),
        };
        let addr = ip(&format!("10.244.{n}.{}", 2 + p / nodes));
        if name.starts_with("web-") {
            web.push(EndpointRef {
                ip: addr,
                port: 8080,
                pod: Some(format!("default/{name}")),
                ready: p % 8 != 4,
            });
        }
        boxes[n].pods.push(PodBox {
            namespace: if p % 3 == 0 { "default" } else { "team-blue" }.into(),
            name,
            ips: vec![addr],
            host_network: false,
            interface: Some("eth0".into()),
        });
    }
    // web pods were given namespace by p % 3; fix their endpoint refs to the real keys.
    for e in &mut web {
        let key = boxes
            .iter()
            .flat_map(|n| &n.pods)
            .find(|p| p.ips[0] == e.ip)
            .map(|p| p.key());
        e.pod = key;
    }
    boxes[0].pods.push(PodBox {
        namespace: "kube-system".into(),
        name: "node-exporter-1".into(),
        ips: vec![ip("192.168.33.11")],
        host_network: true,
        interface: None,
    });
    let db: Vec<EndpointRef> = boxes
        .iter()
        .flat_map(|n| &n.pods)
        .filter(|p| p.name.starts_with("db-"))
        .map(|p| EndpointRef {
            ip: p.ips[0],
            port: 5432,
            pod: Some(p.key()),
            ready: true,
        })
        .collect();
    let mut tunnels = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            tunnels.push(Tunnel {
                from: format!("node-{}", a + 1),
                to: format!("node-{}", b + 1),
                kind: if backend == "vxlan" {
                    "vxlan vni 1".into()
                } else {
                    "host-gw route".into()
                },
            });
        }
    }
    Topology {
        lab: "demo".into(),
        fabric: Fabric {
            name: "fabric".into(),
            underlay: "192.168.33.0/24".parse().unwrap(),
            address: "192.168.33.1/24".parse().unwrap(),
        },
        external: Some(Host {
            name: "ext".into(),
            address: ip("203.0.113.10"),
        }),
        nodes: boxes,
        tunnels,
        services: vec![
            ServiceBox {
                namespace: "default".into(),
                name: "web".into(),
                service_type: "LoadBalancer".into(),
                cluster_ips: vec![ip("10.96.0.10")],
                ports: vec!["80→8080/TCP".into()],
                node_ports: vec![30080],
                lb_ips: vec![ip("198.51.100.1")],
                endpoints: web,
            },
            ServiceBox {
                namespace: "team-blue".into(),
                name: "db".into(),
                service_type: "ClusterIP".into(),
                cluster_ips: vec![ip("10.96.0.20")],
                ports: vec!["5432/TCP".into()],
                node_ports: vec![],
                lb_ips: vec![],
                endpoints: db,
            },
            ServiceBox {
                namespace: "default".into(),
                name: "empty".into(),
                service_type: "ClusterIP".into(),
                cluster_ips: vec![ip("10.96.0.30")],
                ports: vec!["80/TCP".into()],
                node_ports: vec![],
                lb_ips: vec![],
                endpoints: vec![],
            },
            ServiceBox {
                namespace: "default".into(),
                name: "outside".into(),
                service_type: "ClusterIP".into(),
                cluster_ips: vec![ip("10.96.0.40")],
                ports: vec!["443/TCP".into()],
                node_ports: vec![],
                lb_ips: vec![],
                endpoints: vec![EndpointRef {
                    ip: ip("203.0.113.10"),
                    port: 443,
                    pod: None,
                    ready: true,
                }],
            },
        ],
    }
}

fn every_pod(t: &Topology) -> Vec<String> {
    t.nodes
        .iter()
        .flat_map(|n| &n.pods)
        .map(|p| p.key())
        .collect()
}

/// All text of the document (text nodes and titles), joined.
fn all_text(doc: &roxmltree::Document) -> String {
    doc.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

fn a_path(t: &Topology) -> Vec<PathLeg> {
    let web = t.find_service("default/web").unwrap();
    let target = web.endpoints[0].pod.clone().unwrap();
    let client = t.nodes[1].pods[0].key();
    vec![
        PathLeg {
            from: ElementId::Pod(client.clone()),
            to: ElementId::Service("default/web".into()),
            label: "DNAT 10.96.0.10:80 → endpoint".into(),
            outcome: LegOutcome::Forwarded,
        },
        PathLeg {
            from: ElementId::Service("default/web".into()),
            to: ElementId::Pod(target.clone()),
            label: "vxlan vni 1 to node-1, ingress policy".into(),
            outcome: LegOutcome::Dropped,
        },
        PathLeg {
            from: ElementId::External,
            to: ElementId::Fabric,
            label: "to LoadBalancer 198.51.100.1".into(),
            outcome: LegOutcome::Forwarded,
        },
        PathLeg {
            from: ElementId::Fabric,
            to: ElementId::Node("node-3".into()),
            label: "no endpoints: reject".into(),
            outcome: LegOutcome::Rejected,
        },
    ]
}

#[test]
fn svg_is_well_formed_and_names_every_pod_node_and_service() {
    for (nodes, pods) in [(3, 20), (5, 60), (1, 0)] {
        let t = lab(nodes, pods, "vxlan");
        let svg = render_svg(&t, &[]);
        let doc = roxmltree::Document::parse(&svg).expect("SVG parses as XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let text = all_text(&doc);
        for key in every_pod(&t) {
            assert!(text.contains(&format!("pod {key}")), "pod {key} missing");
        }
        for n in &t.nodes {
            assert!(text.contains(&n.name), "node {} missing", n.name);
            assert!(text.contains(&n.underlay_ip.to_string()));
            assert!(text.contains(&n.pod_cidrs[0].to_string()));
        }
        for p in t.nodes.iter().flat_map(|n| &n.pods) {
            assert!(text.contains(&p.ips[0].to_string()), "{}", p.ips[0]);
        }
        for s in &t.services {
            assert!(text.contains(&format!("svc {}", s.key())), "{}", s.key());
            assert!(text.contains(&s.cluster_ips[0].to_string()));
        }
        assert!(text.contains("203.0.113.10"));
        assert!(text.contains("192.168.33.1/24"));
    }
}

#[test]
fn svg_labels_never_overlap_and_stay_on_the_canvas() {
    for (nodes, pods, backend) in [(3, 20, "vxlan"), (5, 60, "vxlan"), (4, 9, "host-gw")] {
        let t = lab(nodes, pods, backend);
        let path = a_path(&t);
        let (svg, boxes) = crate::svg::render(&t, &path);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let root = doc.root_element();
        let w: f64 = root.attribute("width").unwrap().parse().unwrap();
        let h: f64 = root.attribute("height").unwrap().parse().unwrap();
        for (i, (a, ta)) in boxes.iter().enumerate() {
            assert!(
                a.x >= 0.0 && a.y >= 0.0 && a.right() <= w && a.bottom() <= h,
                "{ta:?} at {a:?} leaves the {w}x{h} canvas"
            );
            for (b, tb) in &boxes[i + 1..] {
                assert!(!a.overlaps(b), "{ta:?} {a:?} overlaps {tb:?} {b:?}");
            }
        }
    }
}

#[test]
fn long_names_are_cut_with_the_full_name_in_a_tooltip() {
    let t = lab(3, 20, "vxlan");
    let svg = render_svg(&t, &[]);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let long = t
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .find(|p| p.name.starts_with("a-very-long"))
        .unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        !texts.contains(&long.name.as_str()),
        "long name drawn uncut"
    );
    assert!(texts
        .iter()
        .any(|t| t.ends_with('…') && long.name.starts_with(t.trim_end_matches('…'))));
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    assert!(titles.iter().any(|t| t.contains(&long.key())));
}

#[test]
fn path_legs_are_numbered_arrows_in_their_outcome_colours() {
    let t = lab(3, 20, "vxlan");
    let path = a_path(&t);
    let svg = render_svg(&t, &path);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let legs: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("g")
                && n.attribute("class")
                    .is_some_and(|c| c.starts_with("path-leg"))
        })
        .collect();
    assert_eq!(legs.len(), 4);
    let want = [
        ("forwarded", "#1e9e3a"),
        ("dropped", "#d62728"),
        ("rejected", "#f28c00"),
    ];
    for (leg, n) in legs.iter().zip(1..) {
        let class = leg.attribute("class").unwrap();
        let (outcome, colour) = want
            .iter()
            .find(|(o, _)| class.ends_with(o))
            .expect("outcome class");
        let arrow = leg
            .descendants()
            .find(|e| e.attribute("marker-end").is_some())
            .expect("an arrow");
        assert_eq!(
            arrow.attribute("marker-end"),
            Some(format!("url(#arrow-{outcome})").as_str())
        );
        assert!(arrow.attribute("style").unwrap().contains(colour));
        let badge = leg
            .descendants()
            .filter(|e| e.has_tag_name("text"))
            .filter_map(|e| e.text())
            .collect::<Vec<_>>();
        assert_eq!(badge, [n.to_string()]);
    }
    for o in ["forwarded", "dropped", "rejected"] {
        assert!(doc
            .descendants()
            .any(|e| e.has_tag_name("marker") && e.attribute("id") == Some(&format!("arrow-{o}"))));
    }
    let text = all_text(&doc);
    for leg in &path {
        assert!(text.contains(&leg.label), "legend lacks {:?}", leg.label);
    }
}

#[test]
fn legs_to_elements_not_on_the_picture_are_listed_not_drawn() {
    let t = lab(2, 4, "vxlan");
    let path = vec![PathLeg {
        from: ElementId::Pod("nowhere/ghost".into()),
        to: ElementId::Fabric,
        label: "ghost".into(),
        outcome: LegOutcome::Forwarded,
    }];
    let svg = render_svg(&t, &path);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(!doc.descendants().any(|e| e
        .attribute("class")
        .is_some_and(|c| c.starts_with("path-leg"))));
    assert!(all_text(&doc).contains("ghost — forwarded (not on the picture)"));
}

/// The DOT statements, with the structure Graphviz requires: balanced braces and quotes,
/// every edge between declared nodes.
#[test]
fn dot_declares_every_element_and_links_only_declared_ones() {
    let t = lab(3, 20, "vxlan");
    let dot = render_dot(&t);
    assert!(dot.starts_with("digraph \"lab demo\" {"));
    assert!(dot.trim_end().ends_with('}'));
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    let mut declared = std::collections::BTreeSet::new();
    let mut edges = Vec::new();
    for line in dot.lines().map(str::trim) {
        assert_eq!(
            line.replace("\\\"", "").matches('"').count() % 2,
            0,
            "unbalanced quotes: {line}"
        );
        if let Some((a, rest)) = line.split_once(" -> ") {
            let b = rest.split([' ', ';']).next().unwrap();
            edges.push((a.to_string(), b.to_string()));
        } else if line.starts_with('"') {
            declared.insert(line.split(' ').next().unwrap().to_string());
        }
    }
    for key in every_pod(&t) {
        assert!(declared.contains(&format!("\"pod/{key}\"")), "{key}");
    }
    for s in &t.services {
        assert!(declared.contains(&format!("\"svc/{}\"", s.key())));
    }
    for n in &t.nodes {
        assert!(declared.contains(&format!("\"node/{}\"", n.name)));
    }
    for (a, b) in &edges {
        assert!(declared.contains(a) && declared.contains(b), "{a} -> {b}");
    }
    assert_eq!(
        edges
            .iter()
            .filter(|(a, _)| a == "\"svc/default/web\"")
            .count(),
        t.find_service("default/web").unwrap().endpoints.len()
    );
    assert!(dot.contains("\"203.0.113.10:443\"") || dot.contains("\"ip/203.0.113.10\""));
}

/// Needs Graphviz's `dot` (scripts/install-deps.sh installs it); fails saying so without it.
#[test]
fn dot_is_accepted_by_graphviz() {
    use std::io::Write;
    let t = lab(3, 20, "vxlan");
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running Graphviz's dot: install graphviz (scripts/install-deps.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(render_dot(&t).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(std::str::from_utf8(&out.stdout).unwrap(), opts)
        .expect("dot's SVG parses");
}

#[test]
fn text_form_is_golden() {
    let t = lab(3, 8, "vxlan");
    let actual = render_text(&t);
    let path = format!(
        "{}/tests/golden/three-nodes.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_GOLDEN=1 to create)"));
    assert_eq!(actual, expected);
}

#[test]
fn find_pod_and_contains_resolve_keys() {
    let t = lab(3, 6, "host-gw");
    let key = t.nodes[2].pods[0].key();
    assert_eq!(t.find_pod(&key).unwrap().0.name, "node-3");
    assert!(t.contains(&ElementId::Pod(key)));
    assert!(t.contains(&ElementId::Node("node-2".into())));
    assert!(!t.contains(&ElementId::Node("node-9".into())));
    assert!(!t.contains(&ElementId::Service("x/y".into())));
}

/// Writes the fixture pictures to `$VIZ_DUMP_DIR` (default /tmp) for a person to look at.
#[test]
#[ignore = "writes pictures for a human to look at"]
fn dump_pictures() {
    let dir = std::env::var("VIZ_DUMP_DIR").unwrap_or_else(|_| "/tmp".into());
    for (name, nodes, pods, backend) in [
        ("3x20", 3, 20, "vxlan"),
        ("5x60", 5, 60, "vxlan"),
        ("4x9", 4, 9, "host-gw"),
    ] {
        let t = lab(nodes, pods, backend);
        std::fs::write(format!("{dir}/viz-{name}.svg"), render_svg(&t, &a_path(&t))).unwrap();
        std::fs::write(format!("{dir}/viz-{name}.dot"), render_dot(&t)).unwrap();
    }
}
