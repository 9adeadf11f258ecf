//! What the listing reads of a rule: the content hash in its comment (user data) and the
//! chains its `immediate` verdicts jump or go to. Rules are encoded by [`super::expr`].

use std::collections::BTreeSet;

use crate::kernel::hash_of_comment;
use crate::nl::{attr_table, be32, cstr, udata, AttrIter};
use crate::NftError;

use super::attrs::UDATA_RULE_COMMENT;

/// The content hash in a rule's comment (user data), if any.
pub(crate) fn rule_hash(udata_attr: Option<&[u8]>) -> Result<Option<u64>, NftError> {
    let Some(u) = udata_attr else { return Ok(None) };
    Ok(udata(u, UDATA_RULE_COMMENT)?
        .map(cstr)
        .transpose()?
        .and_then(hash_of_comment))
}
/// The chains `immediate` verdicts in a rule's expressions jump or go to.
pub(crate) fn verdict_targets(exprs: &[u8], out: &mut BTreeSet<String>) -> Result<(), NftError> {
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

/// The `log` statements among a rule's expressions, in order.
pub(crate) fn log_statements(exprs: &[u8]) -> Result<Vec<crate::expr::Stmt>, NftError> {
    let mut out = Vec::new();
    for e in AttrIter(exprs) {
        let e = attr_table::<3>(e?.1)?;
        if e[1].map(cstr).transpose()? != Some("log") {
            continue;
        }
        out.push(super::log::decode(e[2].unwrap_or(&[]))?);
    }
    Ok(out)
}
