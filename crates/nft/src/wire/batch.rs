//! A transaction's operations as one nfnetlink batch: begin marker, one message per table,
//! chain, set, element list and rule (anonymous sets just before the rule that uses them), end
//! marker; only the last real message asks for an ACK. Each message's sequence number is noted
//! with the operation it came from, so a kernel error names the operation at fault.

use std::collections::HashMap;

use crate::diff::{Op, Transaction};
use crate::expr::Rule;
use crate::model::Family;
use crate::nl::{
    put_msg, Attrs, NFNL_SUBSYS_NFTABLES, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};

use super::attrs::*;
use super::chain::base_attrs;
use super::elem::element_list;
use super::expr::RuleEnc;
use super::set::set_attrs;
use super::table::{family_code, table_attr};
use super::{Enc, Unsupported};

/// Bytes of element attributes per set-element message (the list is one 16-bit attribute).
const ELEMENT_LIST_BYTES: usize = 48 * 1024;

/// One table's operations in a batch.
struct PartEnc<'a> {
    family: Family,
    fam: u8,
    table: &'a str,
    /// Sets declared earlier in this batch, with their ids (elements refer to them by id too).
    new_sets: HashMap<String, u32>,
}

impl PartEnc<'_> {
    fn table_attr(&self) -> Attrs {
        table_attr(self.table)
    }
}

/// A batch being built.
pub(crate) struct Batch {
    pub(crate) buf: Vec<u8>,
    /// Sequence number of the next message.
    pub(crate) seq: u32,
    /// Of the batch-begin marker.
    pub(crate) first: u32,
    /// Of the last message before the end marker (it asks for the ACK).
    pub(crate) last: u32,
    last_off: usize,
    /// The last set id used.
    set_id: u32,
    /// The op being encoded (index in its part).
    op: u32,
    /// Per part: (first sequence number, op, item of the op) at each op and each rule of an
    /// op, to name what an error is about.
    marks: Vec<Vec<(u32, u32, u32)>>,
}

impl Batch {
    fn msg(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, attrs: &Attrs) -> Enc<()> {
        if attrs.overflow {
            return Err(Unsupported("attribute over 64 KiB"));
        }
        self.last = self.seq;
        self.last_off = self.buf.len();
        put_msg(
            &mut self.buf,
            ty,
            flags,
            self.seq,
            family,
            res_id,
            &attrs.buf,
        );
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    fn nft(&mut self, p: &PartEnc, ty: u16, flags: u16, attrs: &Attrs) -> Enc<()> {
        self.msg(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | flags,
            p.fam,
            0,
            attrs,
        )
    }

    /// Element messages for `set`, as many as the 16-bit list attribute needs.
    fn elements(
        &mut self,
        p: &PartEnc,
        ty: u16,
        flags: u16,
        set: &str,
        set_id: Option<u32>,
        elems: Vec<Attrs>,
    ) -> Enc<()> {
        let mut list = Attrs::default();
        let mut it = elems.into_iter().peekable();
        while let Some(e) = it.next() {
            list.nest(1, e); // NFTA_LIST_ELEM
            let full = it
                .peek()
                .is_none_or(|n| list.len() + n.len() + 4 > ELEMENT_LIST_BYTES);
            if full {
                let mut a = p.table_attr();
                a.str(2, set);
                if let Some(id) = set_id {
                    a.u32(4, id); // NFTA_SET_ELEM_LIST_SET_ID
                }
                a.nest(3, std::mem::take(&mut list));
                self.nft(p, ty, flags, &a)?;
            }
        }
        Ok(())
    }

    /// Notes that the messages from here on are about item `sub` of the current op.
    fn mark(&mut self, sub: usize) {
        if let Some(m) = self.marks.last_mut() {
            m.push((self.seq, self.op, sub as u32));
        }
    }

    fn rule(&mut self, p: &PartEnc, chain: &str, rule: &Rule) -> Enc<()> {
        let mut enc = RuleEnc::new(p.family, self.set_id);
        for s in &rule.stmts {
            enc.stmt(s)?;
        }
        self.set_id = enc.set_id;
        for anon in enc.anon {
            let mut a = p.table_attr();
            a.extend(&anon.decl);
            self.nft(p, NFT_MSG_NEWSET, NLM_F_CREATE, &a)?;
            let (name, id) = (anon.name, Some(anon.id));
            self.elements(p, NFT_MSG_NEWSETELEM, NLM_F_CREATE, name, id, anon.elems)?;
        }
        let mut a = p.table_attr();
        a.str(2, chain).nest(4, enc.exprs);
        if let Some(c) = &rule.comment {
            // The last rule's comment already carries the hash after a sanitized user part.
            let c = crate::text::sanitize(c, crate::text::MAX_COMMENT + 24);
            a.put(7, &udata_str(UDATA_RULE_COMMENT, &c)?);
        }
        self.nft(p, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &a)
    }

    fn op(&mut self, p: &mut PartEnc, op: &Op) -> Enc<()> {
        match op {
            Op::AddTable => {
                let a = p.table_attr();
                self.nft(p, NFT_MSG_NEWTABLE, NLM_F_CREATE, &a)
            }
            Op::DeleteTable => {
                let a = p.table_attr();
                self.nft(p, NFT_MSG_DELTABLE, 0, &a)
            }
            Op::AddChain(c) => {
                let mut a = p.table_attr();
                a.str(3, &c.name);
                if let Some(b) = &c.base {
                    base_attrs(&mut a, b);
                }
                self.nft(p, NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a)
            }
            Op::FlushChain(name) => {
                let mut a = p.table_attr();
                a.str(2, name);
                self.nft(p, NFT_MSG_DELRULE, 0, &a)
            }
            Op::DeleteChain(name) => {
                let mut a = p.table_attr();
                a.str(3, name);
                self.nft(p, NFT_MSG_DELCHAIN, 0, &a)
            }
            Op::DeleteSet(name) => {
                p.new_sets.remove(name);
                let mut a = p.table_attr();
                a.str(2, name);
                self.nft(p, NFT_MSG_DELSET, 0, &a)
            }
            Op::AddSet(set) => {
                self.set_id += 1;
                let a = set_attrs(p.table, set, self.set_id)?;
                self.nft(p, NFT_MSG_NEWSET, NLM_F_CREATE, &a)?;
                p.new_sets.insert(set.name.clone(), self.set_id);
                Ok(())
            }
            Op::AddElements {
                set,
                interval,
                elements,
            } => {
                let id = p.new_sets.get(set).copied();
                let elems = element_list(
                    elements.iter().map(|(k, e)| (k, Some(e))),
                    *interval,
                    id.is_some(),
                )?;
                self.elements(p, NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, id, elems)
            }
            Op::DeleteElements {
                set,
                interval,
                keys,
            } => {
                let elems = element_list(keys.iter().map(|k| (k, None)), *interval, false)?;
                self.elements(p, NFT_MSG_DELSETELEM, 0, set, None, elems)
            }
            Op::AddRules { chain, rules } => {
                for (i, rule) in rules.iter().enumerate() {
                    if i > 0 {
                        self.mark(i);
                    }
                    self.rule(p, chain, rule)?;
                }
                Ok(())
            }
        }
    }
}

/// Encodes the parts' operations, in order, as one batch; `None` when there is nothing to send.
pub(crate) fn encode(parts: &[(Family, &str, &Transaction)], first: u32) -> Enc<Option<Batch>> {
    let mut b = Batch {
        buf: Vec::new(),
        seq: first,
        first,
        last: first,
        last_off: 0,
        set_id: 0,
        op: 0,
        marks: Vec::with_capacity(parts.len()),
    };
    b.msg(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        0,
        NFNL_SUBSYS_NFTABLES,
        &Attrs::default(),
    )?;
    for (family, table, tx) in parts {
        let ops = tx
            .ops
            .as_ref()
            .ok_or(Unsupported("transaction without typed operations"))?;
        let mut p = PartEnc {
            family: *family,
            fam: family_code(*family),
            table,
            new_sets: HashMap::new(),
        };
        b.marks.push(Vec::with_capacity(ops.len()));
        for (i, op) in ops.iter().enumerate() {
            b.op = i as u32;
            b.mark(0);
            b.op(&mut p, op)?;
        }
    }
    if b.last == first {
        return Ok(None);
    }
    // Only the last real message asks for an ACK: success is that ACK; a failure shows as an
    // error (the kernel reports errors before ACKs).
    let at = b.last_off + 6;
    let flags = u16::from_ne_bytes([b.buf[at], b.buf[at + 1]]) | NLM_F_ACK;
    b.buf[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
    let last = b.last;
    b.msg(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        0,
        NFNL_SUBSYS_NFTABLES,
        &Attrs::default(),
    )?;
    b.last = last;
    Ok(Some(b))
}

/// What an operation (item `sub` of it) does, for error messages.
fn describe(op: &Op, sub: usize) -> String {
    match op {
        Op::AddTable => "add table".into(),
        Op::DeleteTable => "delete table".into(),
        Op::AddChain(c) => format!("add chain {}", c.name),
        Op::FlushChain(n) => format!("flush chain {n}"),
        Op::DeleteChain(n) => format!("delete chain {n}"),
        Op::AddSet(s) => format!("add set {}", s.name),
        Op::DeleteSet(n) => format!("delete set {n}"),
        Op::AddElements { set, elements, .. } => {
            format!("add {} element(s) to {set}", elements.len())
        }
        Op::DeleteElements { set, keys, .. } => {
            format!("delete {} element(s) from {set}", keys.len())
        }
        Op::AddRules { chain, rules } => {
            let mut s = format!("add rule to {chain}: ");
            if let Some(r) = rules.get(sub) {
                crate::render::rule_body(&mut s, r);
            }
            s
        }
    }
}
/// The table and operation message `seq` of batch `b` belongs to.
pub(crate) fn locate(b: &Batch, parts: &[(Family, &str, &Transaction)], seq: u32) -> String {
    let rel = |s: u32| s.wrapping_sub(b.first);
    if rel(seq) == 0 {
        return "the commit".into();
    }
    let part = b
        .marks
        .iter()
        .rposition(|m| m.first().is_some_and(|f| rel(f.0) <= rel(seq)));
    let Some(i) = part else {
        return format!("message {}", rel(seq));
    };
    let (family, table, tx) = parts[i];
    let j = b.marks[i].partition_point(|m| rel(m.0) <= rel(seq));
    let Some(&(_, op, sub)) = j.checked_sub(1).and_then(|j| b.marks[i].get(j)) else {
        return format!("{} {table}", family.as_str());
    };
    match tx.ops.as_ref().and_then(|ops| ops.get(op as usize)) {
        Some(op) => format!(
            "{} {table}: {}",
            family.as_str(),
            describe(op, sub as usize)
        ),
        None => format!("{} {table}", family.as_str()),
    }
}
