//! Walking one base chain of one table: rules in order, statements in order, jump/goto/return
//! with the kernel's jump stack limit, and the effects of NAT, mark, log, set-update, MSS-clamp
//! and reject statements on the packet. The state of one path through a hook ([`Run`]) lives
//! here too: the packet, the steps so far, the elements `update` added to dynamic sets, and the
//! numgen choices this path takes ([`Choices`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::expr::{Rule, Stmt, Verdict};
use crate::model::{BaseChain, ChainType, Hook, Key, L4Proto, MapValue, Table};
use crate::NftError;

use super::packet::{CtState, Env, Packet};
use super::path::{Event, HookVerdict, Step};

/// The kernel's jump stack (`NFT_JUMP_STACK_SIZE`): deeper nesting is a loop or an error.
pub(crate) const MAX_DEPTH: usize = 16;

/// The numgen choices of one path: a script to follow (choice 0 past its end) and the record
/// of every choice made, as (number of alternatives, alternative taken).
#[derive(Debug, Default)]
pub(crate) struct Choices {
    pub script: Vec<u32>,
    pub made: Vec<(u32, u32)>,
}

impl Choices {
    /// Picks one of `n` (> 0) alternatives.
    pub fn choose(&mut self, n: u32) -> u32 {
        let c = self.script.get(self.made.len()).copied().unwrap_or(0);
        self.made.push((n, c));
        c
    }
}

/// Conntrack's own hook priority (`NF_IP_PRI_CONNTRACK`): chains before it see packets with
/// no entry yet.
const CONNTRACK_PRIORITY: i32 = -200;

/// How a chain walk ended.
pub(crate) enum Flow {
    /// A verdict that ends the base chain (accept, also by a NAT statement), or the hook.
    Final(HookVerdict),
    /// Fell off the end of the chain, or `return`.
    Fallthrough,
}

/// One path's state through a hook.
pub(crate) struct Run<'a> {
    pub env: &'a dyn Env,
    pub hook: Hook,
    pub packet: Packet,
    pub steps: Vec<Step>,
    /// Elements added by `update @set` in this run, per (table, set).
    pub dynamic: BTreeMap<(String, String), BTreeSet<Key>>,
    pub choices: Choices,
    /// A NAT binding of this hook's kind was made.
    pub nat_bound: bool,
}

/// Where the walk is: the table (for jumps and sets), its base chain, the current chain.
pub(crate) struct Here<'a> {
    pub table: &'a Table,
    pub base: &'a BaseChain,
    pub chain: &'a str,
}

impl Run<'_> {
    pub fn step(&mut self, here: &Here<'_>, rule: Option<(usize, &Rule)>, event: Event) {
        self.steps.push(Step {
            table: here.table.name.clone(),
            chain: here.chain.to_string(),
            rule: rule.map(|(i, _)| i),
            comment: rule.and_then(|(_, r)| r.comment.clone()),
            event,
        });
    }

    /// Walks base chain `name` of `table`, applying its policy when it falls off the end.
    pub fn base_chain(&mut self, table: &Table, name: &str) -> Result<HookVerdict, NftError> {
        let chain = table
            .chains
            .get(name)
            .ok_or_else(|| NftError::Invalid(format!("table {}: no chain {name}", table.name)))?;
        let base = chain.base.as_ref().ok_or_else(|| {
            NftError::Invalid(format!(
                "table {}: chain {name} is no base chain",
                table.name
            ))
        })?;
        let here = Here {
            table,
            base,
            chain: name,
        };
        match self.chain(&here, 0)? {
            Flow::Final(v) => Ok(v),
            Flow::Fallthrough => {
                self.step(&here, None, Event::ChainPolicy(base.policy));
                Ok(match base.policy {
                    crate::model::Policy::Accept => HookVerdict::Accept,
                    crate::model::Policy::Drop => HookVerdict::Drop,
                })
            }
        }
    }

    fn chain(&mut self, here: &Here<'_>, depth: usize) -> Result<Flow, NftError> {
        if depth > MAX_DEPTH {
            return Err(NftError::Invalid(format!(
                "table {}: jumps nest deeper than {MAX_DEPTH} at chain {} (a jump loop?)",
                here.table.name, here.chain
            )));
        }
        let chain = here.table.chains.get(here.chain).ok_or_else(|| {
            NftError::Invalid(format!(
                "table {}: jump to unknown chain {}",
                here.table.name, here.chain
            ))
        })?;
        self.step(
            here,
            None,
            Event::EnterChain {
                base: chain.base.clone(),
            },
        );
        for (i, rule) in chain.rules.iter().enumerate() {
            let Some(verdict) = self.rule(here, i, rule)? else {
                continue;
            };
            match verdict {
                RuleEnd::Final(v) => return Ok(Flow::Final(v)),
                RuleEnd::Verdict(v) => match v {
                    Verdict::Accept => return Ok(Flow::Final(HookVerdict::Accept)),
                    Verdict::Drop => return Ok(Flow::Final(HookVerdict::Drop)),
                    Verdict::Continue => continue,
                    Verdict::Return => return Ok(Flow::Fallthrough),
                    Verdict::Jump(target) => {
                        let callee = Here {
                            chain: &target,
                            ..*here
                        };
                        match self.chain(&callee, depth + 1)? {
                            f @ Flow::Final(_) => return Ok(f),
                            Flow::Fallthrough => continue,
                        }
                    }
                    Verdict::Goto(target) => {
                        let callee = Here {
                            chain: &target,
                            ..*here
                        };
                        return self.chain(&callee, depth + 1);
                    }
                },
            }
        }
        Ok(Flow::Fallthrough)
    }

    /// Runs one rule; `None` when it did not match (or ended without a verdict).
    fn rule(
        &mut self,
        here: &Here<'_>,
        i: usize,
        rule: &Rule,
    ) -> Result<Option<RuleEnd>, NftError> {
        let at = Some((i, rule));
        for stmt in &rule.stmts {
            match stmt {
                Stmt::Match { left, op, right } => {
                    if !self.matches(here, at, left, *op, right)? {
                        return Ok(None);
                    }
                }
                Stmt::Counter => {}
                Stmt::Verdict(v) => {
                    self.step(here, at, Event::Verdict(v.clone()));
                    return Ok(Some(RuleEnd::Verdict(v.clone())));
                }
                Stmt::Vmap { key, map } => {
                    let Some(key) = self.key(here, at, key)? else {
                        return Ok(None);
                    };
                    match self.lookup(here.table, map, &key)? {
                        Some(MapValue::Verdict(v)) => {
                            self.step(
                                here,
                                at,
                                Event::MapHit {
                                    map: map.clone(),
                                    key,
                                },
                            );
                            self.step(here, at, Event::Verdict(v.clone()));
                            return Ok(Some(RuleEnd::Verdict(v)));
                        }
                        Some(MapValue::Data(_)) => {
                            return Err(NftError::Invalid(format!(
                                "table {}: vmap on data map @{map}",
                                here.table.name
                            )))
                        }
                        None => return Ok(None),
                    }
                }
                Stmt::NumgenVmap { targets } => {
                    let Ok(n) = u32::try_from(targets.len()) else {
                        return Err(NftError::Invalid("numgen vmap too large".into()));
                    };
                    if n == 0 {
                        return Ok(None);
                    }
                    let picked = self.choices.choose(n);
                    self.step(here, at, Event::Numgen { modulus: n, picked });
                    let v = targets.get(picked as usize).cloned().ok_or_else(|| {
                        NftError::Invalid(format!("numgen picked {picked} of {n}"))
                    })?;
                    self.step(here, at, Event::Verdict(v.clone()));
                    return Ok(Some(RuleEnd::Verdict(v)));
                }
                Stmt::Dnat { addr, port } => {
                    self.check_nat(here, "dnat", &[Hook::Prerouting, Hook::Output])?;
                    // An inet table's `dnat ip to` does nothing to an IPv6 packet.
                    if addr.is_ipv6() != self.packet.is_ipv6() {
                        continue;
                    }
                    self.packet.daddr = *addr;
                    if let Some(p) = port {
                        self.packet.dport = *p;
                    }
                    self.packet.ct_dnat = true;
                    self.nat_bound = true;
                    self.step(
                        here,
                        at,
                        Event::Dnat {
                            addr: *addr,
                            port: *port,
                        },
                    );
                    return Ok(Some(RuleEnd::Final(HookVerdict::Accept)));
                }
                Stmt::Snat { addr } => {
                    self.check_nat(here, "snat", &[Hook::Postrouting, Hook::Input])?;
                    if addr.is_ipv6() != self.packet.is_ipv6() {
                        continue;
                    }
                    return Ok(Some(self.snat(here, at, *addr)));
                }
                Stmt::Masquerade { .. } => {
                    self.check_nat(here, "masquerade", &[Hook::Postrouting])?;
                    let daddr = self.packet.daddr;
                    let src = self
                        .env
                        .masquerade_source(self.packet.oifname.as_deref(), daddr)
                        .filter(|a: &IpAddr| a.is_ipv6() == daddr.is_ipv6());
                    self.step(here, at, Event::Masquerade { addr: src });
                    let Some(src) = src else {
                        return Ok(Some(RuleEnd::Final(HookVerdict::Drop)));
                    };
                    self.packet.saddr = src;
                    self.nat_bound = true;
                    return Ok(Some(RuleEnd::Final(HookVerdict::Accept)));
                }
                Stmt::MarkOr(bits) => self.set_mark(here, at, self.packet.mark | bits),
                Stmt::MarkAnd(bits) => self.set_mark(here, at, self.packet.mark & bits),
                Stmt::MarkSet(mark) => self.set_mark(here, at, *mark),
                Stmt::Reject(kind) => {
                    self.step(here, at, Event::Reject(*kind));
                    return Ok(Some(RuleEnd::Final(HookVerdict::Reject(*kind))));
                }
                Stmt::Log { prefix, group } => self.step(
                    here,
                    at,
                    Event::Log {
                        prefix: prefix.clone(),
                        group: *group,
                    },
                ),
                Stmt::ClampMssToPmtu => {
                    // `rt tcpmss` loads only where the packet has a route (the kernel's
                    // `nft_rt_validate`); the option write breaks the rule for a packet that
                    // is not TCP (`nft_exthdr_tcp_set_eval`).
                    let hooks = [Hook::Forward, Hook::Output, Hook::Postrouting];
                    if !hooks.contains(&self.hook) {
                        return Err(NftError::Invalid(format!(
                            "table {} chain {}: rt mtu outside forward/output/postrouting",
                            here.table.name, here.chain
                        )));
                    }
                    if self.packet.proto != L4Proto::Tcp {
                        return Ok(None);
                    }
                    self.step(here, at, Event::MssClamped);
                }
                Stmt::Notrack => {
                    // Conntrack attaches its entry at priority -200 (`NF_IP_PRI_CONNTRACK`);
                    // from there on `notrack` finds one and does nothing.
                    if here.base.priority < CONNTRACK_PRIORITY && self.packet.ct == CtState::New {
                        self.packet.ct = CtState::Untracked;
                        self.step(here, at, Event::Untracked);
                    }
                }
                Stmt::UpdateSet { set, key, .. } => {
                    if !here.table.sets.contains_key(set) {
                        return Err(NftError::Invalid(format!(
                            "table {}: update of unknown set @{set}",
                            here.table.name
                        )));
                    }
                    let Some(key) = self.key(here, at, key)? else {
                        return Ok(None);
                    };
                    self.dynamic
                        .entry((here.table.name.clone(), set.clone()))
                        .or_default()
                        .insert(key.clone());
                    self.step(
                        here,
                        at,
                        Event::UpdateSet {
                            set: set.clone(),
                            key,
                        },
                    );
                }
            }
        }
        Ok(None)
    }

    fn snat(&mut self, here: &Here<'_>, at: Option<(usize, &Rule)>, addr: IpAddr) -> RuleEnd {
        self.packet.saddr = addr;
        self.nat_bound = true;
        self.step(here, at, Event::Snat { addr });
        RuleEnd::Final(HookVerdict::Accept)
    }

    fn set_mark(&mut self, here: &Here<'_>, at: Option<(usize, &Rule)>, mark: u32) {
        self.packet.mark = mark;
        self.step(here, at, Event::MarkSet { mark });
    }

    /// NAT statements load only into nat chains of the hooks of their kind (the kernel's
    /// `nft_nat_validate` / `nft_masq_validate` refuse the rule otherwise).
    fn check_nat(&self, here: &Here<'_>, what: &str, hooks: &[Hook]) -> Result<(), NftError> {
        if here.base.kind != ChainType::Nat || !hooks.contains(&self.hook) {
            return Err(NftError::Invalid(format!(
                "table {} chain {}: {what} outside a nat chain of hook {}",
                here.table.name,
                here.chain,
                hooks
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join("/")
            )));
        }
        Ok(())
    }
}

/// How a matched rule ended.
enum RuleEnd {
    /// A verdict statement (or vmap) to act on.
    Verdict(Verdict),
    /// A statement that ends the base chain or hook by itself (NAT: accept; reject).
    Final(HookVerdict),
}
