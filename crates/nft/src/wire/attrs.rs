//! The nf_tables protocol's numbers (message types, flags, registers, datatype ids, nftnl
//! user-data tags) and the small values every object kind shares: verdicts, protocol numbers,
//! user-data TLVs. One place, so the encoder and the decoder cannot disagree on a constant.

use crate::expr::Verdict;
use crate::model::L4Proto;
use crate::nl::{attr_table, be32, cstr, listing, Attrs};
use crate::NftError;

use super::{Enc, Unsupported};

pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 17;

// nf_tables message types (the low byte of the netlink type; the high byte is the subsystem).
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
pub(crate) const NFT_MSG_GETRULE: u16 = 7;
pub(crate) const NFT_MSG_DELRULE: u16 = 8;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_GETSET: u16 = 10;
pub(crate) const NFT_MSG_DELSET: u16 = 11;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(crate) const NFT_MSG_GETSETELEM: u16 = 13;
pub(crate) const NFT_MSG_DELSETELEM: u16 = 14;
pub(crate) const NFT_MSG_GETGEN: u16 = 16;

// Registers (32-bit numbering for concatenations; NFT_REG_1 is the same as NFT_REG32_00).
pub(crate) const REG_VERDICT: u32 = 0;
pub(crate) const REG_1: u32 = 1;
pub(crate) const REG_2: u32 = 2;
pub(crate) const REG32_00: u32 = 8;

// Chain, set and element flags.
pub(crate) const NFT_CHAIN_BINDING: u32 = 0x4;
pub(crate) const SET_ANONYMOUS: u32 = 0x1;
pub(crate) const SET_CONSTANT: u32 = 0x2;
pub(crate) const SET_INTERVAL: u32 = 0x4;
pub(crate) const SET_MAP: u32 = 0x8;
pub(crate) const SET_TIMEOUT: u32 = 0x10;
pub(crate) const SET_EVAL: u32 = 0x20;
pub(crate) const SET_OBJECT: u32 = 0x40;
pub(crate) const SET_ELEM_INTERVAL_END: u32 = 0x1;
pub(crate) const SET_ELEM_CATCHALL: u32 = 0x2;
pub(crate) const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// nft's datatype id of plain integers (numgen keys).
pub(crate) const TYPE_INTEGER: u32 = 4;
/// Bits per datatype id in a concatenated type.
pub(crate) const TYPE_BITS: u32 = 6;

// nftnl user data, as nft writes it (nft reads its listing back from these).
pub(crate) const UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(crate) const UDATA_SET_DATABYTEORDER: u8 = 1;
pub(crate) const UDATA_SET_KEY_TYPEOF: u8 = 3;
pub(crate) const UDATA_SET_DATA_TYPEOF: u8 = 4;
pub(crate) const UDATA_SET_DATA_INTERVAL: u8 = 6;
pub(crate) const UDATA_SET_COMMENT: u8 = 7;
pub(crate) const UDATA_RULE_COMMENT: u8 = 0;
pub(crate) const UDATA_SET_ELEM_COMMENT: u8 = 0;
/// nft's "typeof" description of a concatenation of plain types (expression type 13,
/// no sub-expressions) and of a verdict (expression type 1).
pub(crate) const TYPEOF_CONCAT: [u8; 8] = [0, 4, 13, 0, 0, 0, 1, 0];
pub(crate) const TYPEOF_VERDICT: [u8; 8] = [0, 4, 1, 0, 0, 0, 1, 0];
pub(crate) const BYTEORDER_INVALID: u32 = 0;
pub(crate) const BYTEORDER_HOST: u32 = 1;
pub(crate) const BYTEORDER_BIG: u32 = 2;

pub(crate) fn udata_u32(out: &mut Vec<u8>, ty: u8, v: u32) {
    out.extend_from_slice(&[ty, 4]);
    out.extend_from_slice(&v.to_ne_bytes());
}
pub(crate) fn proto_number(p: L4Proto) -> u8 {
    use L4Proto::*;
    match p {
        Tcp => 6,
        Udp => 17,
        Sctp => 132,
        Icmp => 1,
        Icmpv6 => 58,
    }
}

pub(crate) fn verdict_data(v: &Verdict) -> Attrs {
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
pub(crate) fn udata_str(ty: u8, s: &str) -> Enc<Vec<u8>> {
    let len = s.len() + 1;
    if len > 255 {
        return Err(Unsupported("comment too long"));
    }
    let mut b = vec![ty, len as u8];
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    Ok(b)
}

/// The value inside an `NFTA_DATA_VALUE` nest.
pub(crate) fn data_value(b: &[u8]) -> Result<&[u8], NftError> {
    let t = attr_table::<2>(b)?;
    t[1].ok_or_else(|| listing("data without a value"))
}

pub(crate) fn parse_verdict(set: &str, b: &[u8]) -> Result<Verdict, NftError> {
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
