//! Label and field selectors: the query-string grammar of `labelSelector`/`fieldSelector`,
//! `LabelSelector` objects, and matching against objects.

use serde_json::{Map, Value};

use crate::resources::{ResId, PODS};
use crate::validate::meta::{label_key_error, label_value_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A label selector: all requirements must hold; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query grammar: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_top_level(s)? {
            let term = term.trim();
            if term.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!("unable to parse requirement: empty term in {s:?}"));
            }
            requirements.push(parse_term(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// From a `LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_object(sel: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq,
                    values: vec![v.as_str().unwrap_or("").to_string()],
                });
            }
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
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Op::In,
                    "NotIn" => Op::NotIn,
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"))
                    }
                };
                requirements.push(Requirement { key, op, values });
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// From a plain `map[string]string` selector (Services, ReplicationControllers).
    pub fn from_map(m: &Map<String, Value>) -> Self {
        LabelSelector {
            requirements: m
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::Eq,
                    values: vec![v.as_str().unwrap_or("").to_string()],
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a `metadata.labels` map satisfies every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match r.op {
                Op::Eq => v == Some(r.values[0].as_str()),
                Op::NotEq => v != Some(r.values[0].as_str()),
                Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Gt | Op::Lt => {
                    let (Some(v), Some(bound)) = (
                        v.and_then(|v| v.parse::<i64>().ok()),
                        r.values.first().and_then(|b| b.parse::<i64>().ok()),
                    ) else {
                        return false;
                    };
                    if r.op == Op::Gt {
                        v > bound
                    } else {
                        v < bound
                    }
                }
            }
        })
    }

    /// Whether an object's labels satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        self.matches(
            obj.get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object),
        )
    }
}

fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "unable to parse requirement: unexpected ')' in {s:?}"
                    ));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unbalanced '(' in {s:?}"
        ));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn check_key(key: &str) -> Result<(), String> {
    match label_key_error(key) {
        None => Ok(()),
        Some(e) => Err(format!(
            "unable to parse requirement: invalid label key {key:?}: {e}"
        )),
    }
}

fn check_value(v: &str) -> Result<(), String> {
    match label_value_error(v) {
        None => Ok(()),
        Some(e) => Err(format!(
            "unable to parse requirement: invalid label value: {v:?}: {e}"
        )),
    }
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement {
            key: key.to_string(),
            op: Op::DoesNotExist,
            values: vec![],
        });
    }
    // set-based: "key in (a,b)" / "key notin (a,b)"
    if let Some(open) = term.find('(') {
        let head = term[..open].trim();
        let close = term
            .rfind(')')
            .ok_or_else(|| format!("unable to parse requirement: missing ')' in {term:?}"))?;
        if !term[close + 1..].trim().is_empty() {
            return Err(format!(
                "unable to parse requirement: trailing text in {term:?}"
            ));
        }
        let mut parts = head.split_whitespace();
        let key = parts.next().unwrap_or("");
        let op = match parts.next() {
            Some("in") => Op::In,
            Some("notin") => Op::NotIn,
            other => {
                return Err(format!(
                    "unable to parse requirement: found '{}', expected: in, notin",
                    other.unwrap_or("")
                ))
            }
        };
        if parts.next().is_some() {
            return Err(format!("unable to parse requirement: {term:?}"));
        }
        check_key(key)?;
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        for v in &values {
            check_value(v)?;
        }
        return Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        });
    }
    for (tok, op) in [
        ("!=", Op::NotEq),
        ("==", Op::Eq),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ] {
        if let Some(i) = term.find(tok) {
            let key = term[..i].trim();
            let value = term[i + tok.len()..].trim();
            check_key(key)?;
            if matches!(op, Op::Gt | Op::Lt) {
                if value.parse::<i64>().is_err() {
                    return Err(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                    ));
                }
            } else {
                check_value(value)?;
            }
            return Ok(Requirement {
                key: key.to_string(),
                op,
                values: vec![value.to_string()],
            });
        }
    }
    if term.contains(char::is_whitespace) {
        return Err(format!(
            "unable to parse requirement: found {:?}, expected: in, notin, =, ==, !=, gt, lt",
            term.split_whitespace().nth(1).unwrap_or("")
        ));
    }
    check_key(term)?;
    Ok(Requirement {
        key: term.to_string(),
        op: Op::Exists,
        values: vec![],
    })
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
        let ops: Vec<Op> = s.requirements.iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            vec![
                Op::Eq,
                Op::NotEq,
                Op::In,
                Op::NotIn,
                Op::Exists,
                Op::DoesNotExist,
                Op::Eq
            ]
        );
        let l = labels(json!({"a":"b","c":"x","e":"y","f":"q","g":"","i":"j"}));
        assert!(s.matches(Some(&l)));
        let l2 = labels(json!({"a":"b","c":"d","e":"y","g":""}));
        assert!(!s.matches(Some(&l2)));
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
        assert!(s.matches(Some(&labels(json!({"app":"web"})))));
        assert!(!s.matches(Some(&labels(json!({"app":"web","tier":"db"})))));
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
