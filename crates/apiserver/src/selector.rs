//! Label and field selectors of the API: label selectors are the shared
//! [`sarasa_model::selector`] (query grammar, matching, validation) read from and matched
//! against JSON objects here; field selectors are API-server-only.

use serde_json::{Map, Value};

pub use sarasa_model::selector::{LabelSelector, Operator, Requirement};

use crate::resources::{ResId, PODS};

/// A [`LabelSelector`] read from and matched against the API server's JSON objects.
pub trait JsonSelector: Sized {
    /// From a `LabelSelector` object (`matchLabels` + `matchExpressions`).
    fn from_object(sel: &Value) -> Result<Self, String>;
    /// From a plain `map[string]string` selector (Services, ReplicationControllers).
    fn from_map(m: &Map<String, Value>) -> Self;
    /// Whether a `metadata.labels` map satisfies every requirement (non-string values count
    /// as absent).
    fn matches_json(&self, labels: Option<&Map<String, Value>>) -> bool;
    /// Whether an object's labels satisfy the selector.
    fn matches_object(&self, obj: &Value) -> bool;
}

fn string_map(m: &Map<String, Value>) -> std::collections::BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

impl JsonSelector for LabelSelector {
    fn from_object(sel: &Value) -> Result<Self, String> {
        let mut out = LabelSelector::default();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            out.match_labels = string_map(ml);
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
                let operator = Operator::parse(op, "operator")
                    .map_err(|_| format!("{op:?} is not a valid label selector operator"))?;
                out.match_expressions.push(Requirement {
                    key,
                    operator,
                    values,
                });
            }
        }
        Ok(out)
    }

    fn from_map(m: &Map<String, Value>) -> Self {
        LabelSelector {
            match_labels: string_map(m),
            match_expressions: Vec::new(),
        }
    }

    fn matches_json(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.matches_by(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        self.matches_json(
            obj.get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object),
        )
    }
}

/// A `fieldSelector`: every term must hold.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d,e==f`; fields must be supported by the resource.
    pub fn parse(res: ResId, s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !supported_field(res, field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, eq, want)| {
            let have = field_value(obj, field);
            (have == *want) == *eq
        })
    }
}

fn supported_field(res: ResId, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    let extra: &[&str] = match res {
        PODS => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        crate::resources::NODES => &["spec.unschedulable"],
        crate::resources::NAMESPACES => &["status.phase"],
        crate::resources::SERVICES => &["spec.clusterIP", "spec.type"],
        crate::resources::EVENTS => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    };
    extra.contains(&field)
}

fn field_value(obj: &Value, field: &str) -> String {
    match crate::meta::path(obj, field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // Unset booleans read as false, unset strings as empty, as kube-apiserver's field sets do.
        None | Some(Value::Null)
            if field == "spec.unschedulable" || field == "spec.hostNetwork" =>
        {
            "false".to_string()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("a=b,c!=d,e in (x, y),f notin (z),g,!h,i==j").unwrap();
        // Equality goes to matchLabels, `!=` is NotIn (same semantics: a missing key matches).
        assert_eq!(s.match_labels.len(), 2);
        let ops: Vec<Operator> = s.match_expressions.iter().map(|r| r.operator).collect();
        assert_eq!(
            ops,
            vec![
                Operator::NotIn,
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
            ]
        );
        let l = labels(json!({"a":"b","c":"x","e":"y","f":"q","g":"","i":"j"}));
        assert!(s.matches_json(Some(&l)));
        let l2 = labels(json!({"a":"b","c":"d","e":"y","g":""}));
        assert!(!s.matches_json(Some(&l2)));
        // A non-string label value counts as absent.
        let l3 = labels(json!({"a":"b","c":1,"e":"y","f":"q","g":"","i":"j"}));
        assert!(s.matches_json(Some(&l3)));
        assert!(!LabelSelector::parse("c").unwrap().matches_json(Some(&l3)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a foo (x)").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse("-a=b").is_err());
        assert!(LabelSelector::parse("a in (x").is_err());
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn object_selector() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap();
        assert!(s.matches_json(Some(&labels(json!({"app":"web"})))));
        assert!(!s.matches_json(Some(&labels(json!({"app":"web","tier":"db"})))));
        let e = LabelSelector::from_object(&json!({
            "matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap_err();
        assert_eq!(e, "\"Gt\" is not a valid label selector operator");
    }

    #[test]
    fn field_selector() {
        let f = FieldSelector::parse(PODS, "spec.nodeName=n1,metadata.name!=x").unwrap();
        assert!(f.matches(&json!({"metadata":{"name":"a"},"spec":{"nodeName":"n1"}})));
        assert!(!f.matches(&json!({"metadata":{"name":"x"},"spec":{"nodeName":"n1"}})));
        assert!(FieldSelector::parse(PODS, "spec.foo=bar").is_err());
        let empty_node = FieldSelector::parse(PODS, "spec.nodeName=").unwrap();
        assert!(empty_node.matches(&json!({"metadata":{"name":"a"},"spec":{}})));
    }
}
