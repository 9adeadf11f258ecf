//! The `labelSelector` query grammar of list and watch requests:
//! `a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,n>1,m<2`, with kube-apiserver's error messages.

use super::{LabelSelector, Operator, Requirement};
use crate::names::{label_key_error, label_value_error};

/// A `labelSelector` query that does not parse; the message is kube-apiserver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseSelectorError(pub String);

impl LabelSelector {
    /// Parses the `labelSelector` query grammar. `k=v`/`k==v` become `matchLabels` (a second
    /// `k=` for the same key an `In` requirement, so `a=b,a=c` selects nothing, as upstream);
    /// `k!=v` becomes `NotIn [v]`.
    pub fn parse(s: &str) -> Result<Self, ParseSelectorError> {
        let mut out = LabelSelector::default();
        for term in split_top_level(s)? {
            let term = term.trim();
            if term.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(err(format!(
                    "unable to parse requirement: empty term in {s:?}"
                )));
            }
            match parse_term(term)? {
                Term::Equals(key, value) if !out.match_labels.contains_key(&key) => {
                    out.match_labels.insert(key, value);
                }
                Term::Equals(key, value) => out.match_expressions.push(Requirement {
                    key,
                    operator: Operator::In,
                    values: vec![value],
                }),
                Term::Requirement(r) => out.match_expressions.push(r),
            }
        }
        Ok(out)
    }
}

fn err(message: String) -> ParseSelectorError {
    ParseSelectorError(message)
}

enum Term {
    Equals(String, String),
    Requirement(Requirement),
}

fn split_top_level(s: &str) -> Result<Vec<&str>, ParseSelectorError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(err(format!(
                        "unable to parse requirement: unexpected ')' in {s:?}"
                    )));
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
        return Err(err(format!(
            "unable to parse requirement: unbalanced '(' in {s:?}"
        )));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn check_key(key: &str) -> Result<(), ParseSelectorError> {
    match label_key_error(key) {
        None => Ok(()),
        Some(e) => Err(err(format!(
            "unable to parse requirement: invalid label key {key:?}: {e}"
        ))),
    }
}

fn check_value(v: &str) -> Result<(), ParseSelectorError> {
    match label_value_error(v) {
        None => Ok(()),
        Some(e) => Err(err(format!(
            "unable to parse requirement: invalid label value: {v:?}: {e}"
        ))),
    }
}

fn requirement(key: &str, operator: Operator, values: Vec<String>) -> Term {
    Term::Requirement(Requirement {
        key: key.to_string(),
        operator,
        values,
    })
}

fn parse_term(term: &str) -> Result<Term, ParseSelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(requirement(key, Operator::DoesNotExist, vec![]));
    }
    // set-based: "key in (a,b)" / "key notin (a,b)"
    if let Some(open) = term.find('(') {
        let head = term[..open].trim();
        let close = term.rfind(')').ok_or_else(|| {
            err(format!(
                "unable to parse requirement: missing ')' in {term:?}"
            ))
        })?;
        if !term[close + 1..].trim().is_empty() {
            return Err(err(format!(
                "unable to parse requirement: trailing text in {term:?}"
            )));
        }
        let mut parts = head.split_whitespace();
        let key = parts.next().unwrap_or("");
        let op = match parts.next() {
            Some("in") => Operator::In,
            Some("notin") => Operator::NotIn,
            other => {
                return Err(err(format!(
                    "unable to parse requirement: found '{}', expected: in, notin",
                    other.unwrap_or("")
                )))
            }
        };
        if parts.next().is_some() {
            return Err(err(format!("unable to parse requirement: {term:?}")));
        }
        check_key(key)?;
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        for v in &values {
            check_value(v)?;
        }
        return Ok(requirement(key, op, values));
    }
    // `None` stands for equality; `!=` is tried first so `a!=b` is not read as `a!` = `b`.
    for (tok, op) in [
        ("!=", Some(Operator::NotIn)),
        ("==", None),
        ("=", None),
        (">", Some(Operator::Gt)),
        ("<", Some(Operator::Lt)),
    ] {
        if let Some(i) = term.find(tok) {
            let key = term[..i].trim();
            let value = term[i + tok.len()..].trim();
            check_key(key)?;
            if matches!(op, Some(Operator::Gt | Operator::Lt)) {
                if value.parse::<i64>().is_err() {
                    return Err(err(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                    )));
                }
            } else {
                check_value(value)?;
            }
            return Ok(match op {
                None => Term::Equals(key.to_string(), value.to_string()),
                Some(op) => requirement(key, op, vec![value.to_string()]),
            });
        }
    }
    if term.contains(char::is_whitespace) {
        return Err(err(format!(
            "unable to parse requirement: found {:?}, expected: in, notin, =, ==, !=, gt, lt",
            term.split_whitespace().nth(1).unwrap_or("")
        )));
    }
    check_key(term)?;
    Ok(requirement(term, Operator::Exists, vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Labels;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn maps_every_operator_onto_match_labels_and_expressions() {
        let s = LabelSelector::parse("a=b,c!=d,e in (x, y),f notin (z),g,!h,i==j,n>1,m<2").unwrap();
        assert_eq!(
            s.canonical(),
            "a=b,i=j,c notin (d),e in (x,y),f notin (z),g,!h,n>1,m<2"
        );
        let ok = labels(&[
            ("a", "b"),
            ("c", "x"),
            ("e", "y"),
            ("f", "q"),
            ("g", ""),
            ("i", "j"),
            ("n", "2"),
            ("m", "1"),
        ]);
        assert!(s.matches(&ok));
        let mut bad = ok.clone();
        bad.insert("c".into(), "d".into());
        assert!(!s.matches(&bad));
    }

    #[test]
    fn repeated_equality_selects_nothing() {
        let s = LabelSelector::parse("a=b,a=c").unwrap();
        assert!(!s.matches(&labels(&[("a", "b")])));
        assert!(!s.matches(&labels(&[("a", "c")])));
        assert!(LabelSelector::parse("a=b,a=b")
            .unwrap()
            .matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn rejects_garbage_with_upstream_messages() {
        for bad in [
            "a in x",
            "a foo (x)",
            "a=b c",
            "-a=b",
            "a in (x",
            "a>x",
            ",a",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
        let e = LabelSelector::parse("n>x").unwrap_err().to_string();
        assert!(e.contains("must be an integer"), "{e}");
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
    }
}
