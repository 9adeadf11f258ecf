//! The cloud's address book: which VPC addresses each instance (node) holds, with the
//! instance's limit, as EC2 keeps secondary private addresses on an instance's interfaces.
//! Pure; the server persists it (`vpc.json` in the lab's directory) after every change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Addresses of the VPC range the cloud keeps for itself, as AWS reserves the first four of
/// a subnet (network, router, DNS, future use) and the last (broadcast).
pub const RESERVED_AT_START: u32 = 4;

/// Why the cloud refuses an assignment. The codes are EC2's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The instance already holds its limit.
    #[error("AddressLimitExceeded: node {node} holds {held} addresses and its limit is {limit}")]
    AddressLimitExceeded { node: String, held: u32, limit: u32 },
    /// The VPC range has no free address left.
    #[error("InsufficientFreeAddressesInSubnet: the VPC range {range} has no free address left")]
    InsufficientFreeAddressesInSubnet { range: Ipv4Net },
    /// A request the cloud cannot act on (the message names the field).
    #[error("InvalidParameterValue: {0}")]
    InvalidParameterValue(String),
    /// The caller is no instance of this VPC.
    #[error("UnauthorizedOperation: {0} is not a node of this VPC")]
    UnauthorizedOperation(String),
}

impl CloudError {
    /// The EC2-style code that leads the message.
    pub fn code(&self) -> &'static str {
        match self {
            CloudError::AddressLimitExceeded { .. } => "AddressLimitExceeded",
            CloudError::InsufficientFreeAddressesInSubnet { .. } => {
                "InsufficientFreeAddressesInSubnet"
            }
            CloudError::InvalidParameterValue(_) => "InvalidParameterValue",
            CloudError::UnauthorizedOperation(_) => "UnauthorizedOperation",
        }
    }
}

/// Every instance's addresses (persisted as is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub assigned: BTreeMap<String, BTreeSet<Ipv4Addr>>,
}

impl Pool {
    /// The addresses `node` holds.
    pub fn held(&self, node: &str) -> BTreeSet<Ipv4Addr> {
        self.assigned.get(node).cloned().unwrap_or_default()
    }

    /// Gives `node` `count` more addresses of `range` (the lowest free ones), all or none.
    pub fn assign(
        &mut self,
        node: &str,
        count: u32,
        limit: u32,
        range: Ipv4Net,
    ) -> Result<Vec<Ipv4Addr>, CloudError> {
        if count == 0 {
            return Err(CloudError::InvalidParameterValue(
                "count must be at least 1".into(),
            ));
        }
        let held = self.assigned.get(node).map_or(0, |s| s.len() as u32);
        if held.saturating_add(count) > limit {
            return Err(CloudError::AddressLimitExceeded {
                node: node.into(),
                held,
                limit,
            });
        }
        let taken: BTreeSet<Ipv4Addr> = self.assigned.values().flatten().copied().collect();
        let first = u32::from(range.network()).saturating_add(RESERVED_AT_START);
        let last = u32::from(range.broadcast()).saturating_sub(1);
        let picked: Vec<Ipv4Addr> = (first..=last)
            .map(Ipv4Addr::from)
            .filter(|a| !taken.contains(a))
            .take(count as usize)
            .collect();
        if picked.len() < count as usize {
            return Err(CloudError::InsufficientFreeAddressesInSubnet { range });
        }
        self.assigned
            .entry(node.into())
            .or_default()
            .extend(picked.iter().copied());
        Ok(picked)
    }

    /// Takes `addresses` back from `node`, all or none: each must be one it holds.
    pub fn unassign(&mut self, node: &str, addresses: &[Ipv4Addr]) -> Result<(), CloudError> {
        let held = self.assigned.get(node);
        if let Some(a) = addresses
            .iter()
            .find(|a| !held.is_some_and(|h| h.contains(a)))
        {
            return Err(CloudError::InvalidParameterValue(format!(
                "addresses: {a} is not assigned to node {node}"
            )));
        }
        if let Some(h) = self.assigned.get_mut(node) {
            for a in addresses {
                h.remove(a);
            }
            if h.is_empty() {
                self.assigned.remove(node);
            }
        }
        Ok(())
    }

    /// Every address with the node it routes to.
    pub fn routes(&self) -> BTreeMap<Ipv4Addr, String> {
        self.assigned
            .iter()
            .flat_map(|(n, s)| s.iter().map(move |a| (*a, n.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Ipv4Net {
        "10.244.0.0/29".parse().unwrap()
    }

    #[test]
    fn assigns_lowest_free_past_the_reserved_and_never_twice() {
        let mut p = Pool::default();
        let a = p.assign("n1", 2, 8, range()).unwrap();
        assert_eq!(
            a,
            [
                "10.244.0.4".parse::<Ipv4Addr>().unwrap(),
                "10.244.0.5".parse().unwrap()
            ]
        );
        let b = p.assign("n2", 1, 8, range()).unwrap();
        assert_eq!(b, ["10.244.0.6".parse::<Ipv4Addr>().unwrap()]);
        // .7 is the broadcast address: the /29 is full.
        assert_eq!(
            p.assign("n2", 1, 8, range()),
            Err(CloudError::InsufficientFreeAddressesInSubnet { range: range() })
        );
        p.unassign("n1", &["10.244.0.4".parse().unwrap()]).unwrap();
        assert_eq!(
            p.assign("n2", 1, 8, range()).unwrap(),
            ["10.244.0.4".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(p.routes().len(), 3);
    }

    #[test]
    fn the_limit_is_per_node_and_all_or_none() {
        let mut p = Pool::default();
        p.assign("n1", 3, 4, "10.244.0.0/24".parse().unwrap())
            .unwrap();
        let e = p
            .assign("n1", 2, 4, "10.244.0.0/24".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            e,
            CloudError::AddressLimitExceeded {
                node: "n1".into(),
                held: 3,
                limit: 4
            }
        );
        assert!(e.to_string().contains("limit is 4"));
        assert_eq!(p.held("n1").len(), 3, "nothing taken by a refused request");
        assert_eq!(
            p.assign("n2", 4, 4, "10.244.0.0/24".parse().unwrap())
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn unassign_refuses_what_the_node_does_not_hold() {
        let mut p = Pool::default();
        let a = p.assign("n1", 2, 4, range()).unwrap();
        let e = p.unassign("n2", &a[..1]).unwrap_err();
        assert!(e.to_string().contains("not assigned to node n2"), "{e}");
        assert_eq!(p.held("n1").len(), 2);
        p.unassign("n1", &a).unwrap();
        assert!(p.assigned.is_empty());
        assert!(p.assign("n1", 0, 4, range()).is_err());
    }
}
