//! A native nftables backend: transactions sent as one netlink batch, tables read back with
//! netlink dumps, without the `nft` tool.
//!
//! Why: `nft` re-reads the table's chains before every change, and the kernel dumps chains in
//! time quadratic in their number, so one small change took ~0.27 s at 10k Services and ~19 s
//! at 100k (2 loaded cores). A batch written directly skips that: ~0.1 s at 10k, ~0.9 s at
//! 100k, what remains being the kernel's commit-time loop check, which walks every chain
//! reachable through jumps (so coalesce changes into one transaction at scale). The whole
//! first program of a 100k-Service table (300k chains, 700k rules, 290 MB of batch) takes
//! ~12 s against ~24 s in `nft -f` (3.3 GB), most of it the kernel parsing expressions.
//! Reading a table back ([`NetlinkBackend::list_table`]) skips `nft -j` and its JSON: 0.5 s
//! and 14 MB instead of 3.5 s and ~1 GB at 10k Services, 7-10 s and 120 MB instead of
//! 150-170 s and ~10 GB at 100k (`examples/nft_bench`, 2 loaded cores).
//!
//! Scope: what the service proxy and per-object updates use: tables, chains, sets and maps
//! (plain, concatenated, interval, timeout, dynamic; verdict and data maps) with their
//! elements, rules with payload, meta, ct, fib, numgen, lookup (named and anonymous sets),
//! vmaps (named and anonymous), dynset, nat, masquerade, reject, counter, mark and verdicts.
//! Anything else (interval sets of concatenations, `tcp dport`, interface-name matches,
//! logging, attributes over 64 KiB) makes [`NetlinkBackend::apply_batch`] hand the whole batch
//! to one `nft -f` run instead, so every batch still applies atomically.
//!
//! One batch may carry several tables ([`NetlinkBackend::apply_batch`]): one `sendmsg`, one
//! kernel commit. The socket's send buffer grows to the batch (as `nft` does), so a whole
//! 100k-Service table goes in one piece.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::backend::{Backend, NftCli};
use crate::diff::{diff_kernel, Op, Transaction};
use crate::expr::{CmpOp, CtKey, Expr, Field, Keyword, MetaKey, RejectKind, Rule, Stmt, Verdict};
use crate::kernel::KernelTable;
use crate::list::{self, family_code};
use crate::model::{
    BaseChain, ChainType, DataType, Element, Family, Hook, Key, MapType, MapValue, Policy, Set,
    Table, Value,
};
use crate::nl::{
    put_msg, Attrs, Msgs, NlSocket, NFNL_SUBSYS_NFTABLES, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND,
    NLM_F_CREATE, NLM_F_REQUEST,
};
use crate::NftError;

const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

// nf_tables message types.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

// Registers (32-bit numbering for concatenations; NFT_REG_1 is the same as NFT_REG32_00).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_00: u32 = 8;

// Set flags and element flags.
const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_INTERVAL: u32 = 0x4;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// nft's datatype id of plain integers (numgen keys).
const TYPE_INTEGER: u32 = 4;
const TYPE_BITS: u32 = 6;

// nftnl set user data, as nft writes it (nft reads its listing back from these).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_RULE_COMMENT: u8 = 0;
const UDATA_SET_ELEM_COMMENT: u8 = 0;
/// nft's "typeof" description of a concatenation of plain types (expression type 13,
/// no sub-expressions) and of a verdict (expression type 1).
const TYPEOF_CONCAT: [u8; 8] = [0, 4, 13, 0, 0, 0, 1, 0];
const TYPEOF_VERDICT: [u8; 8] = [0, 4, 1, 0, 0, 0, 1, 0];
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;

/// Bytes of element attributes per set-element message (the list is one 16-bit attribute).
const ELEMENT_LIST_BYTES: usize = 48 * 1024;
const ENOBUFS: i32 = 105;

/// A batch the native encoder does not cover (it then goes through `nft`).
#[derive(Debug)]
struct Unsupported(&'static str);

type Enc<T> = Result<T, Unsupported>;

/// nft's datatype id, size in bytes and byte order of a model type.
fn type_info(t: DataType) -> (u32, u32, u32) {
    match t {
        DataType::Ipv4Addr => (7, 4, BYTEORDER_BIG),
        DataType::Ipv6Addr => (8, 16, BYTEORDER_BIG),
        DataType::InetProto => (12, 1, BYTEORDER_BIG),
        DataType::InetService => (13, 2, BYTEORDER_BIG),
        DataType::Mark => (19, 4, BYTEORDER_HOST),
        DataType::Ifname => (41, 16, BYTEORDER_HOST),
    }
}

/// Datatype id, length and byte order of a key of `types`: a concatenation packs the ids
/// 6 bits each (first part highest) and pads each part to 4 bytes.
fn key_type(types: &[DataType]) -> Enc<(u32, u32, u32)> {
    match types {
        [] => Err(Unsupported("empty key type")),
        [t] => Ok(type_info(*t)),
        _ => {
            if types.len() * TYPE_BITS as usize > 32 {
                return Err(Unsupported("concatenation of too many types"));
            }
            let mut id = 0;
            let mut len = 0;
            for t in types {
                let (tid, tlen, _) = type_info(*t);
                id = (id << TYPE_BITS) | tid;
                len += tlen.div_ceil(4) * 4;
            }
            Ok((id, len, BYTEORDER_INVALID))
        }
    }
}

fn udata_u32(out: &mut Vec<u8>, ty: u8, v: u32) {
    out.extend_from_slice(&[ty, 4]);
    out.extend_from_slice(&v.to_ne_bytes());
}

/// An anonymous set or map a rule uses; sent with its elements just before the rule.
struct Anon {
    id: u32,
    name: &'static str,
    /// Set attributes after the table name.
    decl: Attrs,
    elems: Vec<Attrs>,
}

/// One rule's expressions.
struct RuleEnc {
    family: Family,
    exprs: Attrs,
    anon: Vec<Anon>,
    /// The last set id used in the batch.
    set_id: u32,
}

impl RuleEnc {
    fn new(family: Family, set_id: u32) -> Self {
        RuleEnc {
            family,
            exprs: Attrs::default(),
            anon: Vec::new(),
            set_id,
        }
    }

    /// Declares an anonymous (constant) set, or a verdict map when `map`, as nft does.
    fn anon_set(
        &mut self,
        map: bool,
        (key_type, key_len, byteorder): (u32, u32, u32),
        interval: bool,
        elems: Vec<Attrs>,
    ) -> (&'static str, u32) {
        self.set_id += 1;
        let id = self.set_id;
        let name = if map { "__map%d" } else { "__set%d" };
        let mut flags = SET_ANONYMOUS | SET_CONSTANT;
        if interval {
            flags |= SET_INTERVAL;
        }
        if map {
            flags |= SET_MAP;
        }
        let mut udata = Vec::new();
        udata_u32(&mut udata, UDATA_SET_KEYBYTEORDER, byteorder);
        if map {
            udata_u32(&mut udata, UDATA_SET_DATABYTEORDER, BYTEORDER_INVALID);
            udata.extend_from_slice(&[UDATA_SET_DATA_TYPEOF, TYPEOF_VERDICT.len() as u8]);
            udata.extend_from_slice(&TYPEOF_VERDICT);
            udata_u32(&mut udata, UDATA_SET_DATA_INTERVAL, 0);
        }
        let mut desc = Attrs::default();
        desc.u32(1, elems.len() as u32); // NFTA_SET_DESC_SIZE
        let mut a = Attrs::default();
        a.str(2, name)
            .u32(3, flags)
            .u32(4, key_type)
            .u32(5, key_len);
        if map {
            a.u32(6, NFT_DATA_VERDICT).u32(7, 0);
        }
        a.u32(10, id).nest(9, desc).put(13, &udata);
        self.anon.push(Anon {
            id,
            name,
            decl: a,
            elems,
        });
        (name, id)
    }

    fn lookup(&mut self, set: &str, set_id: Option<u32>, sreg: u32, dreg: Option<u32>, inv: bool) {
        let mut a = Attrs::default();
        a.str(1, set).u32(2, sreg);
        if let Some(d) = dreg {
            a.u32(3, d);
        }
        if let Some(id) = set_id {
            a.u32(4, id);
        }
        if inv {
            a.u32(5, 1); // NFT_LOOKUP_F_INV
        }
        self.expr("lookup", a);
    }

    fn expr(&mut self, name: &str, data: Attrs) {
        let mut e = Attrs::default();
        e.str(1, name); // NFTA_EXPR_NAME
        e.nest(2, data); // NFTA_EXPR_DATA
        self.exprs.nest(1, e); // NFTA_LIST_ELEM
    }

    fn meta_load(&mut self, key: u32, reg: u32) {
        let mut a = Attrs::default();
        a.u32(2, key).u32(1, reg); // KEY, DREG
        self.expr("meta", a);
    }

    fn cmp(&mut self, reg: u32, op: CmpOp, data: &[u8]) {
        let mut d = Attrs::default();
        d.put(1, data); // NFTA_DATA_VALUE
        let mut a = Attrs::default();
        a.u32(1, reg).u32(2, if op == CmpOp::Eq { 0 } else { 1 });
        a.nest(3, d);
        self.expr("cmp", a);
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, reg: u32) {
        let mut a = Attrs::default();
        a.u32(1, reg).u32(2, base).u32(3, offset).u32(4, len);
        self.expr("payload", a);
    }

    fn bitwise(&mut self, reg: u32, len: u32, mask: &[u8], xor: &[u8]) {
        let mut m = Attrs::default();
        m.put(1, mask);
        let mut x = Attrs::default();
        x.put(1, xor);
        let mut a = Attrs::default();
        a.u32(1, reg).u32(2, reg).u32(3, len);
        a.nest(4, m).nest(5, x);
        self.expr("bitwise", a);
    }

    fn immediate_data(&mut self, reg: u32, data: &[u8]) {
        let mut d = Attrs::default();
        d.put(1, data);
        let mut a = Attrs::default();
        a.u32(1, reg).nest(2, d);
        self.expr("immediate", a);
    }

    fn verdict(&mut self, v: &Verdict) {
        let mut a = Attrs::default();
        a.u32(1, REG_VERDICT).nest(2, verdict_data(v));
        self.expr("immediate", a);
    }

    /// `meta nfproto <f>` — nft's implicit dependency of `ip`/`ip6` fields in inet tables.
    fn nfproto(&mut self, code: u8) {
        if self.family == Family::Inet {
            self.meta_load(15, REG_1);
            self.cmp(REG_1, CmpOp::Eq, &[code]);
        }
    }

    /// Loads `e` into `reg`; returns its length in bytes and what its values look like.
    fn load(&mut self, e: &Expr, reg: u32) -> Enc<(u32, Kind)> {
        Ok(match e {
            Expr::Payload(f) => {
                let (dep, base, off, len, kind) = match f {
                    Field::IpSaddr => (Some(2), 1, 12, 4, Kind::Addr),
                    Field::IpDaddr => (Some(2), 1, 16, 4, Kind::Addr),
                    Field::Ip6Saddr => (Some(10), 1, 8, 16, Kind::Addr),
                    Field::Ip6Daddr => (Some(10), 1, 24, 16, Kind::Addr),
                    Field::ThSport => (None, 2, 0, 2, Kind::Port),
                    Field::ThDport => (None, 2, 2, 2, Kind::Port),
                    Field::TcpDport | Field::UdpDport => return Err(Unsupported("tcp/udp dport")),
                };
                if let Some(d) = dep {
                    // The dependency uses reg 1: load it before anything else lands there.
                    self.nfproto(d);
                }
                self.payload(base, off, len, reg);
                (len, kind)
            }
            Expr::Meta(k) => {
                let (key, len, kind) = match k {
                    MetaKey::L4proto => (16, 1, Kind::Proto),
                    MetaKey::Nfproto => (15, 1, Kind::Nfproto),
                    MetaKey::Mark => (3, 4, Kind::Host32),
                    MetaKey::Iifname | MetaKey::Oifname => return Err(Unsupported("ifname")),
                };
                self.meta_load(key, reg);
                (len, kind)
            }
            Expr::Ct(k) => {
                let key = match k {
                    CtKey::State => 0,
                    CtKey::Status => 2,
                    CtKey::Mark => 3,
                };
                let mut a = Attrs::default();
                a.u32(1, reg).u32(2, key);
                self.expr("ct", a);
                (4, Kind::Ct)
            }
            Expr::FibDaddrType | Expr::FibSaddrType => {
                let flags = if matches!(e, Expr::FibSaddrType) {
                    1
                } else {
                    2
                };
                let mut a = Attrs::default();
                a.u32(1, reg).u32(2, 3).u32(3, flags); // DREG, RESULT addrtype, FLAGS
                self.expr("fib", a);
                (4, Kind::Host32)
            }
            Expr::NumgenRandom(m) => {
                let mut a = Attrs::default();
                a.u32(1, reg).u32(2, *m).u32(3, 1).u32(4, 0);
                self.expr("numgen", a);
                (4, Kind::Host32)
            }
            Expr::Concat(parts) => {
                if reg != REG32_00 {
                    return Err(Unsupported("concatenation outside a key"));
                }
                // An address part brings a `meta nfproto` check into reg 1, which overlaps
                // the first parts of the concatenation: only the first part may have one.
                let mut total = 0;
                let mut r = REG32_00;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0
                        && matches!(p, Expr::Payload(f) if !matches!(f, Field::ThSport | Field::ThDport))
                    {
                        return Err(Unsupported("address inside a concatenation"));
                    }
                    let (len, _) = self.load(p, r)?;
                    r += len.div_ceil(4);
                    total += len.div_ceil(4) * 4;
                }
                (total, Kind::Concat)
            }
            Expr::And(..)
            | Expr::Value(_)
            | Expr::Keywords(_)
            | Expr::Set(_)
            | Expr::AnonSet(_) => return Err(Unsupported("expression not loadable")),
        })
    }

    fn stmt(&mut self, s: &Stmt) -> Enc<()> {
        match s {
            Stmt::Match { left, op, right } => self.matches(left, *op, right),
            Stmt::Counter => {
                let mut a = Attrs::default();
                a.u64(1, 0).u64(2, 0);
                self.expr("counter", a);
                Ok(())
            }
            Stmt::Verdict(v) => {
                self.verdict(v);
                Ok(())
            }
            Stmt::Vmap { key, map } => {
                let reg = if matches!(key, Expr::Concat(_)) {
                    REG32_00
                } else {
                    REG_1
                };
                self.load(key, reg)?;
                self.lookup(map, None, reg, Some(REG_VERDICT), false);
                Ok(())
            }
            Stmt::Dnat { addr, port } => self.nat(1, addr, *port),
            Stmt::Snat { addr } => self.nat(0, addr, None),
            Stmt::Masquerade { fully_random } => {
                let mut a = Attrs::default();
                if *fully_random {
                    a.u32(1, 0x10);
                }
                self.expr("masq", a);
                Ok(())
            }
            Stmt::MarkOr(bits) => self.mark(!bits, *bits),
            Stmt::MarkAnd(bits) => self.mark(*bits, 0),
            Stmt::MarkSet(m) => {
                self.immediate_data(REG_1, &m.to_ne_bytes());
                self.meta_set_mark();
                Ok(())
            }
            Stmt::Reject(k) => {
                let (ty, code) = match k {
                    RejectKind::TcpReset => (1, 0u8),
                    RejectKind::IcmpxPortUnreachable => (2, 1),
                    RejectKind::IcmpxAdminProhibited => (2, 3),
                };
                let mut a = Attrs::default();
                a.u32(1, ty).put(2, &[code]);
                self.expr("reject", a);
                Ok(())
            }
            Stmt::UpdateSet { set, key, timeout } => {
                self.load(key, REG_1)?;
                let mut a = Attrs::default();
                a.str(1, set).u32(3, 1).u32(4, REG_1); // SET_NAME, OP update, SREG_KEY
                if let Some(t) = timeout {
                    a.u64(6, u64::from(*t) * 1000);
                }
                self.expr("dynset", a);
                Ok(())
            }
            Stmt::NumgenVmap { targets } => {
                let n = u32::try_from(targets.len())
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(Unsupported("numgen vmap size"))?;
                let mut a = Attrs::default();
                a.u32(1, REG_1).u32(2, n).u32(3, 1).u32(4, 0); // DREG, MODULUS, random, OFFSET
                self.expr("numgen", a);
                let elems = targets
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let mut key = Attrs::default();
                        key.put(1, &(i as u32).to_ne_bytes());
                        let mut e = Attrs::default();
                        e.nest(1, key).nest(2, verdict_data(v));
                        e
                    })
                    .collect();
                let (name, id) =
                    self.anon_set(true, (TYPE_INTEGER, 4, BYTEORDER_HOST), false, elems);
                self.lookup(name, Some(id), REG_1, Some(REG_VERDICT), false);
                Ok(())
            }
            Stmt::Log { .. } => Err(Unsupported("log")),
        }
    }

    fn mark(&mut self, mask: u32, xor: u32) -> Enc<()> {
        self.meta_load(3, REG_1);
        self.bitwise(REG_1, 4, &mask.to_ne_bytes(), &xor.to_ne_bytes());
        self.meta_set_mark();
        Ok(())
    }

    fn meta_set_mark(&mut self) {
        let mut a = Attrs::default();
        a.u32(2, 3).u32(3, REG_1); // KEY mark, SREG
        self.expr("meta", a);
    }

    fn nat(&mut self, ty: u32, addr: &IpAddr, port: Option<u16>) -> Enc<()> {
        let (fam, bytes) = match addr {
            IpAddr::V4(a) => (2, a.octets().to_vec()),
            IpAddr::V6(a) => (10, a.octets().to_vec()),
        };
        self.immediate_data(REG_1, &bytes);
        if let Some(p) = port {
            self.immediate_data(REG_2, &p.to_be_bytes());
        }
        let mut a = Attrs::default();
        a.u32(1, ty).u32(2, fam).u32(3, REG_1);
        if port.is_some() {
            a.u32(5, REG_2).u32(7, 0x2); // PROTO_MIN, flags PROTO_SPECIFIED
        }
        self.expr("nat", a);
        Ok(())
    }

    fn matches(&mut self, left: &Expr, op: CmpOp, right: &Expr) -> Enc<()> {
        // ct state established,related: a bit test.
        if let (Expr::Ct(CtKey::State), Expr::Keywords(ks)) = (left, right) {
            let mut bits = 0u32;
            for k in ks {
                bits |= match k {
                    Keyword::Invalid => 1,
                    Keyword::Established => 2,
                    Keyword::Related => 4,
                    Keyword::New => 8,
                    _ => return Err(Unsupported("ct state keyword")),
                };
            }
            self.load(left, REG_1)?;
            self.bitwise(REG_1, 4, &bits.to_ne_bytes(), &0u32.to_ne_bytes());
            let neg = if op == CmpOp::Eq {
                CmpOp::Ne
            } else {
                CmpOp::Eq
            };
            self.cmp(REG_1, neg, &0u32.to_ne_bytes());
            return Ok(());
        }
        if let (Expr::And(inner, mask), Expr::Value(v)) = (left, right) {
            let (len, kind) = self.load(inner, REG_1)?;
            let data = value_bytes(v, kind)?;
            self.bitwise(REG_1, len, &mask.to_ne_bytes(), &0u32.to_ne_bytes());
            self.cmp(REG_1, op, &data);
            return Ok(());
        }
        match right {
            Expr::Set(name) => {
                let reg = if matches!(left, Expr::Concat(_)) {
                    REG32_00
                } else {
                    REG_1
                };
                self.load(left, reg)?;
                self.lookup(name, None, reg, None, op == CmpOp::Ne);
                Ok(())
            }
            Expr::AnonSet(keys) => self.anon_match(left, op, keys),
            Expr::Value(Value::Prefix(net)) => {
                let (len, _) = self.load(left, REG_1)?;
                let (mask, addr) = match net {
                    ipnet::IpNet::V4(n) => {
                        (n.netmask().octets().to_vec(), n.network().octets().to_vec())
                    }
                    ipnet::IpNet::V6(n) => {
                        (n.netmask().octets().to_vec(), n.network().octets().to_vec())
                    }
                };
                if mask.len() as u32 != len {
                    return Err(Unsupported("prefix of another family"));
                }
                if mask.iter().any(|b| *b != 0xff) {
                    self.bitwise(REG_1, len, &mask, &vec![0; mask.len()]);
                }
                self.cmp(REG_1, op, &addr);
                Ok(())
            }
            Expr::Value(v) => {
                let (_, kind) = self.load(left, REG_1)?;
                let data = value_bytes(v, kind)?;
                self.cmp(REG_1, op, &data);
                Ok(())
            }
            Expr::Keywords(ks) if ks.len() == 1 => {
                let (_, kind) = self.load(left, REG_1)?;
                let data = match (ks[0], kind) {
                    (Keyword::Local, Kind::Host32) => 2u32.to_ne_bytes().to_vec(), // RTN_LOCAL
                    (Keyword::Ipv4, Kind::Nfproto) => vec![2],
                    (Keyword::Ipv6, Kind::Nfproto) => vec![10],
                    _ => return Err(Unsupported("keyword")),
                };
                self.cmp(REG_1, op, &data);
                Ok(())
            }
            _ => Err(Unsupported("match")),
        }
    }

    /// `left [!=] { a, b, ... }`: a lookup in an anonymous set (one element: a comparison,
    /// as nft writes it).
    fn anon_match(&mut self, left: &Expr, op: CmpOp, keys: &[Vec<Value>]) -> Enc<()> {
        if let [one] = keys {
            if let [v] = &one[..] {
                return self.matches(left, op, &Expr::Value(v.clone()));
            }
        }
        if matches!(left, Expr::Concat(_)) {
            return Err(Unsupported("anonymous set of concatenations"));
        }
        let (len, kind) = self.load(left, REG_1)?;
        let t = match (kind, len) {
            (Kind::Addr, 4) => DataType::Ipv4Addr,
            (Kind::Addr, 16) => DataType::Ipv6Addr,
            (Kind::Port, _) => DataType::InetService,
            (Kind::Proto, _) => DataType::InetProto,
            _ => return Err(Unsupported("anonymous set of this type")),
        };
        let mut values = std::collections::BTreeSet::new();
        for k in keys {
            match &k[..] {
                [v] if t.accepts(v) => values.insert(Key(vec![v.clone()])),
                _ => return Err(Unsupported("anonymous set element")),
            };
        }
        let interval = values.iter().any(|k| matches!(k.0[0], Value::Prefix(_)));
        let elems = element_list(values.iter().map(|k| (k, None)), interval, interval)?;
        let (name, id) = self.anon_set(false, type_info(t), interval, elems);
        self.lookup(name, Some(id), REG_1, None, op == CmpOp::Ne);
        Ok(())
    }
}

/// How a loaded value is laid out.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Addr,
    Port,
    Proto,
    Nfproto,
    Host32,
    Ct,
    Concat,
}

fn value_bytes(v: &Value, kind: Kind) -> Enc<Vec<u8>> {
    Ok(match (v, kind) {
        (Value::Addr(IpAddr::V4(a)), Kind::Addr) => a.octets().to_vec(),
        (Value::Addr(IpAddr::V6(a)), Kind::Addr) => a.octets().to_vec(),
        (Value::Port(p), Kind::Port) => p.to_be_bytes().to_vec(),
        (Value::Proto(p), Kind::Proto) => vec![proto_number(*p)],
        (Value::Mark(m), Kind::Host32) | (Value::Num(m), Kind::Host32) => m.to_ne_bytes().to_vec(),
        _ => return Err(Unsupported("value of another type")),
    })
}

fn proto_number(p: crate::model::L4Proto) -> u8 {
    use crate::model::L4Proto::*;
    match p {
        Tcp => 6,
        Udp => 17,
        Sctp => 132,
        Icmp => 1,
        Icmpv6 => 58,
    }
}

fn verdict_data(v: &Verdict) -> Attrs {
    let (code, chain): (i32, Option<&str>) = match v {
        Verdict::Accept => (1, None),
        Verdict::Drop => (0, None),
        Verdict::Continue => (-1, None),
        Verdict::Return => (-5, None),
        Verdict::Jump(c) => (-3, Some(c)),
        Verdict::Goto(c) => (-4, Some(c)),
    };
    let mut vd = Attrs::default();
    vd.put(1, &code.to_be_bytes());
    if let Some(c) = chain {
        vd.str(2, c);
    }
    let mut d = Attrs::default();
    d.nest(2, vd); // NFTA_DATA_VERDICT
    d
}

/// Key bytes: each part of a concatenation padded to 4 bytes (nft's register layout).
fn key_bytes(k: &Key) -> Enc<Vec<u8>> {
    let mut out = Vec::new();
    for v in &k.0 {
        let b = match v {
            Value::Addr(IpAddr::V4(a)) => a.octets().to_vec(),
            Value::Addr(IpAddr::V6(a)) => a.octets().to_vec(),
            Value::Proto(p) => vec![proto_number(*p)],
            Value::Port(p) => p.to_be_bytes().to_vec(),
            Value::Mark(m) | Value::Num(m) => m.to_ne_bytes().to_vec(),
            Value::Prefix(_) => return Err(Unsupported("prefix outside an interval set")),
            Value::Ifname(n) => {
                // IFNAMSIZ, NUL-padded.
                if n.len() >= 16 {
                    return Err(Unsupported("interface name too long"));
                }
                let mut b = n.as_bytes().to_vec();
                b.resize(16, 0);
                b
            }
        };
        out.extend_from_slice(&b);
        // A single value keeps its size (the set's key length); only parts are padded.
        if k.0.len() > 1 {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
    }
    Ok(out)
}

fn udata_str(ty: u8, s: &str) -> Enc<Vec<u8>> {
    let len = s.len() + 1;
    if len > 255 {
        return Err(Unsupported("comment too long"));
    }
    let mut b = vec![ty, len as u8];
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    Ok(b)
}

/// A value of an interval set as a range: its first value, the first value past it (`None`
/// when it reaches the maximum) and its width in bytes.
fn bounds(v: &Value) -> Enc<(u128, Option<u128>, usize)> {
    let (lo, hi, len) = match v {
        Value::Addr(IpAddr::V4(a)) => {
            let n = u128::from(u32::from(*a));
            (n, n, 4)
        }
        Value::Addr(IpAddr::V6(a)) => {
            let n = u128::from(*a);
            (n, n, 16)
        }
        Value::Prefix(ipnet::IpNet::V4(n)) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
            4,
        ),
        Value::Prefix(ipnet::IpNet::V6(n)) => {
            (u128::from(n.network()), u128::from(n.broadcast()), 16)
        }
        Value::Port(p) => (u128::from(*p), u128::from(*p), 2),
        Value::Proto(p) => {
            let n = u128::from(proto_number(*p));
            (n, n, 1)
        }
        _ => return Err(Unsupported("interval element of this type")),
    };
    let max = if len == 16 {
        u128::MAX
    } else {
        (1u128 << (8 * len)) - 1
    };
    Ok((lo, (hi < max).then(|| hi + 1), len))
}

fn be_bytes(n: u128, len: usize) -> Vec<u8> {
    n.to_be_bytes()[16 - len..].to_vec()
}

/// The element attributes for `items`: one per key; in an interval set a start marker
/// (carrying value, timeout and comment) and an end marker just past the range (none when it
/// reaches the maximum), in key order. `zero_end` leads with an end marker at zero, as nft
/// does for sets it fills at creation.
fn element_list<'a>(
    items: impl Iterator<Item = (&'a Key, Option<&'a Element>)>,
    interval: bool,
    zero_end: bool,
) -> Enc<Vec<Attrs>> {
    if !interval {
        return items
            .map(|(k, e)| element_attrs(&key_bytes(k)?, e, false))
            .collect();
    }
    let mut ranges = Vec::new();
    for (k, e) in items {
        let [v] = &k.0[..] else {
            return Err(Unsupported("interval set of concatenations"));
        };
        let (lo, end, len) = bounds(v)?;
        ranges.push((lo, end, len, e));
    }
    ranges.sort_by_key(|r| r.0);
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if let Some(&(lo, _, len, _)) = ranges.first() {
        if zero_end && lo != 0 {
            out.push(element_attrs(&vec![0; len], None, true)?);
        }
    }
    for (lo, end, len, e) in ranges {
        out.push(element_attrs(&be_bytes(lo, len), e, false)?);
        if let Some(end) = end {
            out.push(element_attrs(&be_bytes(end, len), None, true)?);
        }
    }
    Ok(out)
}

fn element_attrs(key: &[u8], e: Option<&Element>, end: bool) -> Enc<Attrs> {
    let mut k = Attrs::default();
    k.put(1, key);
    let mut a = Attrs::default();
    a.nest(1, k);
    if end {
        a.u32(3, SET_ELEM_INTERVAL_END);
    }
    if let Some(e) = e {
        match &e.value {
            None => {}
            Some(MapValue::Verdict(v)) => {
                a.nest(2, verdict_data(v));
            }
            Some(MapValue::Data(d)) => {
                let mut data = Attrs::default();
                data.put(1, &key_bytes(d)?);
                a.nest(2, data);
            }
        }
        if let Some(t) = e.timeout {
            a.u64(4, u64::from(t) * 1000);
        }
        if let Some(c) = &e.comment {
            a.put(6, &udata_str(UDATA_SET_ELEM_COMMENT, c)?);
        }
    }
    Ok(a)
}

fn base_attrs(a: &mut Attrs, b: &BaseChain) {
    let hooknum: u32 = match b.hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    };
    let mut h = Attrs::default();
    h.u32(1, hooknum).put(2, &b.priority.to_be_bytes());
    a.nest(4, h);
    a.u32(5, if b.policy == Policy::Accept { 1 } else { 0 });
    a.str(
        7,
        match b.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        },
    );
}

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
        let mut a = Attrs::default();
        a.str(1, self.table);
        a
    }

    fn set_attrs(&self, set: &Set, id: u32) -> Enc<Attrs> {
        let (key_id, key_len, key_order) = key_type(&set.key)?;
        let concat = set.key.len() > 1;
        if concat && set.flags.interval {
            return Err(Unsupported("interval set of concatenations"));
        }
        let mut flags = 0u32;
        if set.flags.interval {
            flags |= SET_INTERVAL;
        }
        if set.flags.timeout {
            flags |= SET_TIMEOUT;
        }
        if set.flags.dynamic {
            flags |= SET_EVAL;
        }
        // (type id, length, byte order, concatenation)
        let data = match &set.map {
            None => None,
            Some(MapType::Verdict) => Some((NFT_DATA_VERDICT, 0, BYTEORDER_INVALID, false)),
            Some(MapType::Data(types)) => {
                let (id, len, order) = key_type(types)?;
                Some((id, len, order, types.len() > 1))
            }
        };
        if data.is_some() {
            flags |= SET_MAP;
        }
        let (_, hash) = crate::render::set_decl(set);
        let comment = crate::render::final_comment(set.comment.as_deref(), hash);
        // The user data nft writes: it reads its listings back from it.
        let mut udata = Vec::new();
        udata_u32(&mut udata, UDATA_SET_KEYBYTEORDER, key_order);
        if let Some((_, _, order, _)) = data {
            udata_u32(&mut udata, UDATA_SET_DATABYTEORDER, order);
        }
        if concat {
            udata.extend_from_slice(&[UDATA_SET_KEY_TYPEOF, TYPEOF_CONCAT.len() as u8]);
            udata.extend_from_slice(&TYPEOF_CONCAT);
        }
        if let Some((_, _, _, true)) = data {
            udata.extend_from_slice(&[UDATA_SET_DATA_TYPEOF, TYPEOF_CONCAT.len() as u8]);
            udata.extend_from_slice(&TYPEOF_CONCAT);
        }
        if data.is_some() {
            udata_u32(&mut udata, UDATA_SET_DATA_INTERVAL, 0);
        }
        udata.extend_from_slice(&udata_str(UDATA_SET_COMMENT, &comment)?);
        let mut a = self.table_attr();
        a.str(2, &set.name)
            .u32(3, flags)
            .u32(4, key_id)
            .u32(5, key_len);
        if let Some((id, len, _, _)) = data {
            a.u32(6, id).u32(7, len);
        }
        a.u32(10, id);
        if let Some(t) = set.timeout {
            a.u64(11, u64::from(t) * 1000);
        }
        a.put(13, &udata);
        Ok(a)
    }
}

/// A batch being built.
struct Batch {
    buf: Vec<u8>,
    /// Sequence number of the next message.
    seq: u32,
    /// Of the batch-begin marker.
    first: u32,
    /// Of the last message before the end marker (it asks for the ACK).
    last: u32,
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
            a.put(7, &udata_str(UDATA_RULE_COMMENT, c)?);
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
                let a = p.set_attrs(set, self.set_id)?;
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
fn encode(parts: &[(Family, &str, &Transaction)], first: u32) -> Enc<Option<Batch>> {
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

/// nftables over netlink: batches and listings natively, the `nft` tool for what the encoder
/// does not cover.
pub struct NetlinkBackend {
    sock: NlSocket,
    seq: u32,
    cli: NftCli,
    /// Batches sent natively / handed to `nft` (applied or rejected; for metrics and tests).
    pub native_count: usize,
    pub fallback_count: usize,
    /// Why the last fallback happened.
    pub last_fallback: Option<&'static str>,
    /// Listings that dumped every chain of the family (what
    /// [`NetlinkBackend::list_table_like`] avoids for big tables).
    pub chain_dumps: usize,
}

impl std::fmt::Debug for NetlinkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkBackend")
            .field("seq", &self.seq)
            .field("native_count", &self.native_count)
            .field("fallback_count", &self.fallback_count)
            .finish()
    }
}

impl NetlinkBackend {
    /// A backend in the caller's network namespace.
    pub fn new() -> Result<Self, NftError> {
        Ok(NetlinkBackend {
            sock: NlSocket::open(None)?,
            seq: 1,
            cli: NftCli::new(),
            native_count: 0,
            fallback_count: 0,
            last_fallback: None,
            chain_dumps: 0,
        })
    }

    /// A backend whose socket lives in the namespace at `path` (e.g. `/run/netns/NAME`); the
    /// socket is opened from a short-lived thread, the caller does not move.
    pub fn in_netns(path: impl Into<PathBuf>) -> Result<Self, NftError> {
        let path = path.into();
        Ok(NetlinkBackend {
            sock: NlSocket::open(Some(&path))?,
            seq: 1,
            cli: NftCli::in_netns(path),
            native_count: 0,
            fallback_count: 0,
            last_fallback: None,
            chain_dumps: 0,
        })
    }

    /// Reads table `family name` back with netlink dumps: the same value as
    /// [`KernelTable::parse`] of `nft -j list table`. `Ok(None)` when there is no such table.
    /// What the model cannot represent (ranges, catch-all elements, other datatypes, object
    /// maps) is an error, as in the JSON parser.
    pub fn list_table(
        &mut self,
        family: Family,
        name: &str,
    ) -> Result<Option<KernelTable>, NftError> {
        list::list_table(
            &mut self.sock,
            &mut self.seq,
            family,
            name,
            None,
            &mut self.chain_dumps,
        )
    }

    /// [`NetlinkBackend::list_table`] of `desired.family desired.name`, the same value, found
    /// faster for big tables: chains are looked up by the names `desired` has (and those the
    /// kernel's map elements and rules jump to) instead of dumping every chain of the family,
    /// which costs seconds at 300k chains and again for each table of a sharded ruleset. When
    /// the table holds more chains than found that way, they are all dumped after all.
    pub fn list_table_like(&mut self, desired: &Table) -> Result<Option<KernelTable>, NftError> {
        list::list_table(
            &mut self.sock,
            &mut self.seq,
            desired.family,
            &desired.name,
            Some(desired),
            &mut self.chain_dumps,
        )
    }

    /// Applies several tables' transactions, in order, as ONE netlink batch (one kernel
    /// commit: all or nothing). When any part cannot be encoded, all of them go through one
    /// `nft -f` run of their scripts (atomic too). Returns true when it went over netlink.
    pub fn apply_batch(
        &mut self,
        parts: &[(Family, &str, &Transaction)],
    ) -> Result<bool, NftError> {
        let parts: Vec<(Family, &str, &Transaction)> = parts
            .iter()
            .copied()
            .filter(|(_, _, tx)| !tx.is_empty())
            .collect();
        if parts.is_empty() {
            return Ok(true);
        }
        match encode(&parts, self.seq) {
            Ok(None) => Ok(true),
            Ok(Some(batch)) => {
                self.seq = batch.seq.wrapping_add(1);
                self.native_count += 1;
                self.send_batch(&batch, &parts)?;
                Ok(true)
            }
            Err(Unsupported(why)) => {
                self.fallback_count += 1;
                self.last_fallback = Some(why);
                let mut script = String::new();
                for (_, _, tx) in &parts {
                    script.push_str(&tx.script());
                }
                self.cli.run_script(&script)?;
                Ok(false)
            }
        }
    }

    /// Applies `tx` for table `family table`: [`NetlinkBackend::apply_batch`] of one part.
    pub fn apply_to(
        &mut self,
        family: Family,
        table: &str,
        tx: &Transaction,
    ) -> Result<bool, NftError> {
        self.apply_batch(&[(family, table, tx)])
    }

    /// Sends a batch and waits for the ACK of its last message or the first error. The kernel
    /// handles the batch inside `sendmsg`, so all answers are queued once it returns.
    fn send_batch(
        &mut self,
        b: &Batch,
        parts: &[(Family, &str, &Transaction)],
    ) -> Result<(), NftError> {
        self.sock.send(&b.buf)?;
        let ours = |seq: u32| seq.wrapping_sub(b.first) <= b.last.wrapping_sub(b.first);
        let mut failure: Option<(u32, i32)> = None;
        let mut overflowed = false;
        // After an error (or lost answers), read what is queued without waiting.
        let mut draining = false;
        loop {
            let data = match self.sock.recv(draining) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    overflowed = true;
                    draining = true;
                    continue;
                }
                Err(e) if draining && e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(source) => {
                    self.sock.reopen()?;
                    return Err(NftError::Netlink {
                        what: "netlink receive (batch result)".into(),
                        source,
                    });
                }
            };
            let mut acked = false;
            for m in Msgs(data) {
                let m = m?;
                if m.ty != NLMSG_ERROR || !ours(m.seq) {
                    continue;
                }
                match m.errno()? {
                    0 if m.seq == b.last => acked = true,
                    0 => {}
                    errno => {
                        failure.get_or_insert((m.seq, errno));
                    }
                }
            }
            match (acked, failure) {
                (true, None) if !overflowed => return Ok(()),
                (_, Some(_)) => draining = true,
                _ => {}
            }
        }
        let (seq, errno) = failure.unwrap_or((b.first, ENOBUFS));
        let at = locate(b, parts, seq);
        let lost = if overflowed {
            " (more errors were lost: the socket buffer overflowed)"
        } else {
            ""
        };
        Err(NftError::Netlink {
            what: format!(
                "nftables batch of {} messages rejected, nothing applied; first error at {at}{lost}",
                b.last.wrapping_sub(b.first)
            ),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }
}

/// The table and operation message `seq` of batch `b` belongs to.
fn locate(b: &Batch, parts: &[(Family, &str, &Transaction)], seq: u32) -> String {
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

/// A [`NetlinkBackend`] bound to one table, as a [`Backend`] (transactions do not name their
/// table).
#[derive(Debug)]
pub struct NetlinkTableBackend {
    pub inner: NetlinkBackend,
    pub family: Family,
    pub table: String,
}

impl Backend for NetlinkTableBackend {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        let table = self.table.clone();
        self.inner.apply_to(self.family, &table, tx).map(|_| ())
    }

    fn list_table(&mut self, family: Family, name: &str) -> Result<Option<KernelTable>, NftError> {
        self.inner.list_table(family, name)
    }

    fn reconcile(&mut self, desired: &Table) -> Result<Transaction, NftError> {
        let current = self.inner.list_table_like(desired)?;
        let tx = diff_kernel(current.as_ref(), desired);
        self.apply(&tx)?;
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_keys_are_padded_per_part() {
        let k = Key(vec![
            Value::Addr("10.96.0.10".parse().unwrap()),
            Value::Proto(crate::model::L4Proto::Tcp),
            Value::Port(80),
        ]);
        assert_eq!(
            key_bytes(&k).unwrap(),
            [10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        // A single value has the set's key length.
        assert_eq!(key_bytes(&Key::one(Value::Port(80))).unwrap(), [0, 80]);
    }

    #[test]
    fn concatenated_key_types_pack_six_bits_per_part() {
        let (id, len, order) = key_type(&[
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ])
        .unwrap();
        assert_eq!((id, len, order), ((7 << 12) | (12 << 6) | 13, 12, 0));
    }

    #[test]
    fn interval_elements_are_start_and_end_markers() {
        let k = |s: &str| Key::one(s.parse::<ipnet::IpNet>().unwrap());
        let keys = [k("10.0.1.0/24"), k("10.0.0.0/24"), k("255.255.255.0/24")];
        let elems = element_list(keys.iter().map(|k| (k, None)), true, true).unwrap();
        // zero end, 10.0.0.0, 10.0.1.0 (end), 10.0.1.0, 10.0.2.0 (end), 255.255.255.0 (open)
        assert_eq!(elems.len(), 6);
        let key_of = |a: &Attrs| a.buf[8..12].to_vec();
        assert_eq!(key_of(&elems[1]), [10, 0, 0, 0]);
        assert_eq!(key_of(&elems[2]), [10, 0, 1, 0]);
        assert_eq!(key_of(&elems[5]), [255, 255, 255, 0]);
    }

    #[test]
    fn unsupported_statements_fall_back() {
        let mut enc = RuleEnc::new(Family::Inet, 0);
        assert!(enc
            .stmt(&Stmt::Log {
                prefix: None,
                group: Some(1)
            })
            .is_err());
        // Anonymous maps are native now.
        assert!(enc
            .stmt(&Stmt::NumgenVmap {
                targets: vec![Verdict::Accept, Verdict::Drop]
            })
            .is_ok());
        assert_eq!(enc.anon.len(), 1);
    }
}
