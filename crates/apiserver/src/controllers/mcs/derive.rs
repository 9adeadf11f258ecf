//! The derived Service of KEP-1645: what one ServiceImport says, from what every exporting
//! cluster's export says. Properties are merged by the KEP's conflict resolution policy — the
//! oldest export (by the ServiceExport's creation time, then cluster id) wins — and every
//! disagreement is named as a `Conflict` reason (mcs-api's `PortConflict`, `TypeConflict`,
//! `SessionAffinityConflict`, `SessionAffinityConfigConflict`, `LabelsConflict`,
//! `AnnotationsConflict`), raised on every constituent export as the API recommends.
//! Ports are the union over the clusters; two ports conflict when they share a name (the empty
//! name included) but not their port, protocol and appProtocol, or share port and protocol under
//! different names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SessionAffinityConfig;
use sarasa_model::mcs::ServiceImportPort;
use serde::{Deserialize, Serialize};

pub const CLUSTER_SET_IP: &str = "ClusterSetIP";
pub const HEADLESS: &str = "Headless";

/// What one cluster's export of a Service says: carried on that cluster's MCS EndpointSlices
/// (annotation [`super::EXPORT_ANNOTATION`]), so it travels with them to every cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRecord {
    /// The ServiceExport's creationTimestamp (RFC 3339, so text order is time order).
    pub created: String,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub ports: Vec<ServiceImportPort>,
    #[serde(default)]
    pub session_affinity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    #[serde(default)]
    pub ip_families: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The merged view of one Service across the clusters that export it.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub type_: String,
    pub ports: Vec<ServiceImportPort>,
    pub session_affinity: String,
    pub session_affinity_config: Option<SessionAffinityConfig>,
    pub ip_families: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The exporting clusters, sorted.
    pub clusters: Vec<String>,
    /// Conflict reasons in mcs-api's order, each with what disagreed.
    pub conflicts: Vec<(&'static str, String)>,
}

impl Derived {
    /// The `Conflict` condition's reason: the reasons joined with commas, or `NoConflicts`.
    pub fn conflict_reason(&self) -> String {
        if self.conflicts.is_empty() {
            return "NoConflicts".into();
        }
        let mut reasons: Vec<&str> = self.conflicts.iter().map(|(r, _)| *r).collect();
        reasons.dedup();
        reasons.join(",")
    }

    pub fn conflict_message(&self) -> String {
        if self.conflicts.is_empty() {
            return "the exporting clusters agree on every property".into();
        }
        self.conflicts
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn port_text(p: &ServiceImportPort) -> String {
    let mut s = format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP"));
    if let Some(a) = &p.app_protocol {
        s.push_str(&format!(" ({a})"));
    }
    s
}

fn same_port(a: &ServiceImportPort, b: &ServiceImportPort) -> bool {
    a.port == b.port
        && a.protocol.as_deref().unwrap_or("TCP") == b.protocol.as_deref().unwrap_or("TCP")
        && a.app_protocol == b.app_protocol
}

/// Merges the exports of one Service, keyed by cluster id; `None` when no cluster exports it.
pub fn derive(exports: &BTreeMap<String, ExportRecord>) -> Option<Derived> {
    let mut order: Vec<(&String, &ExportRecord)> = exports.iter().collect();
    order.sort_by(|a, b| (&a.1.created, a.0).cmp(&(&b.1.created, b.0)));
    let (oldest_cluster, oldest) = *order.first()?;
    let mut conflicts: Vec<(&'static str, String)> = Vec::new();

    // Ports: the union, first come (oldest) first served.
    let mut ports: Vec<(&String, ServiceImportPort)> = Vec::new();
    for (cluster, rec) in &order {
        for p in &rec.ports {
            let name = p.name.clone().unwrap_or_default();
            if let Some((owner, have)) = ports
                .iter()
                .find(|(_, q)| q.name.clone().unwrap_or_default() == name)
            {
                if !same_port(have, p) {
                    conflicts.push((
                        "PortConflict",
                        format!(
                            "port {name:?}: {} in {cluster}, {} in {owner} (kept, the oldest export)",
                            port_text(p),
                            port_text(have)
                        ),
                    ));
                }
                continue;
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if let Some((owner, have)) = ports
                .iter()
                .find(|(_, q)| q.port == p.port && q.protocol.as_deref().unwrap_or("TCP") == proto)
            {
                conflicts.push((
                    "PortConflict",
                    format!(
                        "{} is named {name:?} in {cluster} but {:?} in {owner} (kept, the oldest export)",
                        port_text(p),
                        have.name.clone().unwrap_or_default()
                    ),
                ));
                continue;
            }
            ports.push((cluster, p.clone()));
        }
    }

    let mut differ = |reason: &'static str, what: &str, differs: &dyn Fn(&ExportRecord) -> bool| {
        let others: Vec<&str> = order
            .iter()
            .skip(1)
            .filter(|(_, r)| differs(r))
            .map(|(c, _)| c.as_str())
            .collect();
        if !others.is_empty() {
            conflicts.push((
                reason,
                format!(
                    "{what} differs in {}; {oldest_cluster}'s is used (the oldest export)",
                    others.join(", ")
                ),
            ));
        }
    };
    differ("TypeConflict", "the type (headless or not)", &|r| {
        r.type_ != oldest.type_
    });
    differ("SessionAffinityConflict", "sessionAffinity", &|r| {
        r.session_affinity != oldest.session_affinity
    });
    differ(
        "SessionAffinityConfigConflict",
        "sessionAffinityConfig",
        &|r| r.session_affinity_config != oldest.session_affinity_config,
    );
    differ("LabelsConflict", "exportedLabels", &|r| {
        r.labels != oldest.labels
    });
    differ("AnnotationsConflict", "exportedAnnotations", &|r| {
        r.annotations != oldest.annotations
    });
    conflicts.sort_by_key(|(r, _)| REASON_ORDER.iter().position(|o| o == r));

    Some(Derived {
        type_: oldest.type_.clone(),
        ports: ports.into_iter().map(|(_, p)| p).collect(),
        session_affinity: oldest.session_affinity.clone(),
        session_affinity_config: oldest.session_affinity_config.clone(),
        ip_families: oldest.ip_families.clone(),
        labels: oldest.labels.clone(),
        annotations: oldest.annotations.clone(),
        clusters: exports.keys().cloned().collect(),
        conflicts,
    })
}

const REASON_ORDER: &[&str] = &[
    "PortConflict",
    "TypeConflict",
    "SessionAffinityConflict",
    "SessionAffinityConfigConflict",
    "LabelsConflict",
    "AnnotationsConflict",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, port: i32, proto: &str) -> ServiceImportPort {
        ServiceImportPort {
            name: (!name.is_empty()).then(|| name.to_string()),
            protocol: Some(proto.into()),
            app_protocol: None,
            port,
        }
    }

    fn rec(created: &str, ports: Vec<ServiceImportPort>) -> ExportRecord {
        ExportRecord {
            created: created.into(),
            type_: CLUSTER_SET_IP.into(),
            ports,
            session_affinity: "None".into(),
            ip_families: vec!["IPv4".into()],
            ..Default::default()
        }
    }

    fn set(recs: Vec<(&str, ExportRecord)>) -> BTreeMap<String, ExportRecord> {
        recs.into_iter().map(|(c, r)| (c.to_string(), r)).collect()
    }

    #[test]
    fn nothing_exported_derives_nothing() {
        assert_eq!(derive(&BTreeMap::new()), None);
    }

    #[test]
    fn one_export_is_the_import() {
        let d = derive(&set(vec![(
            "west",
            rec("2026-01-01T00:00:00Z", vec![port("http", 80, "TCP")]),
        )]))
        .unwrap();
        assert_eq!(d.type_, CLUSTER_SET_IP);
        assert_eq!(d.ports, vec![port("http", 80, "TCP")]);
        assert_eq!(d.clusters, ["west"]);
        assert_eq!(d.conflict_reason(), "NoConflicts");
    }

    #[test]
    fn ports_are_the_union() {
        let d = derive(&set(vec![
            (
                "west",
                rec("2026-01-01T00:00:00Z", vec![port("http", 80, "TCP")]),
            ),
            (
                "east",
                rec(
                    "2026-01-02T00:00:00Z",
                    vec![port("http", 80, "TCP"), port("stcp", 142, "SCTP")],
                ),
            ),
        ]))
        .unwrap();
        assert_eq!(
            d.ports,
            vec![port("http", 80, "TCP"), port("stcp", 142, "SCTP")]
        );
        assert!(d.conflicts.is_empty(), "{:?}", d.conflicts);
        assert_eq!(d.clusters, ["east", "west"]);
    }

    #[test]
    fn a_conflicting_port_takes_the_oldest_exports_and_is_named() {
        // west is older though east's id sorts first: age decides.
        let d = derive(&set(vec![
            (
                "west",
                rec("2026-01-01T00:00:00Z", vec![port("http", 81, "TCP")]),
            ),
            (
                "east",
                rec("2026-01-02T00:00:00Z", vec![port("http", 80, "TCP")]),
            ),
        ]))
        .unwrap();
        assert_eq!(d.ports, vec![port("http", 81, "TCP")]);
        assert_eq!(d.conflict_reason(), "PortConflict");
        let m = d.conflict_message();
        assert!(
            m.contains("\"http\"") && m.contains("80/TCP in east") && m.contains("81/TCP in west"),
            "{m}"
        );
    }

    #[test]
    fn one_port_and_protocol_under_two_names_conflicts() {
        let d = derive(&set(vec![
            (
                "a",
                rec("2026-01-01T00:00:00Z", vec![port("http", 80, "TCP")]),
            ),
            (
                "b",
                rec("2026-01-02T00:00:00Z", vec![port("web", 80, "TCP")]),
            ),
        ]))
        .unwrap();
        assert_eq!(d.ports, vec![port("http", 80, "TCP")]);
        assert_eq!(d.conflict_reason(), "PortConflict");
    }

    #[test]
    fn same_age_falls_back_to_the_cluster_id() {
        let at = "2026-01-01T00:00:00Z";
        let mut b = rec(at, vec![]);
        b.type_ = HEADLESS.into();
        let d = derive(&set(vec![("a", rec(at, vec![])), ("b", b)])).unwrap();
        assert_eq!(d.type_, CLUSTER_SET_IP);
        assert_eq!(d.conflict_reason(), "TypeConflict");
        assert!(d.conflict_message().contains("differs in b; a's is used"));
    }

    #[test]
    fn headlessness_affinity_labels_and_annotations_follow_the_oldest() {
        let mut old = rec("2026-01-01T00:00:00Z", vec![]);
        old.labels.insert("dummy-label".into(), "true".into());
        old.annotations
            .insert("dummy-annotation".into(), "true".into());
        let mut new = rec("2026-01-03T00:00:00Z", vec![]);
        new.type_ = HEADLESS.into();
        new.session_affinity = "ClientIP".into();
        new.labels.insert("dummy-label2".into(), "true".into());
        new.annotations
            .insert("dummy-annotation2".into(), "true".into());
        let d = derive(&set(vec![("one", old.clone()), ("two", new)])).unwrap();
        assert_eq!(d.type_, CLUSTER_SET_IP);
        assert_eq!(d.session_affinity, "None");
        assert_eq!(d.labels, old.labels);
        assert_eq!(d.annotations, old.annotations);
        assert_eq!(
            d.conflict_reason(),
            "TypeConflict,SessionAffinityConflict,LabelsConflict,AnnotationsConflict"
        );
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut r = rec("2026-01-01T00:00:00Z", vec![port("dns", 53, "UDP")]);
        r.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                timeout_seconds: Some(30),
            }),
        });
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"type\":\"ClusterSetIP\""), "{text}");
        assert_eq!(serde_json::from_str::<ExportRecord>(&text).unwrap(), r);
    }
}
