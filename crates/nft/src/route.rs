//! Which batch goes to the kernel: every operation of every table in it encoded as nf_tables
//! netlink, or nothing at all. A construct the encoder does not cover (interface-name
//! wildcards, interval sets of concatenations, attributes over 64 KiB: none of them in a
//! table sarasa programs) is refused with an error naming it, before anything is
//! sent — the `nft` tool is never run on a node, so there is no second path to fall back to.
//! Kept apart from the encoder (which only says what it cannot encode) and from the socket
//! (which only sends what it is given), so the decision is tested without either.

use crate::diff::Transaction;
use crate::model::Family;
use crate::wire::batch::{encode, Batch};
use crate::wire::Unsupported;
use crate::NftError;

/// The batch for `parts` (empty transactions left out), numbered from `first_seq`; `None`
/// when there is nothing to send.
pub(crate) fn route(
    parts: &[(Family, &str, &Transaction)],
    first_seq: u32,
) -> Result<Option<Batch>, NftError> {
    let parts: Vec<(Family, &str, &Transaction)> = parts
        .iter()
        .copied()
        .filter(|(_, _, tx)| !tx.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    encode(&parts, first_seq).map_err(|Unsupported(why)| NftError::Unencodable {
        what: why,
        tables: parts
            .iter()
            .map(|(f, name, _)| format!("{} {name}", f.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{diff, diff_kernel};
    use crate::expr::{Expr, Field, MetaKey, Rule, Stmt, Verdict};
    use crate::model::{Chain, ChainType, Hook, Policy, Table, Value};

    fn table(name: &str, rule: Rule) -> Table {
        let mut t = Table::new(Family::Inet, name);
        t.add_chain(
            Chain::base("in", ChainType::Filter, Hook::Input, 0, Policy::Accept).rule(rule),
        );
        t
    }

    #[test]
    fn encodable_batches_go_native_in_one_batch() {
        let a = diff_kernel(
            None,
            &table("a", Rule::new().counter().verdict(Verdict::Accept)),
        );
        let b = diff_kernel(None, &table("b", Rule::new().verdict(Verdict::Drop)));
        let batch = route(&[(Family::Inet, "a", &a), (Family::Inet, "b", &b)], 7)
            .unwrap()
            .expect("a batch");
        assert_eq!(batch.first, 7);
        // begin, 2 x (table, chain, rule), end
        assert_eq!(batch.seq - batch.first, 8);
    }

    #[test]
    fn one_unencodable_part_refuses_the_whole_batch_naming_it() {
        let a = diff_kernel(None, &table("a", Rule::new().verdict(Verdict::Accept)));
        // No sarasa table matches an interface name wildcard; the encoder does not cover it.
        let by_name = Rule::new()
            .eq(
                Expr::Meta(MetaKey::Oifname),
                Expr::Value(Value::Ifname("veth*".into())),
            )
            .verdict(Verdict::Accept);
        let b = diff_kernel(None, &table("b", by_name));
        match route(&[(Family::Inet, "a", &a), (Family::Inet, "b", &b)], 1) {
            Err(e @ NftError::Unencodable { what, .. }) => {
                assert_eq!(what, "interface name wildcard");
                let msg = e.to_string();
                assert!(msg.contains("interface name wildcard"), "{msg}");
                assert!(msg.contains("inet a, inet b"), "{msg}");
            }
            other => panic!("expected an error, got {:?}", other.map(|b| b.is_some())),
        }
    }

    #[test]
    fn a_bridge_table_with_ip_fields_is_refused_naming_it() {
        // nft would give `ip saddr` a link-layer dependency in a bridge table; the encoder
        // does not write one, so it refuses rather than match every frame's bytes 12-15.
        let mut t = Table::new(Family::Bridge, "br");
        t.add_chain(
            Chain::base(
                "fwd",
                ChainType::Filter,
                Hook::Forward,
                -200,
                Policy::Accept,
            )
            .rule(
                Rule::new()
                    .eq(
                        Expr::Payload(Field::IpSaddr),
                        Expr::value("10.0.0.1".parse::<std::net::IpAddr>().unwrap()),
                    )
                    .verdict(Verdict::Drop),
            ),
        );
        let tx = diff_kernel(None, &t);
        match route(&[(Family::Bridge, "br", &tx)], 1) {
            Err(e @ NftError::Unencodable { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("header field in a bridge table"), "{msg}");
                assert!(msg.contains("bridge br"), "{msg}");
            }
            other => panic!("expected an error, got {:?}", other.map(|b| b.is_some())),
        }
        // What it covers goes native.
        let mut ok = Table::new(Family::Bridge, "br");
        ok.add_chain(
            Chain::base(
                "fwd",
                ChainType::Filter,
                Hook::Forward,
                -200,
                Policy::Accept,
            )
            .rule(
                Rule::new()
                    .lt(Expr::NumgenRandom(10_000), Expr::Value(Value::Num(50)))
                    .verdict(Verdict::Drop),
            ),
        );
        let tx = diff_kernel(None, &ok);
        assert!(matches!(
            route(&[(Family::Bridge, "br", &tx)], 1),
            Ok(Some(_))
        ));
    }

    #[test]
    fn logging_goes_native() {
        let logged = Rule::new()
            .then(Stmt::Log {
                prefix: Some("sarasa-pol x".into()),
                group: Some(100),
            })
            .verdict(Verdict::Drop);
        let t = diff_kernel(None, &table("p", logged));
        assert!(matches!(route(&[(Family::Inet, "p", &t)], 1), Ok(Some(_))));
    }

    #[test]
    fn empty_transactions_send_nothing() {
        let t = table("a", Rule::new().verdict(Verdict::Accept));
        let none = diff(&t, &t);
        assert!(matches!(route(&[(Family::Inet, "a", &none)], 1), Ok(None)));
        assert!(matches!(route(&[], 1), Ok(None)));
    }
}
