//! One hook across tables: which base chains run, in which order, which NAT chains are
//! skipped, and the enumeration of every numgen choice into its own [`Path`].
//!
//! Order: the base chains of every given table attached to the hook whose family fits the
//! packet (inet: both; ip: IPv4; ip6: IPv6; a bridge table is refused: its hooks see bridged
//! frames, which are not modelled). Filter and route chains run at their own priority. NAT chains do not hook themselves: the kernel's NAT core registers one hook per
//! hook point at a fixed priority (`NF_IP_PRI_NAT_DST` -100 for prerouting/output,
//! `NF_IP_PRI_NAT_SRC` +100 for input/postrouting; `nf_nat_register_fn`) and runs the NAT
//! chains from there, in their own priority order (`nf_nat_inet_fn`). At equal priority the
//! order here is fixed: filter/route chains before the NAT core, then table name, chain name.

use std::collections::BTreeMap;

use crate::model::{BaseChain, ChainType, Family, Hook, Table};
use crate::NftError;

use super::packet::{CtState, Env, Packet};
use super::path::{Event, HookVerdict, Path, Step};
use super::walk::{Choices, Run};

/// Beyond this many paths through one hook the ruleset is not what sarasa programs.
pub const MAX_PATHS: usize = 1 << 16;

/// The NAT core's priority at `hook`.
fn nat_core_priority(hook: Hook) -> i32 {
    match hook {
        Hook::Prerouting | Hook::Output => -100,
        Hook::Input | Hook::Postrouting => 100,
        // No NAT at forward; keep such chains at their own priority.
        Hook::Forward => 0,
    }
}

/// One base chain to run at the hook.
#[derive(Clone, Copy)]
struct Entry<'a> {
    table: &'a Table,
    chain: &'a str,
    base: &'a BaseChain,
}

fn family_fits(family: Family, packet: &Packet) -> bool {
    match family {
        Family::Inet => true,
        Family::Ip => !packet.is_ipv6(),
        Family::Ip6 => packet.is_ipv6(),
        // Refused by `run_hook` before: bridged frames are not on the IP hooks modelled here.
        Family::Bridge => false,
    }
}

fn sort_key<'a>(e: &Entry<'a>) -> (i32, bool, i32, &'a str, &'a str) {
    let nat = e.base.kind == ChainType::Nat;
    let at = if nat {
        nat_core_priority(e.base.hook)
    } else {
        e.base.priority
    };
    (at, nat, e.base.priority, e.table.name.as_str(), e.chain)
}

/// A node's tables with their base chains found and put in kernel order once: finding them
/// means visiting every chain (~5 ms for 10k Services' shards), so callers that run several
/// hooks or packets over one node's tables (`sarasa trace`) build this once.
pub struct Ruleset<'a> {
    /// Base chains of every hook, in kernel order.
    base: Vec<Entry<'a>>,
}

impl<'a> Ruleset<'a> {
    /// Indexes the base chains of `tables`.
    pub fn new(tables: &[&'a Table]) -> Self {
        let mut base: Vec<Entry<'a>> = tables
            .iter()
            .flat_map(|t| {
                t.chains.values().filter_map(move |c| {
                    Some(Entry {
                        table: t,
                        chain: c.name.as_str(),
                        base: c.base.as_ref()?,
                    })
                })
            })
            .collect();
        base.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        Ruleset { base }
    }

    /// Runs `packet` through every base chain attached to `hook`, in kernel order; see
    /// [`run_hook`].
    pub fn run_hook(
        &self,
        hook: Hook,
        packet: &Packet,
        env: &dyn Env,
    ) -> Result<Vec<Path>, NftError> {
        // A bridge table's chains see the frames a bridge forwards, at the bridge's own hooks:
        // a path of their own, not the IP one walked here.
        if let Some(e) = self.base.iter().find(|e| e.table.family == Family::Bridge) {
            return Err(NftError::Invalid(format!(
                "table bridge {}: the bridge family's hooks are not modelled (only inet, ip and ip6)",
                e.table.name
            )));
        }
        let entries: Vec<Entry<'a>> = self
            .base
            .iter()
            .filter(|e| e.base.hook == hook && family_fits(e.table.family, packet))
            .copied()
            .collect();
        let mut paths = Vec::new();
        let mut script = Vec::new();
        loop {
            let (path, made) = run_once(&entries, hook, packet, env, script)?;
            paths.push(path);
            if paths.len() > MAX_PATHS {
                return Err(NftError::Invalid(format!(
                    "more than {MAX_PATHS} paths through hook {}",
                    hook.as_str()
                )));
            }
            // Next leaf of the choice tree: bump the last choice that has alternatives left.
            match (0..made.len()).rev().find(|&i| made[i].1 + 1 < made[i].0) {
                Some(i) => {
                    script = made[..i].iter().map(|c| c.1).collect();
                    script.push(made[i].1 + 1);
                }
                None => return Ok(paths),
            }
        }
    }
}

/// Runs `packet` through every base chain of `tables` attached to `hook`, in kernel order.
/// numgen forks the walk: one [`Path`] per way the packet can go (every candidate endpoint).
/// Sets flagged dynamic start empty; `update @set` adds to them for the rest of the path.
/// (Indexes the tables each call: for several hooks or packets, build a [`Ruleset`] once.)
pub fn run_hook(
    tables: &[&Table],
    hook: Hook,
    packet: &Packet,
    env: &dyn Env,
) -> Result<Vec<Path>, NftError> {
    Ruleset::new(tables).run_hook(hook, packet, env)
}

/// One path: follows `script` for numgen choices (0 past its end); returns the path and every
/// choice made.
fn run_once(
    entries: &[Entry<'_>],
    hook: Hook,
    packet: &Packet,
    env: &dyn Env,
    script: Vec<u32>,
) -> Result<(Path, Vec<(u32, u32)>), NftError> {
    let mut run = Run {
        env,
        hook,
        packet: packet.clone(),
        steps: Vec::new(),
        dynamic: BTreeMap::new(),
        choices: Choices {
            script,
            made: Vec::new(),
        },
        nat_bound: false,
    };
    let mut verdict = HookVerdict::Accept;
    for e in entries {
        if e.base.kind == ChainType::Nat && (run.packet.ct != CtState::New || run.nat_bound) {
            run.steps.push(Step {
                table: e.table.name.clone(),
                chain: e.chain.to_string(),
                rule: None,
                comment: None,
                event: Event::NatSkipped,
            });
            continue;
        }
        match run.base_chain(e.table, e.chain)? {
            HookVerdict::Accept => {}
            end => {
                verdict = end;
                break;
            }
        }
    }
    let path = Path {
        verdict,
        packet: run.packet,
        steps: run.steps,
    };
    Ok((path, run.choices.made))
}
