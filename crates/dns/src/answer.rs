//! The specification's rules for one question: which rcode, which records in the Answer,
//! Authority and Additional sections, and whether the answer is authoritative — or that the
//! name is not ours (it then goes upstream). Pure: a snapshot and a question in, an [`Outcome`]
//! out. The snapshot keeps compact record data ([`crate::snapshot::Rdata`]); the answer makes
//! the hickory records of its sections (the fast path encodes them once per name and caches
//! the bytes; an SRV answer copies its targets' addresses into Additional: the snapshot stores
//! them once, at the target).
//!
//! - A name that exists (records or an empty non-terminal such as `ns.svc.zone`) but has none
//!   of the asked type is NODATA: NOERROR, empty Answer, the zone's SOA in Authority.
//! - A name in the zone that does not exist is NXDOMAIN with the SOA (RFC 2308).
//! - Types the zone never holds are not an error: NODATA.
//! - An ExternalName Service answers its CNAME for every type; the server resolves the target.
//! - Pod names (`a-b-c-d.ns.pod.zone`) are synthesised per `--pods`.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::PodsMode;
use crate::snapshot::{to_records, undashed, Rdata, ZoneSnapshot};

/// Records of one section: the snapshot's own, or made for this query.
#[derive(Debug, PartialEq)]
pub enum Section<'s> {
    Borrowed(&'s [Record]),
    Owned(Vec<Record>),
}

impl Section<'_> {
    pub fn records(&self) -> &[Record] {
        match self {
            Section::Borrowed(r) => r,
            Section::Owned(r) => r,
        }
    }
}

/// An authoritative answer from the cluster zone.
#[derive(Debug, PartialEq)]
pub struct Answer<'s> {
    pub rcode: ResponseCode,
    pub answers: Section<'s>,
    /// The SOA of a negative answer.
    pub authority: Option<&'s Record>,
    /// The addresses of SRV targets.
    pub additional: Section<'s>,
}

impl<'s> Answer<'s> {
    fn positive(answers: Section<'s>, additional: Section<'s>) -> Self {
        Answer {
            rcode: ResponseCode::NoError,
            answers,
            authority: None,
            additional,
        }
    }

    fn negative(rcode: ResponseCode, soa: Option<&'s Record>) -> Self {
        Answer {
            rcode,
            answers: Section::Borrowed(&[]),
            authority: soa,
            additional: Section::Borrowed(&[]),
        }
    }

    /// NOERROR with an empty Answer section.
    pub fn is_nodata(&self) -> bool {
        self.rcode == ResponseCode::NoError && self.answers.records().is_empty()
    }

    /// The CNAME target when the answer is an ExternalName alias (for chasing upstream).
    pub fn cname_target(&self) -> Option<&Name> {
        match self.answers.records() {
            [r] => match &r.data {
                RData::CNAME(c) => Some(&c.0),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What the cluster zone says about a question.
#[derive(Debug, PartialEq)]
pub enum Outcome<'s> {
    Authoritative(Answer<'s>),
    /// Outside the cluster zone and not a cluster address's reverse name.
    NotOurs,
}

/// Answers `name`/`qtype` (class IN) from the snapshot.
pub fn answer<'s>(zone: &'s ZoneSnapshot, name: &Name, qtype: RecordType) -> Outcome<'s> {
    let in_cluster = zone.config.domain.zone_of(name);
    let in_clusterset = zone.config.clusterset_domain.zone_of(name);
    let in_zone = in_cluster || in_clusterset;
    // Reverse names are ours only for the addresses we hold, so their negative answers carry
    // no SOA of ours (we are not the arpa zone's authority).
    let soa = if in_cluster {
        Some(&zone.soa)
    } else {
        in_clusterset.then_some(&zone.clusterset_soa)
    };
    let ttl = zone.config.ttl;
    if let Some((owner, entry)) = zone.names.get_key_value(name) {
        if !entry.cname().is_empty() && !matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return Outcome::Authoritative(Answer::positive(
                Section::Owned(to_records(entry.cname(), owner, ttl)),
                Section::Borrowed(&[]),
            ));
        }
        if qtype == RecordType::ANY {
            let all = to_records(entry.all(), owner, ttl);
            if all.is_empty() {
                return Outcome::Authoritative(Answer::negative(ResponseCode::NoError, soa));
            }
            return Outcome::Authoritative(Answer::positive(
                Section::Owned(all),
                Section::Borrowed(&[]),
            ));
        }
        let records = entry.of_type(qtype);
        if records.is_empty() {
            return Outcome::Authoritative(Answer::negative(ResponseCode::NoError, soa));
        }
        let additional = if qtype == RecordType::SRV {
            Section::Owned(srv_target_addresses(zone, records))
        } else {
            Section::Borrowed(&[])
        };
        return Outcome::Authoritative(Answer::positive(
            Section::Owned(to_records(records, owner, ttl)),
            additional,
        ));
    }
    if !in_zone {
        return Outcome::NotOurs;
    }
    if let Some(answer) = pod_answer(zone, name, qtype) {
        return Outcome::Authoritative(answer);
    }
    Outcome::Authoritative(Answer::negative(ResponseCode::NXDomain, soa))
}

/// The A/AAAA records of the targets of `srv` (each once), for the Additional section.
fn srv_target_addresses(zone: &ZoneSnapshot, srv: &[Rdata]) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for target in srv.iter().filter_map(Rdata::srv_target) {
        let Some((owner, entry)) = zone.names.get_key_value(target) else {
            continue;
        };
        let addresses = entry.of_type(RecordType::A).iter();
        for a in addresses.chain(entry.of_type(RecordType::AAAA)) {
            let a = a.to_record(owner, zone.config.ttl);
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// `<dashed-ip>.<ns>.pod.<zone>` and `<ns>.pod.<zone>`; `None` when the name is not one.
fn pod_answer<'s>(zone: &'s ZoneSnapshot, name: &Name, qtype: RecordType) -> Option<Answer<'s>> {
    let mode = zone.config.pods;
    if mode == PodsMode::Disabled || !zone.pod_zone.zone_of(name) {
        return None;
    }
    let depth = name.num_labels().checked_sub(zone.pod_zone.num_labels())?;
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let namespace = labels.get(depth as usize - 1)?;
    let ns_exists = mode == PodsMode::Insecure || zone.pod_namespaces.contains(namespace);
    let soa = Some(&zone.soa);
    match depth {
        1 if ns_exists => Some(Answer::negative(ResponseCode::NoError, soa)),
        2 => {
            let ip = undashed(&labels[0])?;
            let known = match mode {
                PodsMode::Insecure => true,
                _ => zone.pod_addresses.contains(&(namespace.clone(), ip)),
            };
            if !known {
                return None;
            }
            let owner = name.to_lowercase();
            let ttl = zone.config.ttl;
            let record = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                    Record::from_rdata(owner, ttl, RData::A(A(v4)))
                }
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Record::from_rdata(owner, ttl, RData::AAAA(AAAA(v6)))
                }
                _ => return Some(Answer::negative(ResponseCode::NoError, soa)),
            };
            Some(Answer::positive(
                Section::Owned(vec![record]),
                Section::Borrowed(&[]),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
