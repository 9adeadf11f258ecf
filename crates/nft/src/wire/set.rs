//! Named sets and maps: their declaration as an `NFT_MSG_NEWSET` message (datatype ids, flags,
//! the user data nft reads back) and back from a set dump, as much as decoding elements needs.

use crate::kernel::hash_of_comment;
use crate::model::{DataType, MapType, Set};
use crate::nl::{be32, cstr, listing, udata, Attrs};
use crate::NftError;

use super::attrs::*;
use super::table::table_attr;
use super::{Enc, Unsupported};

/// nft's datatype id, size in bytes and byte order of a model type.
pub(crate) fn type_info(t: DataType) -> (u32, u32, u32) {
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
pub(crate) fn key_type(types: &[DataType]) -> Enc<(u32, u32, u32)> {
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

/// The `NFT_MSG_NEWSET` attributes declaring `set` in `table` with batch-local id `id`.
pub(crate) fn set_attrs(table: &str, set: &Set, id: u32) -> Enc<Attrs> {
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
    let mut a = table_attr(table);
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

/// A named set's declaration, as needed to decode its elements.
pub(crate) struct SetDecl {
    pub(crate) name: String,
    pub(crate) interval: bool,
    pub(crate) key: Vec<DataType>,
    /// `None`: plain set; `Some(None)`: verdict map; `Some(Some(types))`: data map.
    pub(crate) data: Option<Option<Vec<DataType>>>,
    pub(crate) decl_hash: Option<u64>,
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
pub(crate) fn datatypes(set: &str, id: u32) -> Result<Vec<DataType>, NftError> {
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

pub(crate) fn size_of(t: DataType) -> usize {
    match t {
        DataType::Ipv4Addr | DataType::Mark => 4,
        DataType::Ipv6Addr | DataType::Ifname => 16,
        DataType::InetProto => 1,
        DataType::InetService => 2,
    }
}

pub(crate) fn parse_set_decl(t: &[Option<&[u8]>; 14]) -> Result<Option<SetDecl>, NftError> {
    let name = cstr(t[2].ok_or_else(|| listing("set without a name"))?)?.to_string();
    let flags = t[3].map(be32).transpose()?.unwrap_or(0);
    if flags & SET_ANONYMOUS != 0 {
        return Ok(None);
    }
    if flags & SET_OBJECT != 0 {
        return Err(listing(format!(
            "set {name}: object maps are not supported"
        )));
    }
    let key_type = be32(t[4].ok_or_else(|| listing(format!("set {name}: key type")))?)?;
    let key = datatypes(&name, key_type)?;
    let data = if flags & SET_MAP != 0 {
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
        interval: flags & SET_INTERVAL != 0,
        decl_hash: comment.and_then(hash_of_comment),
        name,
        key,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
