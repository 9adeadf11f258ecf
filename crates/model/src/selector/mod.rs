//! Label selectors as Kubernetes defines them: the one implementation the API server (list
//! queries, Service and Deployment selectors) and the policy compiler (NetworkPolicy selectors)
//! share, so both select the same objects.
//!
//! A selector is `matchLabels` + `matchExpressions`. The `labelSelector=` query grammar
//! ([`LabelSelector::parse`]) maps onto it: `k=v` is a `matchLabels` entry, `k!=v` is
//! `NotIn [v]` (which, like `!=`, also matches objects without `k`), and `k>n`/`k<n` are the
//! query-only operators `Gt`/`Lt`, which a selector *object* may not hold
//! ([`LabelSelector::validate`] rejects them).

mod query;

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::names::{label_key_error, label_value_error};

pub use query::ParseSelectorError;

/// A selector or label that fails validation, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SelectorError {
    pub field: String,
    pub message: String,
}

impl SelectorError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SelectorError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// Operator of a `matchExpressions` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// `k>n` in a query: the label's value is an integer greater than `n` (query only).
    Gt,
    /// `k<n` in a query: the label's value is an integer less than `n` (query only).
    Lt,
}

impl Operator {
    /// The spelling Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
        }
    }

    /// Parses the spelling of a selector object (`In`, `NotIn`, `Exists`, `DoesNotExist`);
    /// `field` names the operator in errors.
    pub fn parse(s: &str, field: &str) -> Result<Self, SelectorError> {
        Ok(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => {
                return Err(SelectorError::new(
                    field,
                    format!("unknown operator {s:?}: must be In, NotIn, Exists or DoesNotExist"),
                ))
            }
        })
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and deduplicated by [`LabelSelector::normalized`].
    pub values: Vec<String>,
}

impl Requirement {
    fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let v = label(&self.key);
        match self.operator {
            Operator::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            // NotIn matches objects without the key too (Kubernetes semantics).
            Operator::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(v), Some(bound)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A label selector. The empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// A selector of `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Adds a `matchExpressions` requirement (builder style).
    pub fn expression(mut self, key: &str, operator: Operator, values: &[&str]) -> Self {
        self.match_expressions.push(Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        });
        self
    }

    /// True for `{}`.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Does this selector select an object with `labels`?
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_by(|k| labels.get(k).map(String::as_str))
    }

    /// Does this selector select an object whose label `k` is `label(k)`? For label maps of
    /// other shapes (the API server's JSON objects).
    pub fn matches_by<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| label(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| r.matches(&label))
    }

    /// The same selector with requirement values sorted and requirements sorted, so equal
    /// selectors compare (and hash) equal.
    pub fn normalized(mut self) -> Self {
        for r in &mut self.match_expressions {
            r.values.sort();
            r.values.dedup();
        }
        self.match_expressions.sort();
        self.match_expressions.dedup();
        self
    }

    /// A canonical text form (`a=b,k in (x,y),!z`), used in set names' hashes and comments.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.match_labels {
            if !s.is_empty() {
                s.push(',');
            }
            let _ = write!(s, "{k}={v}");
        }
        for r in &self.match_expressions {
            if !s.is_empty() {
                s.push(',');
            }
            let _ = match r.operator {
                Operator::In => write!(s, "{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => write!(s, "{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => write!(s, "{}", r.key),
                Operator::DoesNotExist => write!(s, "!{}", r.key),
                Operator::Gt => write!(s, "{}>{}", r.key, r.values.join(",")),
                Operator::Lt => write!(s, "{}<{}", r.key, r.values.join(",")),
            };
        }
        s
    }

    /// Checks a selector object as the API server does; `field` is the selector's path.
    pub fn validate(&self, field: &str) -> Result<(), SelectorError> {
        for (k, v) in &self.match_labels {
            validate_label_key(k, &format!("{field}.matchLabels"))?;
            validate_label_value(v, &format!("{field}.matchLabels[{k}]"))?;
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            validate_label_key(&r.key, &format!("{f}.key"))?;
            match r.operator {
                Operator::Gt | Operator::Lt => {
                    return Err(SelectorError::new(
                        format!("{f}.operator"),
                        format!(
                            "{} is valid in a labelSelector query only, not in a selector object",
                            r.operator.as_str()
                        ),
                    ))
                }
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(SelectorError::new(
                        format!("{f}.values"),
                        format!("must be non-empty when operator is {}", r.operator.as_str()),
                    ))
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(SelectorError::new(
                        format!("{f}.values"),
                        format!("must be empty when operator is {}", r.operator.as_str()),
                    ))
                }
                _ => {}
            }
            for (j, v) in r.values.iter().enumerate() {
                validate_label_value(v, &format!("{f}.values[{j}]"))?;
            }
        }
        Ok(())
    }
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain, name 1-63 characters of
/// `[A-Za-z0-9_.-]` beginning and ending alphanumeric (apimachinery's rules and messages).
pub fn validate_label_key(key: &str, field: &str) -> Result<(), SelectorError> {
    match label_key_error(key) {
        None => Ok(()),
        Some(e) => Err(SelectorError::new(
            field,
            format!("invalid label key {key:?}: {e}"),
        )),
    }
}

/// A label value: empty, or like a key's name part.
pub fn validate_label_value(value: &str, field: &str) -> Result<(), SelectorError> {
    match label_value_error(value) {
        None => Ok(()),
        Some(e) => Err(SelectorError::new(
            field,
            format!("invalid label value {value:?}: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::everything().matches(&Labels::new()));
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = LabelSelector::labels([("app", "web")]).expression("tier", Operator::In, &["a"]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }

    #[test]
    fn operators() {
        let l = labels(&[("k", "v")]);
        let none = Labels::new();
        let sel = |op, vals: &[&str]| LabelSelector::default().expression("k", op, vals);
        assert!(sel(Operator::In, &["v", "w"]).matches(&l));
        assert!(!sel(Operator::In, &["w"]).matches(&l));
        assert!(!sel(Operator::In, &["v"]).matches(&none));
        assert!(!sel(Operator::NotIn, &["v"]).matches(&l));
        assert!(sel(Operator::NotIn, &["w"]).matches(&l));
        assert!(
            sel(Operator::NotIn, &["v"]).matches(&none),
            "NotIn matches missing keys"
        );
        assert!(sel(Operator::Exists, &[]).matches(&l));
        assert!(!sel(Operator::Exists, &[]).matches(&none));
        assert!(sel(Operator::DoesNotExist, &[]).matches(&none));
        assert!(!sel(Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn validation_names_the_field() {
        let s = LabelSelector::default().expression("k", Operator::In, &[]);
        let e = s.validate("spec.podSelector").unwrap_err();
        assert_eq!(e.field, "spec.podSelector.matchExpressions[0].values");
        let s = LabelSelector::default().expression("k", Operator::Exists, &["x"]);
        assert!(s.validate("f").is_err());
        let s = LabelSelector::labels([("bad key!", "v")]);
        assert_eq!(s.validate("f").unwrap_err().field, "f.matchLabels");
        let s = LabelSelector::labels([("k", "-bad")]);
        assert_eq!(s.validate("f").unwrap_err().field, "f.matchLabels[k]");
        assert!(
            LabelSelector::labels([("kubernetes.io/metadata.name", "x")])
                .validate("f")
                .is_ok()
        );
        assert!(LabelSelector::labels([("Example.com/x", "y")])
            .validate("f")
            .is_err());
        assert!(Operator::parse("Foo", "f.operator").is_err());
        assert!(Operator::parse("Gt", "f.operator").is_err());
        let s = LabelSelector::default().expression("n", Operator::Gt, &["1"]);
        assert_eq!(
            s.validate("f").unwrap_err().field,
            "f.matchExpressions[0].operator"
        );
    }

    #[test]
    fn gt_and_lt_compare_integers() {
        let gt = LabelSelector::default().expression("n", Operator::Gt, &["5"]);
        let lt = LabelSelector::default().expression("n", Operator::Lt, &["5"]);
        assert!(gt.matches(&labels(&[("n", "6")])));
        assert!(!gt.matches(&labels(&[("n", "5")])));
        assert!(lt.matches(&labels(&[("n", "-1")])));
        assert!(!lt.matches(&labels(&[("n", "x")])), "not an integer");
        assert!(!gt.matches(&Labels::new()), "missing key");
    }

    #[test]
    fn normalized_selectors_compare_equal() {
        let a = LabelSelector::default()
            .expression("b", Operator::In, &["2", "1"])
            .expression("a", Operator::Exists, &[]);
        let b = LabelSelector::default()
            .expression("a", Operator::Exists, &[])
            .expression("b", Operator::In, &["1", "2"]);
        assert_eq!(a.clone().normalized(), b.clone().normalized());
        assert_eq!(a.normalized().canonical(), "a,b in (1,2)");
    }
}
