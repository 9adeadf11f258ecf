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
//! The bytes are decoded by [`crate::wire::table::TableListing`]; this module is the I/O: which
//! requests, in what order, and what to do when the kernel's answers are lost or interrupted.
//! Elements are decoded by the set's key type (`NFTA_SET_KEY_TYPE`, concatenations as 6-bit
//! datatype ids, first part highest) and interval sets are put back into prefixes and single
//! values the way `nft` presents them. What `nft -j` would show in a form the model has no
//! value for (ranges, catch-all elements, object maps, other datatypes) is an error, as it is
//! for the JSON parser.

use std::collections::BTreeSet;

use crate::expr::Verdict;
use crate::kernel::KernelTable;
use crate::model::{Family, MapValue, Table};
use crate::nl::{
    attr_table, be32, cstr, listing, put_msg, Attrs, Msgs, NlSocket, NFNL_SUBSYS_NFTABLES,
    NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use crate::wire::attrs::{
    NFT_MSG_GETCHAIN, NFT_MSG_GETGEN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM,
    NFT_MSG_GETTABLE,
};
use crate::wire::table::{family_code, table_attr, TableListing};
use crate::NftError;

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

/// The names of every table of `family` (one table dump; read again if the ruleset moved).
pub(crate) fn table_names(
    sock: &mut NlSocket,
    seq: &mut u32,
    family: Family,
) -> Result<Vec<String>, NftError> {
    let fam = family_code(family);
    for _ in 0..ATTEMPTS {
        let mut names = Vec::new();
        let read = dump(
            sock,
            seq,
            NFT_MSG_GETTABLE,
            fam,
            &Attrs::default(),
            "dump tables",
            |_, f, a| {
                if f == fam {
                    if let Some(name) = attr_table::<2>(a)?[1] {
                        names.push(cstr(name)?.to_string()); // NFTA_TABLE_NAME
                    }
                }
                Ok(())
            },
        );
        match read {
            Ok(()) => return Ok(names),
            Err(Miss::Changed) => continue,
            Err(Miss::Fatal(e)) => return Err(e),
        }
    }
    Err(listing(format!(
        "tables of family {}: the ruleset kept changing while being read",
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
    mut f: impl FnMut(u16, u8, &[u8]) -> Result<(), NftError>,
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
                if let Err(e) = m.nft().and_then(|(fam, attrs)| f(m.ty & 0xff, fam, attrs)) {
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
    let r = replies(sock, s, false, |_, _, attrs| {
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
    f: impl FnMut(u16, u8, &[u8]) -> Result<(), NftError>,
) -> Result<(), Miss> {
    let s = request(sock, seq, ty, NLM_F_DUMP, family, attrs)?;
    match replies(sock, s, true, f)? {
        Reply::Done => Ok(()),
        Reply::Interrupted => Err(Miss::Changed),
        Reply::Errno(ENOENT) => Err(Miss::Changed),
        Reply::Errno(e) => Err(Miss::Fatal(kernel_err(what, e))),
    }
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
    let mut l = TableListing::new(family, name);
    let attrs = table_attr(name);
    let s = request(sock, seq, NFT_MSG_GETTABLE, 0, fam, &attrs)?;
    let r = replies(sock, s, false, |ty, f, a| l.message(ty, f, a))?;
    match r {
        Reply::Done => {}
        Reply::Errno(ENOENT) => return Ok(None),
        Reply::Errno(e) => return Err(Miss::Fatal(kernel_err("get table", e))),
        Reply::Interrupted => return Err(Miss::Changed),
    }

    // Sets (anonymous ones belong to rules and are not listed), with their elements.
    dump(
        sock,
        seq,
        NFT_MSG_GETSET,
        fam,
        &attrs,
        "dump sets",
        |ty, f, a| l.message(ty, f, a),
    )?;
    let names: Vec<String> = l.sets.keys().cloned().collect();
    for set in &names {
        let mut a = table_attr(name);
        a.str(2, set); // NFTA_SET_ELEM_LIST_SET
        dump(
            sock,
            seq,
            NFT_MSG_GETSETELEM,
            fam,
            &a,
            "dump set elements",
            |ty, f, a| l.message(ty, f, a),
        )?;
    }
    l.finish_sets()?;

    // Chains, with the count of their rules and the hash in the last one's comment.
    let mut by_name = false;
    if let (Some(hint), Some(table_use)) = (hint, l.table_use) {
        // The table holds chains and named sets (and objects, flowtables): once that many are
        // found, nothing is missing. Always by name when there is a model: the kernel's chain
        // dump has no table filter, so it walks every chain of the family — with a ruleset
        // sharded over several tables, one dump per table is quadratic in the whole ruleset.
        if let Some(n) = (table_use as usize).checked_sub(l.sets.len()) {
            by_name = chains_by_name(sock, seq, &mut l, hint, n)?;
        }
    }
    if !by_name {
        l.reset_chains();
        *chain_dumps += 1;
        all_chains(sock, seq, &mut l)?;
    }
    Ok(l.finish()?)
}

/// Every chain of the table, from the kernel's dump of the family's chains (it walks again
/// from the first chain for every 32 KiB reply: seconds at 300k chains).
fn all_chains(sock: &mut NlSocket, seq: &mut u32, l: &mut TableListing) -> Result<(), Miss> {
    let (fam, name) = (l.fam(), l.name().to_string());
    let attrs = table_attr(&name);
    dump(
        sock,
        seq,
        NFT_MSG_GETCHAIN,
        fam,
        &attrs,
        "dump chains",
        |ty, f, a| l.message(ty, f, a),
    )?;
    if l.chains.len() > PER_CHAIN_RULES {
        let names: Vec<String> = l.chains.keys().cloned().collect();
        chain_rules(sock, seq, l, &names)?;
    } else {
        dump(
            sock,
            seq,
            NFT_MSG_GETRULE,
            fam,
            &attrs,
            "dump rules",
            |ty, f, a| l.message(ty, f, a),
        )?;
    }
    Ok(())
}

/// The chains of the table found by name, without the family-wide chain dump: the names
/// `hint` has, those verdicts in map elements and in the rules read refer to. False unless
/// `expected` chains were found (then the table holds others: objects, binding chains, chains
/// nothing names) — the caller then reads them all.
fn chains_by_name(
    sock: &mut NlSocket,
    seq: &mut u32,
    l: &mut TableListing,
    hint: &Table,
    expected: usize,
) -> Result<bool, Miss> {
    let mut tried: BTreeSet<String> = hint.chains.keys().cloned().collect();
    for s in l.sets.values() {
        for e in s.elements.values() {
            if let Some(MapValue::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) = &e.value {
                tried.insert(c.clone());
            }
        }
    }
    l.targets = Some(BTreeSet::new());
    let mut pending: Vec<String> = tried.iter().cloned().collect();
    while !pending.is_empty() {
        let before: BTreeSet<String> = l.chains.keys().cloned().collect();
        if !get_chains(sock, seq, l, &pending)? {
            l.targets = None;
            return Ok(false);
        }
        let found: Vec<String> = l
            .chains
            .keys()
            .filter(|c| !before.contains(*c))
            .cloned()
            .collect();
        chain_rules(sock, seq, l, &found)?;
        let targets = l.targets.as_mut().map(std::mem::take).unwrap_or_default();
        pending = targets.into_iter().filter(|t| !tried.contains(t)).collect();
        tried.extend(pending.iter().cloned());
    }
    l.targets = None;
    Ok(l.chains.len() == expected)
}

/// Looks chains up by name, many requests per send (the answers are queued at once, so a
/// window is what the receive buffer holds). Missing chains are left out; false when answers
/// were lost.
fn get_chains(
    sock: &mut NlSocket,
    seq: &mut u32,
    l: &mut TableListing,
    names: &[String],
) -> Result<bool, Miss> {
    let (fam, table) = (l.fam(), l.name().to_string());
    // An answer takes a page-sized buffer in the receive queue.
    let window = (sock.rcvbuf() / 8192).clamp(1, 1024);
    let mut buf = Vec::new();
    for chunk in names.chunks(window) {
        let first = *seq;
        buf.clear();
        for n in chunk {
            let mut a = table_attr(&table);
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
                    return Ok(false);
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
                        l.message(m.ty & 0xff, f, attrs)?;
                    }
                }
            }
        }
    }
    Ok(true)
}

/// The rules of each chain in `names`, one dump per chain (a chain's own dump starts at the
/// chain: linear, where the table-wide dump is quadratic).
fn chain_rules(
    sock: &mut NlSocket,
    seq: &mut u32,
    l: &mut TableListing,
    names: &[String],
) -> Result<(), Miss> {
    let (fam, table) = (l.fam(), l.name().to_string());
    for cname in names {
        let mut a = table_attr(&table);
        a.str(2, cname); // NFTA_RULE_CHAIN
        dump(
            sock,
            seq,
            NFT_MSG_GETRULE,
            fam,
            &a,
            "dump rules",
            |ty, f, a| l.message(ty, f, a),
        )?;
    }
    Ok(())
}
