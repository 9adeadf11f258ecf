//! The nftables interpreter: what the kernel does with one packet at one hook, given every
//! table sarasa programs on a node (the proxy's `inet sarasa` and its `inet sarasa-svcNN`
//! shards, `inet sarasa-policy`, `inet sarasa-node`). `sarasa trace` runs it once per hook per
//! node a packet crosses; the policy tests check it against the policy oracle and real packets.
//!
//! It models the kernel, not nft's text:
//! - hook order (`hook.rs`): base chains by priority; NAT chains run from the NAT core's hook
//!   (`net/netfilter/nf_nat_core.c`: `nf_nat_register_fn`, `nf_nat_inet_fn`), only for a
//!   connection's first packet, and the first chain that binds a DNAT (prerouting/output) or
//!   SNAT/masquerade (input/postrouting) ends NAT for the hook;
//! - verdicts (`walk.rs`; `net/netfilter/nf_tables_core.c`: `nft_do_chain`): `accept` ends the
//!   base chain and the packet goes on to the next one; `drop` and `reject` end the hook;
//!   `jump` returns after the callee, `goto` does not, `return` in a base chain ends it and
//!   its policy applies; NAT statements end the chain with accept (`nft_nat_eval` sets
//!   `NF_ACCEPT`); jumps nest at most 16 deep (`NFT_JUMP_STACK_SIZE`);
//! - expressions (`eval.rs`): payload fields of the wrong family or protocol and missing headers
//!   break the rule, whatever the operator; set lookups that miss break the rule
//!   (`nft_lookup_eval`); interval sets match by prefix; sets flagged dynamic start empty and
//!   `update` fills them for the rest of the path;
//! - `numgen random mod N` forks: one [`Path`] per way (every candidate endpoint), and `numgen
//!   random mod k == v` forks into matched and not matched.
//!
//! Conntrack is an input ([`Packet::ct`]); routing is the caller's (interfaces in [`Packet`]);
//! node addresses come from [`Env`].

mod eval;
mod hook;
mod packet;
mod path;
mod walk;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_expr;
#[cfg(test)]
mod tests_nat;

pub use hook::{run_hook, Ruleset, MAX_PATHS};
pub use packet::{CtState, Env, Packet};
pub use path::{Event, HookVerdict, Path, Step};
