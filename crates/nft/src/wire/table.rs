//! A table's listing decoded from nf_tables messages: [`TableListing`] takes the messages of a
//! table, its sets, elements, chains and rules one by one, in whatever order and from however
//! many dumps they came, and yields the [`KernelTable`]. The I/O side (`crate::list`) decides
//! which dumps to run and feeds their answers in; [`decode_table`] feeds it a buffer of
//! captured messages (or an encoded batch: its `NEW*` messages describe the same objects).

use std::collections::{BTreeMap, BTreeSet};

use crate::kernel::{chain_hash_of, KernelChain, KernelSet, KernelTable};
use crate::model::Family;
use crate::nl::{attr_table, be32, cstr, listing, Attrs, Msgs, NFNL_SUBSYS_NFTABLES};
use crate::NftError;

use super::attrs::*;
use super::chain::parse_chain;
use super::elem::{decode_key, intervals, parse_elem, RawElem};
use super::rule::{rule_hash, verdict_targets};
use super::set::{parse_set_decl, SetDecl};

/// The nfnetlink family code of `f`.
pub(crate) fn family_code(f: Family) -> u8 {
    match f {
        Family::Inet => 1,
        Family::Ip => 2,
        Family::Ip6 => 10,
        Family::Bridge => 7,
    }
}
pub(crate) fn table_attr(name: &str) -> Attrs {
    let mut a = Attrs::default();
    a.str(1, name); // NFTA_TABLE_NAME / NFTA_{CHAIN,RULE,SET,SET_ELEM_LIST}_TABLE
    a
}

/// Is a message of family `f` about table `table` the one being read?
pub(crate) fn ours(fam: u8, name: &str, f: u8, table: Option<&[u8]>) -> Result<bool, NftError> {
    Ok(f == fam && table.map(cstr).transpose()? == Some(name))
}

/// A table's listing being put together from its messages.
pub(crate) struct TableListing {
    family: Family,
    fam: u8,
    name: String,
    found: bool,
    /// `NFTA_TABLE_USE`: how many chains, sets and other objects the table holds.
    pub(crate) table_use: Option<u32>,
    decls: BTreeMap<String, SetDecl>,
    /// Elements of interval sets, paired by [`TableListing::finish_sets`].
    raw: BTreeMap<String, Vec<RawElem>>,
    pub(crate) sets: BTreeMap<String, KernelSet>,
    pub(crate) chains: BTreeMap<String, KernelChain>,
    /// Binding chains (anonymous, inside a rule): not listed by nft either.
    bound: BTreeSet<String>,
    /// The chains the rules seen jump or go to, when asked for.
    pub(crate) targets: Option<BTreeSet<String>>,
}

impl TableListing {
    pub(crate) fn new(family: Family, name: &str) -> Self {
        TableListing {
            family,
            fam: family_code(family),
            name: name.to_string(),
            found: false,
            table_use: None,
            decls: BTreeMap::new(),
            raw: BTreeMap::new(),
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
            bound: BTreeSet::new(),
            targets: None,
        }
    }

    /// The nfnetlink family code and name of the table being read.
    pub(crate) fn fam(&self) -> u8 {
        self.fam
    }
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Forgets the chains (and their rules) read so far, to read them again another way.
    pub(crate) fn reset_chains(&mut self) {
        self.chains.clear();
        self.bound.clear();
        if let Some(t) = &mut self.targets {
            t.clear();
        }
    }

    /// Takes one nf_tables message: `ty` without the subsystem byte, the nfgenmsg family, the
    /// attributes. Messages about other tables or families, and of other kinds, are ignored;
    /// unknown attributes are skipped.
    pub(crate) fn message(&mut self, ty: u16, fam: u8, attrs: &[u8]) -> Result<(), NftError> {
        match ty {
            NFT_MSG_NEWTABLE => {
                let t = attr_table::<4>(attrs)?;
                if ours(self.fam, &self.name, fam, t[1])? {
                    self.found = true;
                    self.table_use = t[3].map(be32).transpose()?; // NFTA_TABLE_USE
                }
            }
            NFT_MSG_NEWSET => {
                let t = attr_table::<14>(attrs)?;
                if ours(self.fam, &self.name, fam, t[1])? {
                    if let Some(d) = parse_set_decl(&t)? {
                        self.sets.insert(
                            d.name.clone(),
                            KernelSet {
                                decl_hash: d.decl_hash,
                                elements: BTreeMap::new(),
                            },
                        );
                        self.decls.insert(d.name.clone(), d);
                    }
                }
            }
            NFT_MSG_NEWSETELEM => {
                let t = attr_table::<4>(attrs)?;
                if !ours(self.fam, &self.name, fam, t[1])? {
                    return Ok(());
                }
                let set = cstr(t[2].ok_or_else(|| listing("elements without a set"))?)?;
                // Anonymous sets (a rule's) are not listed.
                let (Some(d), Some(ks)) = (self.decls.get(set), self.sets.get_mut(set)) else {
                    return Ok(());
                };
                let Some(list) = t[3] else { return Ok(()) };
                for item in crate::nl::AttrIter(list) {
                    let (_, elem) = item?;
                    let r = parse_elem(d, elem)?;
                    if d.interval || r.key_end.is_some() {
                        self.raw.entry(d.name.clone()).or_default().push(r);
                    } else {
                        let key = decode_key(&d.name, &d.key, &r.key)?;
                        ks.elements.insert(key, r.element);
                    }
                }
            }
            NFT_MSG_NEWCHAIN => {
                let t = attr_table::<11>(attrs)?;
                if ours(self.fam, &self.name, fam, t[1])? {
                    match parse_chain(&t)? {
                        (cname, Some(chain)) => {
                            self.chains.insert(cname, chain);
                        }
                        (cname, None) => {
                            self.bound.insert(cname);
                        }
                    }
                }
            }
            NFT_MSG_NEWRULE => {
                let t = attr_table::<8>(attrs)?;
                if !ours(self.fam, &self.name, fam, t[1])? {
                    return Ok(());
                }
                let cname = cstr(t[2].ok_or_else(|| listing("rule without a chain"))?)?;
                if self.bound.contains(cname) {
                    return Ok(());
                }
                let c = self
                    .chains
                    .get_mut(cname)
                    .ok_or_else(|| listing(format!("rule of unlisted chain {cname}")))?;
                c.rule_count += 1;
                c.hash = rule_hash(t[7])?;
                if let (Some(targets), Some(exprs)) = (self.targets.as_mut(), t[4]) {
                    verdict_targets(exprs, targets)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Pairs the interval sets' elements into keys; call once all elements are in.
    pub(crate) fn finish_sets(&mut self) -> Result<(), NftError> {
        for (name, raw) in std::mem::take(&mut self.raw) {
            let (Some(d), Some(ks)) = (self.decls.get(&name), self.sets.get_mut(&name)) else {
                continue;
            };
            intervals(d, raw, &mut ks.elements)?;
        }
        Ok(())
    }

    /// The table; `None` when no message described it.
    pub(crate) fn finish(mut self) -> Result<Option<KernelTable>, NftError> {
        if !self.found {
            return Ok(None);
        }
        self.finish_sets()?;
        for c in self.chains.values_mut() {
            if c.rule_count == 0 {
                c.hash = chain_hash_of(0, None);
            }
        }
        Ok(Some(KernelTable {
            family: self.family,
            name: self.name,
            chains: self.chains,
            sets: self.sets,
        }))
    }
}

/// Table `family name` as the nf_tables messages in `buf` describe it (netlink messages back
/// to back, as received or as sent); `None` when none of them is that table. Messages of
/// other subsystems, errors and ACKs are skipped; a truncated or garbled buffer is an error.
pub fn decode_table(
    family: Family,
    name: &str,
    buf: &[u8],
) -> Result<Option<KernelTable>, NftError> {
    let mut l = TableListing::new(family, name);
    for m in Msgs(buf) {
        let m = m?;
        if m.ty >> 8 != NFNL_SUBSYS_NFTABLES {
            continue;
        }
        let (fam, attrs) = m.nft()?;
        l.message(m.ty & 0xff, fam, attrs)?;
    }
    l.finish()
}

/// The `log` statements of the rules of table `family name` in `buf` (a dump or an encoded
/// batch), as `(chain, statement)` in message order. The listing itself reads no rule
/// statements; this is how the wire tests check that logging survives a round trip through
/// the kernel.
pub fn decode_logs(
    family: Family,
    name: &str,
    buf: &[u8],
) -> Result<Vec<(String, crate::expr::Stmt)>, NftError> {
    let fam = family_code(family);
    let mut out = Vec::new();
    for m in Msgs(buf) {
        let m = m?;
        if m.ty >> 8 != NFNL_SUBSYS_NFTABLES || m.ty & 0xff != NFT_MSG_NEWRULE {
            continue;
        }
        let (f, attrs) = m.nft()?;
        let t = attr_table::<8>(attrs)?;
        if !ours(fam, name, f, t[1])? {
            continue;
        }
        let chain = cstr(t[2].ok_or_else(|| listing("rule without a chain"))?)?;
        for s in super::rule::log_statements(t[4].unwrap_or(&[]))? {
            out.push((chain.to_string(), s));
        }
    }
    Ok(out)
}
