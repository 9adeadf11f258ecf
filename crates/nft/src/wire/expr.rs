//! A rule's statements as nf_tables expressions: loads into registers, comparisons, lookups,
//! verdicts, nat, marks, logging (`super::log`), MSS clamping, and the anonymous sets and maps
//! a rule carries. Encoding only — the listing never decodes rules (it reads each chain's
//! content hash from its last rule's comment); what this encoder does not cover is an
//! [`Unsupported`] and the batch goes to `nft`.

use std::net::IpAddr;

use crate::expr::{CmpOp, CtKey, Expr, Field, Keyword, MetaKey, RejectKind, Stmt, Verdict};
use crate::model::{DataType, Family, Key, L4Proto, Value};
use crate::nl::Attrs;

use super::attrs::*;
use super::elem::element_list;
use super::set::{key_type, type_info};
use super::{Enc, Unsupported};

/// An anonymous set or map a rule uses; sent with its elements just before the rule.
pub(crate) struct Anon {
    pub(crate) id: u32,
    pub(crate) name: &'static str,
    /// Set attributes after the table name.
    pub(crate) decl: Attrs,
    pub(crate) elems: Vec<Attrs>,
}

/// One rule's expressions.
pub(crate) struct RuleEnc {
    pub(crate) family: Family,
    pub(crate) exprs: Attrs,
    pub(crate) anon: Vec<Anon>,
    /// The last set id used in the batch.
    pub(crate) set_id: u32,
    /// The protocol the rule has checked `meta l4proto` against already (explicitly or as a
    /// TCP or UDP field's dependency): nft emits that dependency once per rule.
    l4: Option<L4Proto>,
}

impl RuleEnc {
    pub(crate) fn new(family: Family, set_id: u32) -> Self {
        RuleEnc {
            family,
            exprs: Attrs::default(),
            anon: Vec::new(),
            set_id,
            l4: None,
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
        // NFT_CMP_EQ, NFT_CMP_NEQ, NFT_CMP_LT
        let code = match op {
            CmpOp::Eq => 0,
            CmpOp::Ne => 1,
            CmpOp::Lt => 2,
        };
        a.u32(1, reg).u32(2, code);
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

    /// `meta l4proto tcp` (or `udp`) — nft's implicit dependency of TCP (UDP) header fields,
    /// once per rule.
    fn l4_dep(&mut self, proto: L4Proto) {
        if self.l4 != Some(proto) {
            self.meta_load(16, REG_1);
            self.cmp(REG_1, CmpOp::Eq, &[proto_number(proto)]);
            self.l4 = Some(proto);
        }
    }

    /// Loads `e` into `reg`; returns its length in bytes and what its values look like.
    fn load(&mut self, e: &Expr, reg: u32) -> Enc<(u32, Kind)> {
        self.load_with(e, reg, true)
    }

    /// [`Self::load`]; `dep`: emit the `meta nfproto` dependency of an address field (a
    /// concatenation emits its parts' dependency once, before loading any of them).
    fn load_with(&mut self, e: &Expr, reg: u32, dep: bool) -> Enc<(u32, Kind)> {
        if self.family == Family::Bridge {
            // nft gives these a link-layer dependency (`ether type ip`, ...) in a bridge
            // table, which this encoder does not write.
            match e {
                Expr::Payload(_) => return Err(Unsupported("header field in a bridge table")),
                Expr::Ct(_) => return Err(Unsupported("ct in a bridge table")),
                Expr::FibDaddrType | Expr::FibSaddrType => {
                    return Err(Unsupported("fib in a bridge table"))
                }
                Expr::Meta(MetaKey::L4proto | MetaKey::Nfproto) => {
                    return Err(Unsupported("meta l4proto or nfproto in a bridge table"))
                }
                _ => {}
            }
        }
        Ok(match e {
            Expr::Payload(f) => {
                let (base, off, len, kind) = field_layout(f)?;
                if let (true, Some(d)) = (dep, nfproto_of(f)) {
                    // The dependency uses reg 1: load it before anything else lands there.
                    self.nfproto(d);
                }
                if let Some(proto) = l4_of(f) {
                    if !dep && self.l4 != Some(proto) {
                        return Err(Unsupported("tcp or udp field in a concatenation"));
                    }
                    self.l4_dep(proto);
                }
                self.payload(base, off, len, reg);
                (len, kind)
            }
            Expr::Meta(k) => {
                let (key, len, kind) = match k {
                    MetaKey::L4proto => (16, 1, Kind::Proto),
                    MetaKey::Nfproto => (15, 1, Kind::Nfproto),
                    MetaKey::Mark => (3, 4, Kind::Host32),
                    MetaKey::Iifname => (6, 16, Kind::Ifname),
                    MetaKey::Oifname => (7, 16, Kind::Ifname),
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
                // An address part brings a `meta nfproto` check, made in reg 1, which is
                // where the concatenation starts: made once, before any part is loaded (as
                // nft does). Parts of two families would match nothing.
                let mut deps = parts.iter().filter_map(|p| match p {
                    Expr::Payload(f) => nfproto_of(f),
                    _ => None,
                });
                if let Some(d) = deps.next() {
                    if deps.any(|o| o != d) {
                        return Err(Unsupported("concatenation of IPv4 and IPv6 fields"));
                    }
                    self.nfproto(d);
                }
                let mut total = 0;
                let mut r = REG32_00;
                for p in parts {
                    if matches!(p, Expr::Concat(_)) {
                        return Err(Unsupported("nested concatenation"));
                    }
                    let (len, _) = self.load_with(p, r, false)?;
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

    pub(crate) fn stmt(&mut self, s: &Stmt) -> Enc<()> {
        if self.family == Family::Bridge
            && matches!(
                s,
                Stmt::Dnat { .. }
                    | Stmt::Snat { .. }
                    | Stmt::Masquerade { .. }
                    | Stmt::Reject(_)
                    | Stmt::ClampMssToPmtu
            )
        {
            return Err(Unsupported("nat, reject or MSS clamping in a bridge table"));
        }
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
                let reg = if matches!(key, Expr::Concat(_)) {
                    REG32_00
                } else {
                    REG_1
                };
                self.load(key, reg)?;
                let mut a = Attrs::default();
                a.str(1, set).u32(3, 1).u32(4, reg); // SET_NAME, OP update, SREG_KEY
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
            Stmt::Log { prefix, group } => {
                let prefix = prefix
                    .as_deref()
                    .map(|p| crate::text::sanitize(p, crate::text::MAX_LOG_PREFIX));
                let data = super::log::encode(prefix.as_deref(), *group)?;
                self.expr("log", data);
                Ok(())
            }
            Stmt::ClampMssToPmtu => {
                // As nft writes it (with no dependency of its own): the route's TCP MSS, to
                // network order, written over the 2-byte value of the maxseg option.
                let mut a = Attrs::default();
                a.u32(2, 3).u32(1, REG_1); // KEY NFT_RT_TCPMSS, DREG
                self.expr("rt", a);
                let mut a = Attrs::default();
                // SREG, DREG, OP NFT_BYTEORDER_HTON, LEN, SIZE
                a.u32(1, REG_1).u32(2, REG_1).u32(3, 1).u32(4, 2).u32(5, 2);
                self.expr("byteorder", a);
                let mut a = Attrs::default();
                // SREG, TYPE TCPOPT_MAXSEG, OFFSET, LEN, OP NFT_EXTHDR_OP_TCPOPT
                a.u32(7, REG_1).put(2, &[2]).u32(3, 2).u32(4, 2).u32(6, 1);
                self.expr("exthdr", a);
                Ok(())
            }
            Stmt::Notrack => {
                self.expr("notrack", Attrs::default());
                Ok(())
            }
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

    /// `left < value`, as nft writes it: the kernel compares the register's bytes, so a
    /// host-order value (numgen, meta mark) is turned to network order first and compared
    /// with the value in network order; ports, protocols and addresses are compared as loaded.
    fn lt_match(&mut self, left: &Expr, right: &Expr) -> Enc<()> {
        let v = match right {
            Expr::Value(v) if !matches!(v, Value::Prefix(_)) => v,
            _ => return Err(Unsupported("`<` against anything but one value")),
        };
        if matches!(left, Expr::And(..) | Expr::Concat(_)) {
            return Err(Unsupported("`<` of a masked value or a concatenation"));
        }
        let (len, kind) = self.load(left, REG_1)?;
        let data = value_bytes(v, kind)?;
        let data = match kind {
            Kind::Host32 => {
                let n = u32::from_ne_bytes(
                    data.as_slice()
                        .try_into()
                        .map_err(|_| Unsupported("`<` of a value of another length"))?,
                );
                let mut a = Attrs::default();
                // SREG, DREG, OP NFT_BYTEORDER_HTON, LEN, SIZE
                a.u32(1, REG_1)
                    .u32(2, REG_1)
                    .u32(3, 1)
                    .u32(4, len)
                    .u32(5, len);
                self.expr("byteorder", a);
                n.to_be_bytes().to_vec()
            }
            Kind::Addr | Kind::Port | Kind::Proto | Kind::TcpFlags => data,
            _ => return Err(Unsupported("`<` on a value of this type")),
        };
        self.cmp(REG_1, CmpOp::Lt, &data);
        Ok(())
    }

    fn matches(&mut self, left: &Expr, op: CmpOp, right: &Expr) -> Enc<()> {
        if op == CmpOp::Lt {
            return self.lt_match(left, right);
        }
        // ct state established,related and ct status dnat: bit tests, as nft writes them.
        if let (Expr::Ct(key @ (CtKey::State | CtKey::Status)), Expr::Keywords(ks)) = (left, right)
        {
            let mut bits = 0u32;
            for k in ks {
                bits |= match (key, k) {
                    (CtKey::State, Keyword::Invalid) => 1,
                    (CtKey::State, Keyword::Established) => 2,
                    (CtKey::State, Keyword::Related) => 4,
                    (CtKey::State, Keyword::New) => 8,
                    (CtKey::State, Keyword::Untracked) => 64,
                    // IPS_DST_NAT (linux/netfilter/nf_conntrack_common.h).
                    (CtKey::Status, Keyword::Dnat) => 1 << 5,
                    _ => return Err(Unsupported("ct keyword")),
                };
            }
            self.load(left, REG_1)?;
            if op == CmpOp::Eq {
                // Any of the bits set.
                self.bitwise(REG_1, 4, &bits.to_ne_bytes(), &0u32.to_ne_bytes());
                self.cmp(REG_1, CmpOp::Ne, &0u32.to_ne_bytes());
            } else {
                // nft's `!=` on a flag type compares the whole value, without a bit test.
                self.cmp(REG_1, CmpOp::Ne, &bits.to_ne_bytes());
            }
            return Ok(());
        }
        if let (Expr::And(inner, mask), Expr::Value(v)) = (left, right) {
            let (len, kind) = self.load(inner, REG_1)?;
            let data = value_bytes(v, kind)?;
            let mask = mask_bytes(*mask, kind)?;
            if mask.len() as u32 != len {
                return Err(Unsupported("mask of another length"));
            }
            self.bitwise(REG_1, len, &mask, &vec![0; mask.len()]);
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
                if let (CmpOp::Eq, Expr::Meta(MetaKey::L4proto), Value::Proto(p)) = (op, left, v) {
                    self.l4 = Some(*p);
                }
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

    /// `a . b [!=] { x . y, ... }` (NetworkPolicy's exact protocol . port pairs): a lookup
    /// of the concatenation, from reg 1 on, in an anonymous set of concatenated keys.
    fn anon_concat_match(
        &mut self,
        parts: &[Expr],
        left: &Expr,
        op: CmpOp,
        keys: &[Vec<Value>],
    ) -> Enc<()> {
        let types = parts
            .iter()
            .map(part_type)
            .collect::<Enc<Vec<DataType>>>()?;
        let mut values = std::collections::BTreeSet::new();
        for k in keys {
            let fits = k.len() == types.len()
                && k.iter().zip(&types).all(|(v, t)| t.accepts(v))
                && !k.iter().any(|v| matches!(v, Value::Prefix(_)));
            if !fits {
                return Err(Unsupported("anonymous set element"));
            }
            values.insert(Key(k.clone()));
        }
        self.load(left, REG32_00)?;
        let elems = element_list(values.iter().map(|k| (k, None)), false, false)?;
        let (name, id) = self.anon_set(false, key_type(&types)?, false, elems);
        self.lookup(name, Some(id), REG32_00, None, op == CmpOp::Ne);
        Ok(())
    }

    /// `left [!=] { a, b, ... }`: a lookup in an anonymous set (one element: a comparison,
    /// as nft writes it).
    fn anon_match(&mut self, left: &Expr, op: CmpOp, keys: &[Vec<Value>]) -> Enc<()> {
        if let [one] = keys {
            if let [v] = &one[..] {
                return self.matches(left, op, &Expr::Value(v.clone()));
            }
        }
        if let Expr::Concat(parts) = left {
            return self.anon_concat_match(parts, left, op, keys);
        }
        let (len, kind) = self.load(left, REG_1)?;
        let t = match (kind, len) {
            (Kind::Addr, 4) => DataType::Ipv4Addr,
            (Kind::Addr, 16) => DataType::Ipv6Addr,
            (Kind::Port, _) => DataType::InetService,
            (Kind::Proto, _) => DataType::InetProto,
            (Kind::Ifname, _) => DataType::Ifname,
            _ => return Err(Unsupported("anonymous set of this type")),
        };
        let mut values = std::collections::BTreeSet::new();
        for k in keys {
            match &k[..] {
                [Value::Ifname(n)] if n.ends_with('*') => {
                    return Err(Unsupported("interface name wildcard"))
                }
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

/// The protocol a transport field belongs to (its `meta l4proto` dependency); `th` fields
/// read any protocol's ports.
fn l4_of(f: &Field) -> Option<L4Proto> {
    match f {
        Field::TcpFlags | Field::TcpDport => Some(L4Proto::Tcp),
        Field::UdpDport => Some(L4Proto::Udp),
        _ => None,
    }
}

/// Where a payload field lies: header base, offset, length, and what its values look like.
fn field_layout(f: &Field) -> Enc<(u32, u32, u32, Kind)> {
    Ok(match f {
        Field::IpSaddr => (1, 12, 4, Kind::Addr),
        Field::IpDaddr => (1, 16, 4, Kind::Addr),
        Field::Ip6Saddr => (1, 8, 16, Kind::Addr),
        Field::Ip6Daddr => (1, 24, 16, Kind::Addr),
        Field::ThSport => (2, 0, 2, Kind::Port),
        Field::ThDport => (2, 2, 2, Kind::Port),
        Field::TcpFlags => (2, 13, 1, Kind::TcpFlags),
        Field::TcpDport | Field::UdpDport => (2, 2, 2, Kind::Port),
    })
}

/// The `meta nfproto` value an address field depends on in an inet table.
fn nfproto_of(f: &Field) -> Option<u8> {
    match f {
        Field::IpSaddr | Field::IpDaddr => Some(2),
        Field::Ip6Saddr | Field::Ip6Daddr => Some(10),
        _ => None,
    }
}

/// The datatype of one part of a concatenation, as a set key.
fn part_type(e: &Expr) -> Enc<DataType> {
    Ok(match e {
        Expr::Payload(Field::IpSaddr | Field::IpDaddr) => DataType::Ipv4Addr,
        Expr::Payload(Field::Ip6Saddr | Field::Ip6Daddr) => DataType::Ipv6Addr,
        Expr::Payload(Field::ThSport | Field::ThDport) => DataType::InetService,
        Expr::Meta(MetaKey::L4proto) => DataType::InetProto,
        Expr::Meta(MetaKey::Mark) => DataType::Mark,
        _ => return Err(Unsupported("concatenation part of this type")),
    })
}

/// How a loaded value is laid out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Addr,
    Port,
    Proto,
    Nfproto,
    Host32,
    Ct,
    Concat,
    /// A NUL-padded interface name (IFNAMSIZ bytes).
    Ifname,
    TcpFlags,
}

/// A mask for a loaded value, laid out like it: a port in network order (`th dport &
/// 0xfffe`, NetworkPolicy's port ranges), a mark or ct field in host order.
fn mask_bytes(mask: u32, kind: Kind) -> Enc<Vec<u8>> {
    Ok(match kind {
        Kind::Port => u16::try_from(mask)
            .map_err(|_| Unsupported("port mask over 16 bits"))?
            .to_be_bytes()
            .to_vec(),
        Kind::Host32 | Kind::Ct => mask.to_ne_bytes().to_vec(),
        Kind::TcpFlags => {
            vec![u8::try_from(mask).map_err(|_| Unsupported("tcp flags over 8 bits"))?]
        }
        _ => return Err(Unsupported("mask on this type")),
    })
}

pub(crate) fn value_bytes(v: &Value, kind: Kind) -> Enc<Vec<u8>> {
    Ok(match (v, kind) {
        (Value::Addr(IpAddr::V4(a)), Kind::Addr) => a.octets().to_vec(),
        (Value::Addr(IpAddr::V6(a)), Kind::Addr) => a.octets().to_vec(),
        (Value::Port(p), Kind::Port) => p.to_be_bytes().to_vec(),
        (Value::Proto(p), Kind::Proto) => vec![proto_number(*p)],
        (Value::Mark(m), Kind::Host32) | (Value::Num(m), Kind::Host32) => m.to_ne_bytes().to_vec(),
        (Value::Num(f), Kind::TcpFlags) => {
            vec![u8::try_from(*f).map_err(|_| Unsupported("tcp flags over 8 bits"))?]
        }
        (Value::Ifname(n), Kind::Ifname) => {
            // An exact name, NUL-padded as the kernel compares it (nft's `eth*` prefix match
            // is a shorter comparison, not modelled here).
            if n.ends_with('*') {
                return Err(Unsupported("interface name wildcard"));
            }
            super::elem::key_bytes(&Key(vec![v.clone()]))?
        }
        _ => return Err(Unsupported("value of another type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{TCP_RST, TCP_SYN};
    use crate::nl::{attr_table, cstr, AttrIter};

    /// The names of the expressions encoded so far.
    fn names(enc: &RuleEnc) -> Vec<String> {
        AttrIter(&enc.exprs.buf)
            .map(|e| {
                let e = attr_table::<3>(e.unwrap().1).unwrap();
                cstr(e[1].unwrap()).unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn unsupported_statements_fall_back() {
        let mut enc = RuleEnc::new(Family::Inet, 0);
        // Logging and `tcp dport`/`udp dport` are native now.
        assert!(enc
            .stmt(&Stmt::Log {
                prefix: None,
                group: Some(1)
            })
            .is_ok());
        let dport = |left| Stmt::Match {
            left,
            op: CmpOp::Eq,
            right: Expr::Value(Value::Port(80)),
        };
        assert!(enc.stmt(&dport(Expr::Payload(Field::UdpDport))).is_ok());
        assert!(enc.stmt(&dport(Expr::Payload(Field::TcpDport))).is_ok());
        // Anonymous maps are native now.
        assert!(enc
            .stmt(&Stmt::NumgenVmap {
                targets: vec![Verdict::Accept, Verdict::Drop]
            })
            .is_ok());
        assert_eq!(enc.anon.len(), 1);
        // Interface names too, exact ones only.
        let oif = |n: &str| Stmt::Match {
            left: Expr::Meta(MetaKey::Oifname),
            op: CmpOp::Eq,
            right: Expr::Value(Value::Ifname(n.into())),
        };
        assert!(enc.stmt(&oif("sarasa-cable")).is_ok());
        assert_eq!(
            enc.stmt(&oif("veth*")),
            Err(Unsupported("interface name wildcard"))
        );
        assert_eq!(
            enc.stmt(&oif("a-name-too-long-for-ifnamsiz")),
            Err(Unsupported("interface name too long"))
        );
    }

    #[test]
    fn less_than_is_what_nft_writes() {
        // `numgen random mod 10000 < 50`: host order, so a byteorder before the compare, and
        // the value in network order.
        let mut enc = RuleEnc::new(Family::Bridge, 0);
        enc.stmt(&Stmt::Match {
            left: Expr::NumgenRandom(10_000),
            op: CmpOp::Lt,
            right: Expr::Value(Value::Num(50)),
        })
        .unwrap();
        assert_eq!(names(&enc), ["numgen", "byteorder", "cmp"]);
        let last = AttrIter(&enc.exprs.buf).last().unwrap().unwrap().1;
        let e = attr_table::<3>(last).unwrap();
        let cmp = attr_table::<4>(e[2].unwrap()).unwrap();
        assert_eq!(crate::nl::be32(cmp[2].unwrap()).unwrap(), 2, "NFT_CMP_LT");
        let data = attr_table::<2>(cmp[3].unwrap()).unwrap();
        assert_eq!(data[1].unwrap(), 50u32.to_be_bytes());
        // A port is in network order already.
        let mut enc = RuleEnc::new(Family::Inet, 0);
        enc.stmt(&Stmt::Match {
            left: Expr::Payload(Field::ThDport),
            op: CmpOp::Lt,
            right: Expr::Value(Value::Port(1024)),
        })
        .unwrap();
        assert_eq!(names(&enc), ["payload", "cmp"]);
        // Not against sets, keywords or masks.
        for (left, right) in [
            (
                Expr::Payload(Field::ThDport),
                Expr::AnonSet(vec![vec![Value::Port(1)], vec![Value::Port(2)]]),
            ),
            (Expr::Ct(CtKey::State), Expr::keyword(Keyword::New)),
            (
                Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), 0xff),
                Expr::Value(Value::Num(1)),
            ),
        ] {
            let mut enc = RuleEnc::new(Family::Inet, 0);
            assert!(enc
                .stmt(&Stmt::Match {
                    left,
                    op: CmpOp::Lt,
                    right
                })
                .is_err());
        }
    }

    #[test]
    fn bridge_tables_refuse_what_needs_a_link_layer_dependency() {
        let mut enc = RuleEnc::new(Family::Bridge, 0);
        assert_eq!(
            enc.stmt(&Stmt::Match {
                left: Expr::Payload(Field::IpSaddr),
                op: CmpOp::Eq,
                right: Expr::value("10.0.0.1".parse::<IpAddr>().unwrap()),
            }),
            Err(Unsupported("header field in a bridge table"))
        );
        assert_eq!(
            enc.stmt(&Stmt::Masquerade {
                fully_random: false
            }),
            Err(Unsupported("nat, reject or MSS clamping in a bridge table"))
        );
        assert!(enc
            .stmt(&Stmt::Match {
                left: Expr::Meta(MetaKey::Iifname),
                op: CmpOp::Eq,
                right: Expr::Value(Value::Ifname("site10".into())),
            })
            .is_ok());
    }

    #[test]
    fn mss_clamp_is_what_nft_writes() {
        let syn = Stmt::Match {
            left: Expr::And(Box::new(Expr::Payload(Field::TcpFlags)), TCP_SYN | TCP_RST),
            op: CmpOp::Eq,
            right: Expr::Value(Value::Num(TCP_SYN)),
        };
        let mut enc = RuleEnc::new(Family::Inet, 0);
        enc.stmt(&Stmt::Match {
            left: Expr::Meta(MetaKey::Oifname),
            op: CmpOp::Eq,
            right: Expr::AnonSet(vec![
                vec![Value::Ifname("sarasa-cable".into())],
                vec![Value::Ifname("sarasa-wg".into())],
            ]),
        })
        .unwrap();
        enc.stmt(&syn).unwrap();
        enc.stmt(&Stmt::ClampMssToPmtu).unwrap();
        assert_eq!(
            names(&enc),
            [
                "meta",
                "lookup",
                "meta",
                "cmp",
                "payload",
                "bitwise",
                "cmp",
                "rt",
                "byteorder",
                "exthdr"
            ]
        );
        assert_eq!(enc.anon.len(), 1);
        // An explicit `meta l4proto tcp` is the dependency: nft does not repeat it.
        let mut enc = RuleEnc::new(Family::Ip, 0);
        enc.stmt(&Stmt::Match {
            left: Expr::Meta(MetaKey::L4proto),
            op: CmpOp::Eq,
            right: Expr::Value(Value::Proto(L4Proto::Tcp)),
        })
        .unwrap();
        enc.stmt(&syn).unwrap();
        enc.stmt(&syn).unwrap();
        assert_eq!(
            names(&enc),
            ["meta", "cmp", "payload", "bitwise", "cmp", "payload", "bitwise", "cmp"]
        );
    }
}
