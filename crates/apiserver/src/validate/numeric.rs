//! Bounds of numeric fields that feed arithmetic (replicas, rollout budgets, grace periods,
//! deadlines, probe timings), so no value a client sends can overflow or ask for unbounded
//! work. Values are checked as JSON: a float, a number beyond i64 or a value outside the
//! range is a field error naming the field, worded as kube-apiserver words it.

use serde_json::Value;

use crate::error::FieldError;

/// int32's largest value: kube's API types hold these fields as int32.
pub const INT32_MAX: i64 = i32::MAX as i64;

/// Checks that `v` (when present and not null) is an integer in `lo..=hi`; returns it.
pub fn int_in(
    v: Option<&Value>,
    field: &str,
    lo: i64,
    hi: i64,
    errs: &mut Vec<FieldError>,
) -> Option<i64> {
    let v = v.filter(|v| !v.is_null())?;
    let shown = v.to_string();
    let msg = match v.as_i64() {
        Some(n) if (lo..=hi).contains(&n) => return Some(n),
        Some(n) if n < 0 && lo == 0 => "must be greater than or equal to 0".to_string(),
        Some(_) => format!("must be between {lo} and {hi}, inclusive"),
        None => format!("must be an integer between {lo} and {hi}, inclusive"),
    };
    errs.push(FieldError::invalid(field, shown, msg));
    None
}

/// A parsed int-or-string rollout budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(i64),
    Percent(i64),
}

impl IntOrPercent {
    pub fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Int(0) | IntOrPercent::Percent(0))
    }

    /// Parses a stored value without failing: what a controller uses (validation already
    /// refused anything else; a value stored before that is clamped, never overflowing).
    pub fn parse(v: Option<&Value>) -> Option<IntOrPercent> {
        match v? {
            Value::Number(n) => Some(IntOrPercent::Int(
                n.as_i64().unwrap_or(INT32_MAX).clamp(0, INT32_MAX),
            )),
            Value::String(s) => match s.strip_suffix('%') {
                Some(p) => Some(IntOrPercent::Percent(
                    p.parse::<i64>().unwrap_or(100).clamp(0, 100),
                )),
                None => s
                    .parse::<i64>()
                    .ok()
                    .map(|i| IntOrPercent::Int(i.clamp(0, INT32_MAX))),
            },
            _ => None,
        }
    }

    /// The value scaled against `total`: a percent rounds up or down as asked; saturating.
    pub fn scaled(self, total: i64, round_up: bool) -> i64 {
        match self {
            IntOrPercent::Int(i) => i,
            IntOrPercent::Percent(p) => {
                let x = p.saturating_mul(total.max(0));
                if round_up {
                    x.saturating_add(99) / 100
                } else {
                    x / 100
                }
            }
        }
    }
}

/// An int-or-percent: an integer 0..=int32 max, or `N%` with N 0..=100 (digits only).
pub fn int_or_percent(
    v: Option<&Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<IntOrPercent> {
    let v = v.filter(|v| !v.is_null())?;
    match v {
        Value::Number(_) => int_in(Some(v), field, 0, INT32_MAX, errs).map(IntOrPercent::Int),
        Value::String(s) => {
            let digits = s.strip_suffix('%').filter(|d| {
                !d.is_empty() && d.len() <= 18 && d.bytes().all(|b| b.is_ascii_digit())
            });
            match digits {
                None if s
                    .strip_suffix('%')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    // All digits but too long to be a number: certainly over 100.
                    errs.push(FieldError::invalid(
                        field,
                        s.clone(),
                        "must not be greater than 100%",
                    ));
                    None
                }
                None => {
                    errs.push(FieldError::invalid(
                        field,
                        s.clone(),
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    ));
                    None
                }
                Some(d) => {
                    // At most 18 digits: fits an i64.
                    let p: i64 = d.parse().unwrap_or(i64::MAX);
                    if p > 100 {
                        errs.push(FieldError::invalid(
                            field,
                            s.clone(),
                            "must not be greater than 100%",
                        ));
                        None
                    } else {
                        Some(IntOrPercent::Percent(p))
                    }
                }
            }
        }
        other => {
            errs.push(FieldError::invalid(
                field,
                other.to_string(),
                "must be an integer or a percent string",
            ));
            None
        }
    }
}

/// The numeric fields of a pod spec at `path`: grace period, active deadline, probe timings.
pub fn pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    int_in(
        spec.get("terminationGracePeriodSeconds"),
        &format!("{path}.terminationGracePeriodSeconds"),
        0,
        INT32_MAX,
        errs,
    );
    int_in(
        spec.get("activeDeadlineSeconds"),
        &format!("{path}.activeDeadlineSeconds"),
        1,
        INT32_MAX,
        errs,
    );
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let Some(p) = c.get(probe).filter(|p| p.is_object()) else {
                    continue;
                };
                let pp = format!("{path}.{list}[{i}].{probe}");
                for f in [
                    "initialDelaySeconds",
                    "timeoutSeconds",
                    "periodSeconds",
                    "successThreshold",
                    "failureThreshold",
                ] {
                    int_in(p.get(f), &format!("{pp}.{f}"), 0, INT32_MAX, errs);
                }
                int_in(
                    p.get("terminationGracePeriodSeconds"),
                    &format!("{pp}.terminationGracePeriodSeconds"),
                    1,
                    INT32_MAX,
                    errs,
                );
            }
        }
    }
}

/// A workload's `spec.replicas`: 0..=`max` (the server's configured bound per object).
pub fn replicas(spec: &Value, max: i64, errs: &mut Vec<FieldError>) {
    let Some(v) = spec.get("replicas").filter(|v| !v.is_null()) else {
        return;
    };
    match v.as_i64() {
        Some(r) if r < 0 => errs.push(FieldError::invalid(
            "spec.replicas",
            v.to_string(),
            "must be greater than or equal to 0",
        )),
        Some(r) if r <= max => {}
        _ => errs.push(FieldError::invalid(
            "spec.replicas",
            v.to_string(),
            format!(
                "must be less than or equal to {max} (this server's limit of replicas per object)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs_of(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut errs = Vec::new();
        f(&mut errs);
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn percents_bounded_without_overflow() {
        for bad in [
            "9223372036854775807%",
            "99999999999999999999999%",
            "101%",
            "-1%",
            "%",
            "1.5%",
            "x",
        ] {
            let e = errs_of(|e| {
                int_or_percent(Some(&json!(bad)), "f", e);
            });
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(e[0].starts_with("f: Invalid value"), "{e:?}");
        }
        for bad in [
            json!(i64::MAX),
            json!(-1),
            json!(u64::MAX),
            json!(1.5),
            json!(true),
        ] {
            let e = errs_of(|e| {
                int_or_percent(Some(&bad), "f", e);
            });
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
        }
        let mut e = Vec::new();
        assert_eq!(
            int_or_percent(Some(&json!("100%")), "f", &mut e),
            Some(IntOrPercent::Percent(100))
        );
        assert_eq!(
            int_or_percent(Some(&json!(3)), "f", &mut e),
            Some(IntOrPercent::Int(3))
        );
        assert!(e.is_empty());
    }

    #[test]
    fn stored_values_parse_saturating() {
        let huge = IntOrPercent::parse(Some(&json!("9223372036854775807%"))).unwrap();
        assert_eq!(huge, IntOrPercent::Percent(100));
        assert_eq!(huge.scaled(i64::MAX, true), i64::MAX / 100);
        assert_eq!(IntOrPercent::Percent(25).scaled(10, false), 2);
        assert_eq!(IntOrPercent::Percent(25).scaled(10, true), 3);
        assert_eq!(
            IntOrPercent::parse(Some(&json!(u64::MAX))),
            Some(IntOrPercent::Int(INT32_MAX))
        );
    }

    #[test]
    fn ranges_name_the_field() {
        let e = errs_of(|e| {
            int_in(Some(&json!(i64::MAX)), "spec.x", 0, INT32_MAX, e);
            int_in(Some(&json!(-5)), "spec.y", 1, INT32_MAX, e);
            int_in(Some(&json!(7)), "spec.z", 0, 10, e);
        });
        assert_eq!(e.len(), 2);
        assert!(
            e[0].starts_with("spec.x: Invalid value: 9223372036854775807"),
            "{e:?}"
        );
        assert!(
            e[1].contains("spec.y") && e[1].contains("between 1 and 2147483647"),
            "{e:?}"
        );
    }

    #[test]
    fn replicas_bounded_per_object() {
        let e = errs_of(|e| replicas(&json!({"replicas": 2147483647}), 1000, e));
        assert!(
            e[0].contains("spec.replicas") && e[0].contains("1000"),
            "{e:?}"
        );
        assert_eq!(
            errs_of(|e| replicas(&json!({"replicas": -1}), 1000, e)).len(),
            1
        );
        assert!(errs_of(|e| replicas(&json!({"replicas": 1000}), 1000, e)).is_empty());
    }

    #[test]
    fn pod_spec_fields() {
        let spec = json!({
            "terminationGracePeriodSeconds": i64::MAX,
            "activeDeadlineSeconds": 0,
            "containers": [{"name": "c", "readinessProbe": {"periodSeconds": -1, "failureThreshold": 9223372036854775807u64}}]
        });
        let mut errs = Vec::new();
        pod_spec(&spec, "spec", &mut errs);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.terminationGracePeriodSeconds",
                "spec.activeDeadlineSeconds",
                "spec.containers[0].readinessProbe.periodSeconds",
                "spec.containers[0].readinessProbe.failureThreshold"
            ]
        );
    }
}
