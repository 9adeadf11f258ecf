//! The `log` statement as the nf_tables expression "log", both directions. NetworkPolicy's
//! drop rules log through nflog (`log prefix "..." group N`), so without this the policy table
//! could only be programmed through `nft -f`.
//!
//! Attributes (`NFTA_LOG_*`, linux/netfilter/nf_tables.h): GROUP (be16), PREFIX (string),
//! SNAPLEN (be32), QTHRESHOLD (be16), LEVEL (be32), FLAGS (be32). [`Stmt::Log`] expresses a
//! prefix and a group: the encoder writes those two, in the order nft (libnftnl) writes them,
//! prefix first. The kernel fills in the rest for its listing (LEVEL for a syslog target),
//! and the decoder reads every attribute and refuses a log the model cannot express rather
//! than listing it as something else.

use crate::expr::Stmt;
use crate::nl::{attr_table, be32, cstr, listing, Attrs};
use crate::NftError;

use super::{Enc, Unsupported};

const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;
const NFTA_LOG_SNAPLEN: usize = 3;
const NFTA_LOG_QTHRESHOLD: usize = 4;
const NFTA_LOG_LEVEL: usize = 5;
const NFTA_LOG_FLAGS: usize = 6;
/// `NF_LOG_PREFIXLEN`: the kernel's buffer, terminating NUL included.
pub(crate) const PREFIX_MAX: usize = 127;
/// The level the kernel uses when a log without group names none (`LOGLEVEL_WARNING`).
const LEVEL_WARNING: u32 = 4;

/// The expression data of `log [prefix P] [group G]`.
pub(crate) fn encode(prefix: Option<&str>, group: Option<u16>) -> Enc<Attrs> {
    let mut a = Attrs::default();
    if let Some(p) = prefix {
        if p.len() > PREFIX_MAX || p.contains('\0') {
            return Err(Unsupported("log prefix longer than 127 bytes or with NUL"));
        }
        a.str(NFTA_LOG_PREFIX, p);
    }
    if let Some(g) = group {
        a.put(NFTA_LOG_GROUP, &g.to_be_bytes());
    }
    Ok(a)
}

fn be16(b: &[u8]) -> Result<u16, NftError> {
    let a: [u8; 2] = b.try_into().map_err(|_| listing("log: 16-bit attribute"))?;
    Ok(u16::from_be_bytes(a))
}

/// The statement of a "log" expression's data. A snaplen or queue threshold, a level other
/// than the default, or log flags are what [`Stmt::Log`] cannot express: an error naming the
/// attribute.
pub(crate) fn decode(data: &[u8]) -> Result<Stmt, NftError> {
    let t = attr_table::<7>(data)?;
    let prefix = t[usize::from(NFTA_LOG_PREFIX)]
        .map(cstr)
        .transpose()?
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let group = t[usize::from(NFTA_LOG_GROUP)].map(be16).transpose()?;
    if let Some(s) = t[NFTA_LOG_SNAPLEN].map(be32).transpose()? {
        if s != 0 {
            return Err(listing(format!("log: snaplen {s} is not modelled")));
        }
    }
    if let Some(q) = t[NFTA_LOG_QTHRESHOLD].map(be16).transpose()? {
        if q != 0 {
            return Err(listing(format!("log: queue-threshold {q} is not modelled")));
        }
    }
    if let Some(l) = t[NFTA_LOG_LEVEL].map(be32).transpose()? {
        if l != LEVEL_WARNING {
            return Err(listing(format!("log: level {l} is not modelled")));
        }
    }
    if let Some(f) = t[NFTA_LOG_FLAGS].map(be32).transpose()? {
        if f != 0 {
            return Err(listing(format!("log: flags {f:#x} are not modelled")));
        }
    }
    Ok(Stmt::Log { prefix, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(prefix: Option<&str>, group: Option<u16>) -> Stmt {
        decode(&encode(prefix, group).unwrap().buf).unwrap()
    }

    #[test]
    fn prefix_and_group_round_trip() {
        for (p, g) in [
            (Some("sarasa-pol ab12"), Some(100)),
            (Some("x"), None),
            (None, Some(0)),
            (None, None),
        ] {
            assert_eq!(
                round_trip(p, g),
                Stmt::Log {
                    prefix: p.map(str::to_string),
                    group: g
                }
            );
        }
    }

    #[test]
    fn layout_is_libnftnls() {
        // prefix "ab" (strz, padded), then group 5 as be16 (padded).
        let a = encode(Some("ab"), Some(5)).unwrap();
        assert_eq!(
            a.buf,
            [7, 0, 2, 0, b'a', b'b', 0, 0, 6, 0, 1, 0, 0, 5, 0, 0]
        );
    }

    #[test]
    fn what_the_model_cannot_say_is_refused_by_name() {
        let long = "p".repeat(PREFIX_MAX + 1);
        assert!(encode(Some(&long), None).is_err());
        let mut a = encode(None, Some(1)).unwrap();
        a.put(3, &64u32.to_be_bytes()); // snaplen 64
        let e = decode(&a.buf).unwrap_err().to_string();
        assert!(e.contains("snaplen"), "{e}");
        let mut a = encode(None, None).unwrap();
        a.put(5, &6u32.to_be_bytes()); // level info
        assert!(decode(&a.buf).unwrap_err().to_string().contains("level"));
        // The kernel's listing of a plain `log`: level warning, as nft shows `log`.
        let mut a = encode(None, None).unwrap();
        a.put(5, &LEVEL_WARNING.to_be_bytes());
        assert_eq!(
            decode(&a.buf).unwrap(),
            Stmt::Log {
                prefix: None,
                group: None
            }
        );
        // Truncated group.
        let mut a = Attrs::default();
        a.put(1, &[0]);
        assert!(decode(&a.buf).is_err());
    }
}
