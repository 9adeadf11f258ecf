//! The cluster zone as a hickory `ZoneHandler`, over the same atomically swapped snapshot and
//! the same [`crate::answer`] rules, so it can be mounted in a hickory `Catalog` next to other
//! zones (one handler per origin: the cluster domain, `in-addr.arpa.`, `ip6.arpa.`).
//!
//! `sarasa dns` itself serves through [`crate::handler::DnsHandler`] rather than a Catalog:
//! the Catalog decides NXDOMAIN/NODATA, the SOA and truncation by its own rules and runs two
//! lookups for every negative answer; the handler applies the specification's rules in one
//! pass and controls truncation (see the handler's module doc). This adapter keeps the zone
//! usable from hickory's own plumbing and is tested through a Catalog.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneType,
};

use crate::answer::{answer, Outcome};
use crate::snapshot::ZoneSnapshot;

/// One origin of the cluster zone's snapshot, as a hickory zone handler.
pub struct ClusterZone {
    origin: LowerName,
    zone: Arc<ArcSwap<ZoneSnapshot>>,
}

impl ClusterZone {
    /// A handler for `origin` (the cluster domain, `in-addr.arpa.` or `ip6.arpa.`).
    pub fn new(origin: LowerName, zone: Arc<ArcSwap<ZoneSnapshot>>) -> Self {
        ClusterZone { origin, zone }
    }

    fn lookup_now(&self, name: &LowerName, rtype: RecordType) -> LookupControlFlow<AuthLookup> {
        let zone = self.zone.load();
        match answer(&zone, name, rtype) {
            Outcome::NotOurs => LookupControlFlow::Skip,
            Outcome::Authoritative(a) if a.rcode == ResponseCode::NXDomain => {
                LookupControlFlow::Continue(Err(LookupError::from(ResponseCode::NXDomain)))
            }
            Outcome::Authoritative(a) if a.is_nodata() => {
                LookupControlFlow::Continue(Err(LookupError::for_name_exists()))
            }
            Outcome::Authoritative(a) => {
                let additionals = (!a.additional.records().is_empty())
                    .then(|| LookupRecords::Section(a.additional.records().to_vec()));
                LookupControlFlow::Continue(Ok(AuthLookup::answers(
                    LookupRecords::Section(a.answers.records().to_vec()),
                    additionals,
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl ZoneHandler for ClusterZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.lookup_now(name, rtype)
    }

    async fn search(
        &self,
        request: &Request,
        _lookup_options: LookupOptions,
    ) -> (
        LookupControlFlow<AuthLookup>,
        Option<hickory_proto::rr::TSigResponseContext>,
    ) {
        let flow = match request.queries.queries() {
            [q] => self.lookup_now(q.name(), q.query_type()),
            other => LookupControlFlow::Continue(Err(LookupError::BadQueryCount(other.len()))),
        };
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Ok(AuthLookup::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    use hickory_proto::rr::Record;
    use hickory_proto::serialize::binary::BinEncoder;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::net::xfer::Protocol;
    use hickory_server::net::NetError;
    use hickory_server::server::{RequestHandler, ResponseHandler, ResponseInfo};
    use hickory_server::zone_handler::{Catalog, MessageResponse};
    use sarasa_model::Service;

    use crate::config::ZoneConfig;
    use crate::snapshot::build;

    /// Keeps the encoded response.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Captured {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut buf = Vec::new();
            let mut encoder = BinEncoder::new(&mut buf);
            let info = response.destructive_emit(&mut encoder)?;
            *self.0.lock().unwrap() = buf;
            Ok(info)
        }
    }

    async fn ask(catalog: &Catalog, name: &str, t: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let request = Request::from_bytes(q.to_vec().unwrap(), src, Protocol::Udp).unwrap();
        let out = Captured::default();
        catalog
            .handle_request::<_, TokioTime>(&request, out.clone())
            .await;
        let bytes = out.0.lock().unwrap().clone();
        Message::from_vec(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_zone_answers_through_a_hickory_catalog() {
        let config = ZoneConfig::new("cluster.local").unwrap();
        let web = Service::cluster_ip("default", "web", vec!["10.96.0.10".parse().unwrap()]);
        let zone = Arc::new(ArcSwap::from_pointee(build(&config, 1, [&web], [], [])));
        let mut catalog = Catalog::new();
        for origin in ["cluster.local.", "in-addr.arpa."] {
            let origin = LowerName::from(Name::from_ascii(origin).unwrap());
            catalog.upsert(
                origin.clone(),
                vec![Arc::new(ClusterZone::new(origin, zone.clone()))],
            );
        }
        let m = ask(&catalog, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "10.96.0.10");

        let m = ask(&catalog, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

        // An empty non-terminal: NODATA with the SOA.
        let m = ask(&catalog, "default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

        let m = ask(&catalog, "10.0.96.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(
            m.answers[0].data.to_string(),
            "web.default.svc.cluster.local."
        );

        // A swap is seen by the next query.
        let other = Service::cluster_ip("default", "web", vec!["10.96.0.11".parse().unwrap()]);
        zone.store(Arc::new(build(&config, 2, [&other], [], [])));
        let m = ask(&catalog, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.answers[0].data.to_string(), "10.96.0.11");
    }
}
