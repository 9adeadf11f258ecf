//! The fallback policy of the netlink backend: a batch goes to the kernel natively when every
//! operation of every table in it encodes; otherwise the WHOLE batch goes to one `nft -f` run of
//! the tables' scripts, so it still applies atomically (half native, half `nft` would be two
//! commits). Every table sarasa programs (masquerade, service proxy and shards, policy with its
//! `log` statements) encodes; what is left for `nft` is what no sarasa table uses (interface
//! names, `tcp dport`, interval sets of concatenations, attributes over 64 KiB). Kept apart from the encoder (which only says what it cannot encode) and from the
//! socket (which only sends what it is given), so the decision is tested without either.

use crate::diff::Transaction;
use crate::model::Family;
use crate::wire::batch::{encode, Batch};
use crate::wire::Unsupported;

/// How a batch of table transactions is applied.
pub(crate) enum Route {
    /// Nothing to send: every transaction is empty.
    Nothing,
    /// One nf_tables netlink batch.
    Native(Batch),
    /// One `nft -f` script holding every part, and why the encoder declined.
    Nft { why: &'static str, script: String },
}

/// The route for `parts` (empty transactions left out), the batch numbered from `first_seq`.
pub(crate) fn route(parts: &[(Family, &str, &Transaction)], first_seq: u32) -> Route {
    let parts: Vec<(Family, &str, &Transaction)> = parts
        .iter()
        .copied()
        .filter(|(_, _, tx)| !tx.is_empty())
        .collect();
    if parts.is_empty() {
        return Route::Nothing;
    }
    match encode(&parts, first_seq) {
        Ok(None) => Route::Nothing,
        Ok(Some(batch)) => Route::Native(batch),
        Err(Unsupported(why)) => Route::Nft {
            why,
            script: parts.iter().map(|(_, _, tx)| tx.script()).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{diff, diff_kernel};
    use crate::expr::{Expr, MetaKey, Rule, Stmt, Verdict};
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
        match route(&[(Family::Inet, "a", &a), (Family::Inet, "b", &b)], 7) {
            Route::Native(batch) => {
                assert_eq!(batch.first, 7);
                // begin, 2 x (table, chain, rule), end
                assert_eq!(batch.seq - batch.first, 8);
            }
            _ => panic!("expected a native batch"),
        }
    }

    #[test]
    fn one_unencodable_part_sends_every_part_to_nft() {
        let a = diff_kernel(None, &table("a", Rule::new().verdict(Verdict::Accept)));
        // No sarasa table matches interface names; the encoder does not cover them.
        let by_name = Rule::new()
            .eq(
                Expr::Meta(MetaKey::Iifname),
                Expr::Value(Value::Ifname("eth0".into())),
            )
            .verdict(Verdict::Accept);
        let b = diff_kernel(None, &table("b", by_name));
        match route(&[(Family::Inet, "a", &a), (Family::Inet, "b", &b)], 1) {
            Route::Nft { why, script } => {
                assert_eq!(why, "ifname");
                assert!(script.contains("table inet a"), "{script}");
                assert!(script.contains("table inet b"), "{script}");
            }
            _ => panic!("expected the nft route"),
        }
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
        assert!(matches!(
            route(&[(Family::Inet, "p", &t)], 1),
            Route::Native(_)
        ));
    }

    #[test]
    fn empty_transactions_send_nothing() {
        let t = table("a", Rule::new().verdict(Verdict::Accept));
        let none = diff(&t, &t);
        assert!(matches!(
            route(&[(Family::Inet, "a", &none)], 1),
            Route::Nothing
        ));
        assert!(matches!(route(&[], 1), Route::Nothing));
    }
}
