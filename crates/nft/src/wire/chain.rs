//! Chains: a base chain's hook, priority, policy and type as `NFT_MSG_NEWCHAIN` attributes, and
//! a chain dump message back into a [`KernelChain`].

use crate::kernel::KernelChain;
use crate::model::{BaseChain, ChainType, Hook, Policy};
use crate::nl::{attr_table, be32, cstr, listing, Attrs};
use crate::NftError;

use super::attrs::NFT_CHAIN_BINDING;

pub(crate) fn base_attrs(a: &mut Attrs, b: &BaseChain) {
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

/// A chain message: its name, and the chain unless it is a binding chain.
pub(crate) fn parse_chain(
    t: &[Option<&[u8]>; 11],
) -> Result<(String, Option<KernelChain>), NftError> {
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
