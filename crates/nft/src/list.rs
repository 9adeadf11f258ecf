//! Reading a table back over netlink: the same [`KernelTable`] that [`KernelTable::parse`]
//! makes of `nft -j list table`, without the tool, its JSON, or its memory.
//!
//! Requests: the table (existence, and how many chains and sets it holds), its sets and each
//! named set's elements, its chains, and their rules (only each chain's count and last
//! comment are kept). The ruleset generation is read before and after; when it moved (or a
//! dump was interrupted) the listing is read again, so the result is one consistent state.
//!
//! Scale: the kernel resumes a dump by walking its list again from the start for every
//! 32 KiB reply, so dumping a big table's chains or rules costs time quadratic in their
//! number (100k Services: 140 s for the rules). Above [`PER_CHAIN_RULES`] chains, rules are
//! read with one dump per chain (found by name: linear), and with a model of the table
//! ([`crate::NetlinkBackend::list_table_like`]) chains are always looked up by name too,
//! checked complete against the table's object count (the chain dump has no table filter: it
//! walks every chain of the family, whatever table is asked for).
//!
//! Elements are decoded by the set's key type (`NFTA_SET_KEY_TYPE`, concatenations as 6-bit
//! datatype ids, first part highest) and interval sets are put back into prefixes and single
//! values the way `nft` presents them. What `nft -j` would show in a form the model has no
//! value for (ranges, catch-all elements, object maps, other datatypes) is an error, as it is
//! for the JSON parser.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::expr::Verdict;
use crate::kernel::{chain_hash_of, hash_of_comment, KernelChain, KernelSet, KernelTable};
use crate::model::{
    BaseChain, ChainType, DataType, Element, Family, Hook, Key, L4Proto, MapValue, Policy, Table,
    Value,
};
use crate::nl::{
    attr_table, be32, be64, cstr, listing, put_msg, udata, AttrIter, Attrs, Msgs, NlSocket,
    NFNL_SUBSYS_NFTABLES, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use crate::NftError;

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_GETGEN: u16 = 16;

const NFT_CHAIN_BINDING: u32 = 0x4;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_OBJECT: u32 = 0x40;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_SET_ELEM_CATCHALL: u32 = 0x2;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// Bits per datatype id in a concatenated type.
const TYPE_BITS: u32 = 6;

// nftnl user data TLV types.
const UDATA_RULE_COMMENT: u8 = 0;
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_SET_ELEM_COMMENT: u8 = 0;

const ENOENT: i32 = 2;
const ENOBUFS: i32 = 105;
/// Reads of a table that keeps changing before giving up.
const ATTEMPTS: usize = 8;
/// Chains above which rules are read one chain at a time: the kernel's table-wide rule dump
/// walks again from the table's first rule for every 32 KiB reply (quadratic: 140 s for the
/// 700k rules of 100k Services), a chain's own dump starts at the chain (4.7 s).
const PER_CHAIN_RULES: usize = 20_000;

/// How a request ended.
enum Reply {
    Done,
    Errno(i32),
    /// The dump saw the ruleset change under it.
    Interrupted,
}

/// Why one read of the table did not produce a result.
enum Miss {
    /// The ruleset changed while reading: read again.
    Changed,
    Fatal(NftError),
}

impl From<NftError> for Miss {
    fn from(e: NftError) -> Self {
        Miss::Fatal(e)
    }
}

/// The nfnetlink family code of `f`.
pub(crate) fn family_code(f: Family) -> u8 {
    match f {
        Family::Inet => 1,
        Family::Ip => 2,
        Family::Ip6 => 10,
    }
}

/// Reads table `family name`; `Ok(None)` when it does not exist.
pub(crate) fn list_table(
    sock: &mut NlSocket,
    seq: &mut u32,
    family: Family,
    name: &str,
    hint: Option<&Table>,
    chain_dumps: &mut usize,
) -> Result<Option<KernelTable>, NftError> {
    for _ in 0..ATTEMPTS {
        let before = gen_id(sock, seq)?;
        let read = read_table(sock, seq, family, name, hint, chain_dumps);
        let after = gen_id(sock, seq)?;
        match read {
            Err(Miss::Changed) => continue,
            _ if before != after => continue,
            Ok(t) => return Ok(t),
            Err(Miss::Fatal(e)) => return Err(e),
        }
    }
    Err(listing(format!(
        "table {} {name}: the ruleset kept changing while being read ({ATTEMPTS} attempts)",
        family.as_str()
    )))
}

fn request(
    sock: &mut NlSocket,
    seq: &mut u32,
    ty: u16,
    flags: u16,
    family: u8,
    attrs: &Attrs,
) -> Result<u32, NftError> {
    let s = *seq;
    *seq = seq.wrapping_add(1);
    let mut buf = Vec::with_capacity(64 + attrs.len());
    put_msg(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | ty,
        NLM_F_REQUEST | flags,
        s,
        family,
        0,
        &attrs.buf,
    );
    sock.send(&buf)?;
    Ok(s)
}

/// Reads the replies to request `seq` until its end, handing each nf_tables message (family,
/// attributes) to `f`. A failing `f` does not stop the reading: the dump is drained so the
/// socket stays usable, then the first error is returned.
fn replies(
    sock: &mut NlSocket,
    seq: u32,
    dump: bool,
    mut f: impl FnMut(u8, &[u8]) -> Result<(), NftError>,
) -> Result<Reply, NftError> {
    let mut failed: Option<NftError> = None;
    let mut interrupted = false;
    loop {
        let data = match sock.recv(false) {
            Ok(d) => d,
            Err(source) => {
                let e = NftError::Netlink {
                    what: "netlink receive".into(),
                    source,
                };
                sock.reopen()?;
                return Err(e);
            }
        };
        let mut end = None;
        let mut garbled = None;
        for m in Msgs(data) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    garbled = Some(e);
                    break;
                }
            };
            if m.seq != seq {
                continue; // a late reply to an earlier request
            }
            if m.ty == NLMSG_ERROR || m.ty == NLMSG_DONE {
                let errno = match m.errno() {
                    Ok(e) => e,
                    Err(e) => {
                        failed.get_or_insert(e);
                        0
                    }
                };
                end = Some(if errno != 0 {
                    Reply::Errno(errno)
                } else if interrupted {
                    Reply::Interrupted
                } else {
                    Reply::Done
                });
                break;
            }
            if m.flags & NLM_F_DUMP_INTR != 0 {
                interrupted = true;
            }
            if failed.is_none() {
                if let Err(e) = m.nft().and_then(|(fam, attrs)| f(fam, attrs)) {
                    failed = Some(e);
                }
            }
            if !dump {
                end = Some(Reply::Done);
                break;
            }
        }
        if let Some(e) = garbled {
            // Where the rest of the answer is cannot be known: a fresh socket for what follows.
            sock.reopen()?;
            return Err(e);
        }
        if let Some(r) = end {
            return match failed {
                Some(e) => Err(e),
                None => Ok(r),
            };
        }
    }
}

/// The ruleset generation id.
fn gen_id(sock: &mut NlSocket, seq: &mut u32) -> Result<u32, NftError> {
    let s = request(sock, seq, NFT_MSG_GETGEN, 0, 0, &Attrs::default())?;
    let mut id = None;
    let r = replies(sock, s, false, |_, attrs| {
        let t = attr_table::<2>(attrs)?;
        id = t[1].map(be32).transpose()?; // NFTA_GEN_ID
        Ok(())
    })?;
    match (r, id) {
        (Reply::Done, Some(id)) => Ok(id),
        (Reply::Errno(e), _) => Err(kernel_err("read the ruleset generation", e)),
        _ => Err(listing("no generation id in the kernel's answer")),
    }
}

fn kernel_err(what: &str, errno: i32) -> NftError {
    NftError::Netlink {
        what: what.to_string(),
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// Runs a dump and maps its end: an interrupted dump or a vanished object means "read again"
/// (the generation check decides whether that was a change or a real error).
fn dump(
    sock: &mut NlSocket,
    seq: &mut u32,
    ty: u16,
    family: u8,
    attrs: &Attrs,
    what: &str,
    f: impl FnMut(u8, &[u8]) -> Result<(), NftError>,
) -> Result<(), Miss> {
    let s = request(sock, seq, ty, NLM_F_DUMP, family, attrs)?;
    match replies(sock, s, true, f)? {
        Reply::Done => Ok(()),
        Reply::Interrupted => Err(Miss::Changed),
        Reply::Errno(ENOENT) => Err(Miss::Changed),
        Reply::Errno(e) => Err(Miss::Fatal(kernel_err(what, e))),
    }
}

/// A named set's declaration, as needed to decode its elements.
struct SetDecl {
    name: String,
    interval: bool,
    key: Vec<DataType>,
    /// `None`: plain set; `Some(None)`: verdict map; `Some(Some(types))`: data map.
    data: Option<Option<Vec<DataType>>>,
    decl_hash: Option<u64>,
}

fn read_table(
    sock: &mut NlSocket,
    seq: &mut u32,
    family: Family,
    name: &str,
    hint: Option<&Table>,
    chain_dumps: &mut usize,
) -> Result<Option<KernelTable>, Miss> {
    let fam = family_code(family);
    let attrs = table_attr(name);
    let s = request(sock, seq, NFT_MSG_GETTABLE, 0, fam, &attrs)?;
    let mut table_use = None;
    let r = replies(sock, s, false, |_, a| {
        table_use = attr_table::<4>(a)?[3].map(be32).transpose()?; // NFTA_TABLE_USE
        Ok(())
    })?;
    match r {
        Reply::Done => {}
        Reply::Errno(ENOENT) => return Ok(None),
        Reply::Errno(e) => return Err(Miss::Fatal(kernel_err("get table", e))),
        Reply::Interrupted => return Err(Miss::Changed),
    }

    // Sets (anonymous ones belong to rules and are not listed), with their elements.
    let mut decls: Vec<SetDecl> = Vec::new();
    dump(
        sock,
        seq,
        NFT_MSG_GETSET,
        fam,
        &attrs,
        "dump sets",
        |f, attrs| {
            let t = attr_table::<14>(attrs)?;
            if !ours(fam, name, f, t[1])? {
                return Ok(());
            }
            if let Some(d) = parse_set_decl(&t)? {
                decls.push(d);
            }
            Ok(())
        },
    )?;
    let mut sets = BTreeMap::new();
    for d in &decls {
        sets.insert(d.name.clone(), set_elements(sock, seq, fam, name, d)?);
    }

    // Chains, with the count of their rules and the hash in the last one's comment.
    let mut chains = None;
    if let (Some(hint), Some(table_use)) = (hint, table_use) {
        // The table holds chains and named sets (and objects, flowtables): once that many are
        // found, nothing is missing. Always by name when there is a model: the kernel's chain
        // dump has no table filter, so it walks every chain of the family — with a ruleset
        // sharded over several tables, one dump per table is quadratic in the whole ruleset.
        let expected = (table_use as usize).checked_sub(decls.len());
        chains = match expected {
            Some(n) => chains_by_name(sock, seq, fam, name, hint, &sets, n)?,
            None => None,
        };
    }
    let mut chains = match chains {
        Some(c) => c,
        None => {
            *chain_dumps += 1;
            all_chains(sock, seq, fam, name)?
        }
    };
    for c in chains.values_mut() {
        if c.rule_count == 0 {
            c.hash = chain_hash_of(0, None);
        }
    }
    Ok(Some(KernelTable {
        family,
        name: name.to_string(),
        chains,
        sets,
    }))
}

/// Every chain of the table, from the kernel's dump of the family's chains (it walks again
/// from the first chain for every 32 KiB reply: seconds at 300k chains).
fn all_chains(
    sock: &mut NlSocket,
    seq: &mut u32,
    fam: u8,
    name: &str,
) -> Result<BTreeMap<String, KernelChain>, Miss> {
    // Binding chains (anonymous, inside a rule) are not listed by nft either.
    let mut chains: BTreeMap<String, KernelChain> = BTreeMap::new();
    let mut bound: BTreeSet<String> = BTreeSet::new();
    let attrs = table_attr(name);
    dump(
        sock,
        seq,
        NFT_MSG_GETCHAIN,
        fam,
        &attrs,
        "dump chains",
        |f, attrs| {
            let t = attr_table::<11>(attrs)?;
            if !ours(fam, name, f, t[1])? {
                return Ok(());
            }
            match parse_chain(&t)? {
                (cname, Some(chain)) => chains.insert(cname, chain),
                (cname, None) => {
                    bound.insert(cname);
                    None
                }
            };
            Ok(())
        },
    )?;
    if chains.len() > PER_CHAIN_RULES {
        let names: Vec<&str> = chains.keys().map(String::as_str).collect();
        let counts = chain_rules(sock, seq, fam, name, &names, None)?;
        for (c, (count, hash)) in chains.values_mut().zip(counts) {
            c.rule_count = count;
            c.hash = hash;
        }
    } else {
        dump(
            sock,
            seq,
            NFT_MSG_GETRULE,
            fam,
            &attrs,
            "dump rules",
            |f, attrs| {
                let t = attr_table::<8>(attrs)?;
                if !ours(fam, name, f, t[1])? {
                    return Ok(());
                }
                let cname = cstr(t[2].ok_or_else(|| listing("rule without a chain"))?)?;
                if bound.contains(cname) {
                    return Ok(());
                }
                let c = chains
                    .get_mut(cname)
                    .ok_or_else(|| listing(format!("rule of unlisted chain {cname}")))?;
                c.rule_count += 1;
                c.hash = rule_hash(t[7])?;
                Ok(())
            },
        )?;
    }
    Ok(chains)
}

/// The chains of the table found by name, without the family-wide chain dump: the names
/// `hint` has, those verdicts in map elements and in the rules read refer to. `None` unless
/// `expected` chains were found (then the table holds others: objects, binding chains, chains
/// nothing names) — the caller then reads them all.
fn chains_by_name(
    sock: &mut NlSocket,
    seq: &mut u32,
    fam: u8,
    name: &str,
    hint: &Table,
    sets: &BTreeMap<String, KernelSet>,
    expected: usize,
) -> Result<Option<BTreeMap<String, KernelChain>>, Miss> {
    let mut tried: BTreeSet<String> = hint.chains.keys().cloned().collect();
    for s in sets.values() {
        for e in s.elements.values() {
            if let Some(MapValue::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) = &e.value {
                tried.insert(c.clone());
            }
        }
    }
    let mut pending: Vec<String> = tried.iter().cloned().collect();
    let mut chains = BTreeMap::new();
    while !pending.is_empty() {
        let Some(found) = get_chains(sock, seq, fam, name, &pending)? else {
            return Ok(None);
        };
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        let mut targets = BTreeSet::new();
        let counts = chain_rules(sock, seq, fam, name, &names, Some(&mut targets))?;
        for ((cname, mut c), (count, hash)) in found.into_iter().zip(counts) {
            c.rule_count = count;
            c.hash = hash;
            chains.insert(cname, c);
        }
        pending = targets.into_iter().filter(|t| !tried.contains(t)).collect();
        tried.extend(pending.iter().cloned());
    }
    Ok((chains.len() == expected).then_some(chains))
}

/// Looks chains up by name, many requests per send (the answers are queued at once, so a
/// window is what the receive buffer holds). Missing and binding chains are left out; `None`
/// when answers were lost.
fn get_chains(
    sock: &mut NlSocket,
    seq: &mut u32,
    fam: u8,
    table: &str,
    names: &[String],
) -> Result<Option<Vec<(String, KernelChain)>>, Miss> {
    // An answer takes a page-sized buffer in the receive queue.
    let window = (sock.rcvbuf() / 8192).clamp(1, 1024);
    let mut out = Vec::with_capacity(names.len());
    let mut buf = Vec::new();
    for chunk in names.chunks(window) {
        let first = *seq;
        buf.clear();
        for n in chunk {
            let mut a = table_attr(table);
            a.str(3, n); // NFTA_CHAIN_NAME
            put_msg(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN,
                NLM_F_REQUEST,
                *seq,
                fam,
                0,
                &a.buf,
            );
            *seq = seq.wrapping_add(1);
        }
        sock.send(&buf)?;
        let mut left = chunk.len();
        while left > 0 {
            let data = match sock.recv(false) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    // Answers were dropped: start over on a clean socket, the slow way.
                    sock.reopen()?;
                    return Ok(None);
                }
                Err(source) => {
                    sock.reopen()?;
                    return Err(Miss::Fatal(NftError::Netlink {
                        what: "netlink receive".into(),
                        source,
                    }));
                }
            };
            for m in Msgs(data) {
                let m = m?;
                if m.seq.wrapping_sub(first) >= chunk.len() as u32 {
                    continue;
                }
                left -= 1;
                match m.ty {
                    NLMSG_ERROR => match m.errno()? {
                        0 | ENOENT => {}
                        e => return Err(Miss::Fatal(kernel_err("get chain", e))),
                    },
                    NLMSG_DONE => {}
                    _ => {
                        let (f, attrs) = m.nft()?;
                        let t = attr_table::<11>(attrs)?;
                        if ours(fam, table, f, t[1])? {
                            if let (cname, Some(chain)) = parse_chain(&t)? {
                                out.push((cname, chain));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Some(out))
}

/// A chain message: its name, and the chain unless it is a binding chain.
fn parse_chain(t: &[Option<&[u8]>; 11]) -> Result<(String, Option<KernelChain>), NftError> {
    let cname = cstr(t[3].ok_or_else(|| listing("chain without a name"))?)?.to_string();
    let flags = t[10].map(be32).transpose()?.unwrap_or(0);
    if flags & NFT_CHAIN_BINDING != 0 {
        return Ok((cname, None));
    }
    let base = parse_base(&cname, t[4], t[5], t[7])?;
    Ok((
        cname,
        Some(KernelChain {
            base,
            hash: None,
            rule_count: 0,
        }),
    ))
}

fn table_attr(name: &str) -> Attrs {
    let mut a = Attrs::default();
    a.str(1, name); // NFTA_TABLE_NAME / NFTA_{CHAIN,RULE,SET,SET_ELEM_LIST}_TABLE
    a
}

/// Is a message of family `f` about table `table` the one being read?
fn ours(fam: u8, name: &str, f: u8, table: Option<&[u8]>) -> Result<bool, NftError> {
    Ok(f == fam && table.map(cstr).transpose()? == Some(name))
}

/// The content hash in a rule's comment (user data), if any.
fn rule_hash(udata_attr: Option<&[u8]>) -> Result<Option<u64>, NftError> {
    let Some(u) = udata_attr else { return Ok(None) };
    Ok(udata(u, UDATA_RULE_COMMENT)?
        .map(cstr)
        .transpose()?
        .and_then(hash_of_comment))
}

/// Rule count and last-rule hash of each chain in `names`, one dump per chain; the chains
/// their verdicts jump or go to are added to `targets`.
fn chain_rules(
    sock: &mut NlSocket,
    seq: &mut u32,
    fam: u8,
    table: &str,
    names: &[&str],
    mut targets: Option<&mut BTreeSet<String>>,
) -> Result<Vec<(usize, Option<u64>)>, Miss> {
    let mut out = Vec::with_capacity(names.len());
    for cname in names {
        let mut a = table_attr(table);
        a.str(2, cname); // NFTA_RULE_CHAIN
        let (mut count, mut hash) = (0, None);
        dump(
            sock,
            seq,
            NFT_MSG_GETRULE,
            fam,
            &a,
            "dump rules",
            |f, attrs| {
                let t = attr_table::<8>(attrs)?;
                if ours(fam, table, f, t[1])? && t[2].map(cstr).transpose()? == Some(*cname) {
                    count += 1;
                    hash = rule_hash(t[7])?;
                    if let (Some(targets), Some(exprs)) = (targets.as_deref_mut(), t[4]) {
                        verdict_targets(exprs, targets)?;
                    }
                }
                Ok(())
            },
        )?;
        out.push((count, hash));
    }
    Ok(out)
}

/// The chains `immediate` verdicts in a rule's expressions jump or go to.
fn verdict_targets(exprs: &[u8], out: &mut BTreeSet<String>) -> Result<(), NftError> {
    for e in AttrIter(exprs) {
        let e = attr_table::<3>(e?.1)?;
        if e[1].map(cstr).transpose()? != Some("immediate") {
            continue;
        }
        let Some(data) = e[2] else { continue };
        let imm = attr_table::<3>(data)?;
        if imm[1].map(be32).transpose()? != Some(0) {
            continue; // a data register, not the verdict
        }
        let Some(d) = imm[2] else { continue };
        let Some(v) = attr_table::<3>(d)?[2] else {
            continue;
        };
        if let Some(c) = attr_table::<3>(v)?[2] {
            out.insert(cstr(c)?.to_string());
        }
    }
    Ok(())
}

/// A named set's elements.
fn set_elements(
    sock: &mut NlSocket,
    seq: &mut u32,
    fam: u8,
    table: &str,
    d: &SetDecl,
) -> Result<KernelSet, Miss> {
    let mut a = table_attr(table);
    a.str(2, &d.name); // NFTA_SET_ELEM_LIST_SET
    let mut raw: Vec<RawElem> = Vec::new();
    let mut elements = BTreeMap::new();
    dump(
        sock,
        seq,
        NFT_MSG_GETSETELEM,
        fam,
        &a,
        "dump set elements",
        |f, attrs| {
            let t = attr_table::<4>(attrs)?;
            if !ours(fam, table, f, t[1])? {
                return Ok(());
            }
            let Some(list) = t[3] else { return Ok(()) };
            for item in AttrIter(list) {
                let (_, elem) = item?;
                let r = parse_elem(d, elem)?;
                if d.interval || r.key_end.is_some() {
                    raw.push(r);
                } else {
                    let key = decode_key(&d.name, &d.key, &r.key)?;
                    elements.insert(key, r.element);
                }
            }
            Ok(())
        },
    )?;
    if !raw.is_empty() {
        intervals(d, raw, &mut elements)?;
    }
    Ok(KernelSet {
        decl_hash: d.decl_hash,
        elements,
    })
}

fn parse_base(
    chain: &str,
    hook: Option<&[u8]>,
    policy: Option<&[u8]>,
    kind: Option<&[u8]>,
) -> Result<Option<BaseChain>, NftError> {
    let Some(hook) = hook else { return Ok(None) };
    let h = attr_table::<3>(hook)?;
    let num = be32(h[1].ok_or_else(|| listing(format!("chain {chain}: hook number")))?)?;
    let priority = be32(h[2].ok_or_else(|| listing(format!("chain {chain}: priority")))?)? as i32;
    let hook = match num {
        0 => Hook::Prerouting,
        1 => Hook::Input,
        2 => Hook::Forward,
        3 => Hook::Output,
        4 => Hook::Postrouting,
        n => return Err(listing(format!("chain {chain}: unknown hook {n}"))),
    };
    let kind = match kind.map(cstr).transpose()? {
        Some("filter") => ChainType::Filter,
        Some("nat") => ChainType::Nat,
        Some("route") => ChainType::Route,
        other => {
            return Err(listing(format!(
                "chain {chain}: unknown chain type {other:?}"
            )))
        }
    };
    // NF_DROP = 0; the kernel allows only accept and drop.
    let policy = match policy.map(be32).transpose()? {
        Some(0) => Policy::Drop,
        _ => Policy::Accept,
    };
    Ok(Some(BaseChain {
        kind,
        hook,
        priority,
        policy,
    }))
}

fn datatype(id: u32) -> Option<DataType> {
    Some(match id {
        7 => DataType::Ipv4Addr,
        8 => DataType::Ipv6Addr,
        12 => DataType::InetProto,
        13 => DataType::InetService,
        19 => DataType::Mark,
        41 => DataType::Ifname,
        _ => return None,
    })
}

/// Splits a (possibly concatenated) datatype id into its parts, first part first.
fn datatypes(set: &str, id: u32) -> Result<Vec<DataType>, NftError> {
    let mask = (1 << TYPE_BITS) - 1;
    let mut parts = Vec::new();
    let mut rest = id;
    while rest != 0 {
        parts.push(rest & mask);
        rest >>= TYPE_BITS;
    }
    parts.reverse();
    if parts.is_empty() {
        return Err(listing(format!("set {set}: no key type")));
    }
    parts
        .into_iter()
        .map(|p| {
            datatype(p).ok_or_else(|| listing(format!("set {set}: datatype {p} (type id {id})")))
        })
        .collect()
}

fn size_of(t: DataType) -> usize {
    match t {
        DataType::Ipv4Addr | DataType::Mark => 4,
        DataType::Ipv6Addr | DataType::Ifname => 16,
        DataType::InetProto => 1,
        DataType::InetService => 2,
    }
}

fn parse_set_decl(t: &[Option<&[u8]>; 14]) -> Result<Option<SetDecl>, NftError> {
    let name = cstr(t[2].ok_or_else(|| listing("set without a name"))?)?.to_string();
    let flags = t[3].map(be32).transpose()?.unwrap_or(0);
    if flags & NFT_SET_ANONYMOUS != 0 {
        return Ok(None);
    }
    if flags & NFT_SET_OBJECT != 0 {
        return Err(listing(format!(
            "set {name}: object maps are not supported"
        )));
    }
    let key_type = be32(t[4].ok_or_else(|| listing(format!("set {name}: key type")))?)?;
    let key = datatypes(&name, key_type)?;
    let data = if flags & NFT_SET_MAP != 0 {
        let dt = be32(t[6].ok_or_else(|| listing(format!("map {name}: data type")))?)?;
        Some(if dt == NFT_DATA_VERDICT {
            None
        } else {
            Some(datatypes(&name, dt)?)
        })
    } else {
        None
    };
    let comment = match t[13] {
        Some(u) => udata(u, UDATA_SET_COMMENT)?.map(cstr).transpose()?,
        None => None,
    };
    Ok(Some(SetDecl {
        interval: flags & NFT_SET_INTERVAL != 0,
        decl_hash: comment.and_then(hash_of_comment),
        name,
        key,
        data,
    }))
}

/// One element as the kernel holds it.
struct RawElem {
    key: Vec<u8>,
    /// Inclusive end of a range element (concatenated interval sets).
    key_end: Option<Vec<u8>>,
    /// An interval end marker (rbtree interval sets).
    end: bool,
    element: Element,
}

fn data_value(b: &[u8]) -> Result<&[u8], NftError> {
    let t = attr_table::<2>(b)?;
    t[1].ok_or_else(|| listing("data without a value"))
}

fn parse_elem(d: &SetDecl, b: &[u8]) -> Result<RawElem, NftError> {
    let t = attr_table::<12>(b)?;
    let set = &d.name;
    let flags = t[3].map(be32).transpose()?.unwrap_or(0);
    if flags & NFT_SET_ELEM_CATCHALL != 0 {
        return Err(listing(format!("set {set}: catch-all element")));
    }
    let end = flags & NFT_SET_ELEM_INTERVAL_END != 0;
    let key = data_value(t[1].ok_or_else(|| listing(format!("set {set}: element key")))?)?;
    let key_end = t[10].map(data_value).transpose()?.map(<[u8]>::to_vec);
    // End markers of interval maps carry no value.
    let value = match (&d.data, t[2]) {
        _ if end => None,
        (None, _) => None,
        (Some(_), None) => {
            return Err(listing(format!("map {set}: element without a value")));
        }
        (Some(None), Some(v)) => Some(MapValue::Verdict(parse_verdict(set, v)?)),
        (Some(Some(types)), Some(v)) => {
            Some(MapValue::Data(decode_key(set, types, data_value(v)?)?))
        }
    };
    // Like `nft`, which prints the timeout in seconds when the kernel reports one.
    let timeout = match t[4].map(be64).transpose()? {
        Some(ms) if ms != 0 => Some(
            u32::try_from(ms / 1000)
                .map_err(|_| listing(format!("set {set}: element timeout {ms} ms")))?,
        ),
        _ => None,
    };
    let comment = match t[6] {
        Some(u) => udata(u, UDATA_SET_ELEM_COMMENT)?
            .map(cstr)
            .transpose()?
            .map(str::to_string),
        None => None,
    };
    Ok(RawElem {
        key: key.to_vec(),
        key_end,
        end,
        element: Element {
            value,
            timeout,
            comment,
        },
    })
}

fn parse_verdict(set: &str, b: &[u8]) -> Result<Verdict, NftError> {
    let d = attr_table::<3>(b)?;
    let v = attr_table::<3>(d[2].ok_or_else(|| listing(format!("map {set}: verdict")))?)?;
    let code = be32(v[1].ok_or_else(|| listing(format!("map {set}: verdict code")))?)? as i32;
    let chain = || -> Result<String, NftError> {
        Ok(cstr(v[2].ok_or_else(|| listing(format!("map {set}: verdict chain")))?)?.to_string())
    };
    Ok(match code {
        1 => Verdict::Accept,
        0 => Verdict::Drop,
        -1 => Verdict::Continue,
        -5 => Verdict::Return,
        -3 => Verdict::Jump(chain()?),
        -4 => Verdict::Goto(chain()?),
        c => return Err(listing(format!("map {set}: verdict code {c}"))),
    })
}

/// The byte ranges of each part of a key of `types` (concatenations pad parts to 4 bytes).
fn parts(set: &str, types: &[DataType], len: usize) -> Result<Vec<(usize, usize)>, NftError> {
    let mut out = Vec::with_capacity(types.len());
    let mut off = 0;
    for t in types {
        let n = size_of(*t);
        out.push((off, n));
        off += if types.len() > 1 {
            n.div_ceil(4) * 4
        } else {
            n
        };
    }
    if off != len {
        return Err(listing(format!(
            "set {set}: key of {len} bytes does not match {types:?}"
        )));
    }
    Ok(out)
}

fn decode_key(set: &str, types: &[DataType], b: &[u8]) -> Result<Key, NftError> {
    parts(set, types, b.len())?
        .into_iter()
        .zip(types)
        .map(|((off, n), t)| decode_value(set, *t, &b[off..off + n]))
        .collect::<Result<Vec<_>, _>>()
        .map(Key)
}

fn decode_value(set: &str, t: DataType, b: &[u8]) -> Result<Value, NftError> {
    let bad = || listing(format!("set {set}: value {b:02x?} of type {}", t.as_str()));
    Ok(match t {
        DataType::Ipv4Addr => Value::Addr(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(b).map_err(|_| bad())?,
        ))),
        DataType::Ipv6Addr => Value::Addr(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(b).map_err(|_| bad())?,
        ))),
        DataType::InetProto => Value::Proto(L4Proto::from_number(u64::from(b[0])).ok_or_else(bad)?),
        DataType::InetService => Value::Port(u16::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        // The mark type is in host byte order.
        DataType::Mark => Value::Mark(u32::from_ne_bytes(b.try_into().map_err(|_| bad())?)),
        DataType::Ifname => Value::Ifname(cstr(b).map_err(|_| bad())?.to_string()),
    })
}

/// A big-endian key part as a number (at most 16 bytes: IPv6).
fn number(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |n, x| (n << 8) | u128::from(*x))
}

fn from_number(n: u128, len: usize) -> Vec<u8> {
    n.to_be_bytes()[16 - len..].to_vec()
}

/// One part of an interval element, `lo..=hi`, as `nft` shows it: a single value, or a prefix
/// for addresses; anything else (a range) has no value in the model.
fn range_value(set: &str, t: DataType, lo: &[u8], hi: &[u8]) -> Result<Value, NftError> {
    if lo == hi {
        return decode_value(set, t, lo);
    }
    let bits = (lo.len() * 8) as u32;
    let (a, b) = (number(lo), number(hi));
    let span = b.wrapping_sub(a);
    let is_prefix = b > a && (span & span.wrapping_add(1)) == 0 && a & span == 0;
    match (t, is_prefix) {
        (DataType::Ipv4Addr | DataType::Ipv6Addr, true) => {
            let host_bits = 128 - span.leading_zeros();
            let len = (bits - host_bits) as u8;
            let Value::Addr(addr) = decode_value(set, t, lo)? else {
                return Err(listing(format!("set {set}: prefix of {}", t.as_str())));
            };
            Ok(Value::Prefix(ipnet::IpNet::new(addr, len).map_err(
                |_| listing(format!("set {set}: prefix {addr}/{len}")),
            )?))
        }
        _ => Err(listing(format!(
            "set {set}: range {lo:02x?}-{hi:02x?} of type {} (not a prefix or single value)",
            t.as_str()
        ))),
    }
}

/// Turns an interval set's elements back into keys: ranges with an inclusive end
/// (concatenations), or start / end markers (one type) paired in key order as `nft` does: an
/// end closes the open start, a start while one is open closes it just below, an end with no
/// open start (the leading zero one nft adds) is dropped, an open start at the end reaches
/// the maximum.
fn intervals(
    d: &SetDecl,
    raw: Vec<RawElem>,
    out: &mut BTreeMap<Key, Element>,
) -> Result<(), NftError> {
    let set = d.name.as_str();
    let mut markers = Vec::new();
    for r in raw {
        match &r.key_end {
            Some(hi) => {
                let lo = parts(set, &d.key, r.key.len())?;
                let hi_parts = parts(set, &d.key, hi.len())?;
                let key = lo
                    .iter()
                    .zip(&hi_parts)
                    .zip(&d.key)
                    .map(|(((lo_off, n), (hi_off, _)), t)| {
                        range_value(
                            set,
                            *t,
                            &r.key[*lo_off..lo_off + n],
                            &hi[*hi_off..hi_off + n],
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(Key(key), r.element);
            }
            None => markers.push(r),
        }
    }
    if markers.is_empty() {
        return Ok(());
    }
    let [t] = d.key[..] else {
        return Err(listing(format!(
            "set {set}: interval markers in a concatenated set"
        )));
    };
    if matches!(t, DataType::Mark | DataType::Ifname) {
        return Err(listing(format!(
            "set {set}: intervals of type {} are not supported",
            t.as_str()
        )));
    }
    let len = size_of(t);
    if let Some(r) = markers.iter().find(|r| r.key.len() != len) {
        return Err(listing(format!(
            "set {set}: key of {} bytes for type {}",
            r.key.len(),
            t.as_str()
        )));
    }
    // Ends before starts at the same key: one range ends where the next begins.
    markers.sort_by(|a, b| number(&a.key).cmp(&number(&b.key)).then(b.end.cmp(&a.end)));
    let max = if len == 16 {
        u128::MAX
    } else {
        (1u128 << (len * 8)) - 1
    };
    let mut open: Option<(u128, Element)> = None;
    let mut emit = |lo: u128, hi: u128, e: Element| -> Result<(), NftError> {
        let v = range_value(set, t, &from_number(lo, len), &from_number(hi, len))?;
        out.insert(Key(vec![v]), e);
        Ok(())
    };
    for r in markers {
        let k = number(&r.key);
        if let Some((lo, e)) = open.take() {
            // Both an end marker and a new start close the open range just below.
            if k <= lo {
                return Err(listing(format!("set {set}: empty interval")));
            }
            emit(lo, k - 1, e)?;
        }
        if !r.end {
            open = Some((k, r.element));
        }
    }
    if let Some((lo, e)) = open {
        emit(lo, max, e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_type_ids_split_first_part_first() {
        let id = (7 << 12) | (12 << 6) | 13;
        assert_eq!(
            datatypes("m", id).unwrap(),
            [
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService
            ]
        );
        assert_eq!(datatypes("s", 8).unwrap(), [DataType::Ipv6Addr]);
        assert!(datatypes("s", 9).is_err(), "ether_addr has no model type");
    }

    #[test]
    fn ranges_become_prefixes_or_single_values() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap().octets();
        assert_eq!(
            range_value(
                "s",
                DataType::Ipv4Addr,
                &v4("10.0.0.0"),
                &v4("10.0.255.255")
            )
            .unwrap(),
            Value::Prefix("10.0.0.0/16".parse().unwrap())
        );
        assert_eq!(
            range_value(
                "s",
                DataType::Ipv4Addr,
                &v4("0.0.0.0"),
                &v4("255.255.255.255")
            )
            .unwrap(),
            Value::Prefix("0.0.0.0/0".parse().unwrap())
        );
        assert_eq!(
            range_value("s", DataType::Ipv4Addr, &v4("10.0.0.1"), &v4("10.0.0.1")).unwrap(),
            Value::Addr("10.0.0.1".parse().unwrap())
        );
        assert!(range_value("s", DataType::Ipv4Addr, &v4("10.0.0.1"), &v4("10.0.0.2")).is_err());
        assert!(range_value("s", DataType::InetService, &[0, 0], &[0, 255]).is_err());
    }

    fn marker(key: [u8; 4], end: bool) -> RawElem {
        RawElem {
            key: key.to_vec(),
            key_end: None,
            end,
            element: Element::default(),
        }
    }

    #[test]
    fn interval_markers_pair_like_nft() {
        let d = SetDecl {
            name: "s".into(),
            interval: true,
            key: vec![DataType::Ipv4Addr],
            data: None,
            decl_hash: None,
        };
        // As the kernel dumps them (descending), with nft's leading zero end marker, two
        // adjacent /24s, a single address and an open range up to the maximum.
        let raw = vec![
            marker([255, 0, 0, 0], false),
            marker([10, 9, 0, 2], true),
            marker([10, 9, 0, 1], false),
            marker([10, 0, 2, 0], true),
            marker([10, 0, 1, 0], false),
            marker([10, 0, 1, 0], true),
            marker([10, 0, 0, 0], false),
            marker([0, 0, 0, 0], true),
        ];
        let mut out = BTreeMap::new();
        intervals(&d, raw, &mut out).unwrap();
        let keys: Vec<Value> = out.into_keys().map(|k| k.0[0].clone()).collect();
        assert_eq!(
            keys,
            [
                Value::Addr("10.9.0.1".parse().unwrap()),
                Value::Prefix("10.0.0.0/24".parse().unwrap()),
                Value::Prefix("10.0.1.0/24".parse().unwrap()),
                Value::Prefix("255.0.0.0/8".parse().unwrap()),
            ]
        );
    }
}
