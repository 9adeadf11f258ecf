//! The vpc backend's words for IPAM running out: the node's ranges are the addresses the
//! cloud assigned it, so "no free address" means either the node is at its limit (no more
//! pods fit: a lasting error) or its agent has not taken more from the cloud yet (the warm
//! pool ran dry: try again).

use crate::config::Plugin;
use crate::error::{CniError, ADDRESS_EXHAUSTED, TRY_AGAIN_LATER};

/// `e` as the ADD's error: explained in VPC terms when the plugin runs for a vpc node.
pub fn explain(p: &Plugin, e: sarasa_ipam::Error) -> CniError {
    let (Some(vpc), sarasa_ipam::Error::Exhausted { .. }) = (&p.raw.vpc, &e) else {
        return e.into();
    };
    // Each address the cloud assigned is one one-address range.
    let held = p.ranges.iter().map(Vec::len).max().unwrap_or(0);
    match vpc.address_limit {
        Some(limit) if held >= limit as usize => CniError::new(
            ADDRESS_EXHAUSTED,
            "node at its VPC address limit",
            format!(
                "all {held} VPC addresses of this node are in use and {limit} is the most the \
                 cloud gives it (its instance type's limit): the node cannot take another pod"
            ),
        ),
        limit => CniError::new(
            TRY_AGAIN_LATER,
            "no free VPC address yet",
            format!(
                "all {held} VPC addresses assigned to this node are in use; its agent is taking \
                 more from the cloud (limit {}): try again",
                limit.map_or("unknown".to_string(), |l| l.to_string())
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(limit: Option<u32>, held: usize) -> Plugin {
        let ranges: Vec<String> = (0..held)
            .map(|i| {
                format!(
                    r#"{{"subnet":"10.244.0.0/16","rangeStart":"10.244.0.{0}","rangeEnd":"10.244.0.{0}"}}"#,
                    i + 4
                )
            })
            .collect();
        let vpc = match limit {
            Some(l) => format!(r#"{{"addressLimit":{l}}}"#),
            None => "{}".into(),
        };
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"sarasa-cni","mode":"routed","vpc":{vpc},
                "ipam":{{"ranges":[[{}]]}}}}"#,
            ranges.join(",")
        );
        crate::config::decode(conf.as_bytes())
            .unwrap()
            .validate(&[])
            .unwrap()
    }

    fn exhausted() -> sarasa_ipam::Error {
        sarasa_ipam::Error::Exhausted {
            ranges: "…".into()
        }
    }

    #[test]
    fn at_the_limit_is_a_lasting_error_naming_it() {
        let e = explain(&plugin(Some(2), 2), exhausted());
        assert_eq!(e.code, ADDRESS_EXHAUSTED);
        assert!(
            e.details.contains("2 is the most the cloud gives it"),
            "{e}"
        );
    }

    #[test]
    fn below_the_limit_is_try_again() {
        let e = explain(&plugin(Some(8), 2), exhausted());
        assert_eq!(e.code, TRY_AGAIN_LATER);
        assert!(e.details.contains("limit 8"), "{e}");
    }

    #[test]
    fn other_errors_and_other_backends_are_unchanged() {
        let e = explain(
            &plugin(Some(2), 2),
            sarasa_ipam::Error::InvalidConfig("x".into()),
        );
        assert_eq!(e.code, crate::error::INVALID_CONFIG);
        let mut p = plugin(Some(2), 2);
        p.raw.vpc = None;
        assert_eq!(explain(&p, exhausted()).code, ADDRESS_EXHAUSTED);
        assert!(!explain(&p, exhausted()).details.contains("VPC"));
    }
}
