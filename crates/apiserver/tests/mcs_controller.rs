//! The Multi-Cluster Services controller, observed through the API as the mcs-api conformance
//! suite observes it (kubernetes-sigs/mcs-api conformance/): an export makes a ServiceImport
//! and MCS EndpointSlices, unexporting removes both; ClusterSetIP imports get an address,
//! Headless ones none; ports and session affinity follow the Service; only exported labels and
//! annotations are propagated; ExternalName and missing Services are `Valid=False` with nothing
//! exported; another cluster's export (an MCS slice as the cluster-set sync writes it) is merged
//! by the conflict resolution policy, `Conflict` naming the disagreement, and keeps the import
//! alive after the local export goes.

mod common;

use common::{eventually, TestServer};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

const CLUSTER: &str = "west";

fn mcs(client: &Client, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "multicluster.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "multicluster.x-k8s.io/v1alpha1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    Api::namespaced_with(client.clone(), "default", &ar)
}

async fn start() -> (TestServer, Client) {
    let s = TestServer::start_with(|c| c.cluster_id = CLUSTER.into()).await;
    let c = s.client();
    (s, c)
}

async fn create_service(client: &Client, body: Value) {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
}

async fn export(client: &Client, name: &str, spec: Value) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    mcs(client, "ServiceExport")
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

async fn unexport(client: &Client, name: &str) {
    mcs(client, "ServiceExport")
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

async fn import(client: &Client, name: &str) -> Option<Value> {
    mcs(client, "ServiceImport")
        .get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

async fn await_import(client: &Client, name: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(10, &format!("ServiceImport {name}"), || async {
        import(client, name).await.filter(|i| ok(i))
    })
    .await
}

async fn await_no_import(client: &Client, name: &str) {
    eventually(10, &format!("ServiceImport {name} gone"), || async {
        import(client, name).await.is_none().then_some(())
    })
    .await
}

fn condition<'a>(export: &'a Value, ty: &str) -> Option<&'a Value> {
    export["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

async fn await_condition(client: &Client, name: &str, ty: &str, status: &str) -> Value {
    eventually(10, &format!("{name}: {ty}={status}"), || async {
        let e = mcs(client, "ServiceExport").get(name).await.ok()?;
        let e = serde_json::to_value(e).unwrap();
        condition(&e, ty).filter(|c| c["status"] == status).cloned()
    })
    .await
}

async fn mcs_slices(client: &Client, name: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    api.list(
        &ListParams::default().labels(&format!("multicluster.kubernetes.io/service-name={name}")),
    )
    .await
    .unwrap()
    .items
}

/// The derived Service of import `name` (selectorless, labelled with the import's name).
async fn derived_service(client: &Client, name: &str) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    eventually(10, &format!("derived Service of {name}"), || async {
        api.list(
            &ListParams::default()
                .labels(&format!("multicluster.kubernetes.io/service-name={name}")),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
    })
    .await
}

fn hello(name: &str, extra: Value) -> Value {
    let mut svc = json!({
        "metadata": {"name": name, "labels": {"svc-label": "x"}, "annotations": {"svc-annotation": "x"}},
        "spec": {"ports": [{"name": "http", "port": 42}, {"name": "dns", "port": 53, "protocol": "UDP"}]},
    });
    if let (Some(s), Some(e)) = (svc["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    svc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusterip_export_is_imported_with_an_address_and_unexport_removes_it() {
    let (_s, client) = start().await;
    create_service(
        &client,
        hello(
            "hello",
            json!({"sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}),
        ),
    )
    .await;
    // The Service's own endpoints, as a slice the EndpointSlice controller or a user writes.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "hello-abcde", "labels": {"kubernetes.io/service-name": "hello"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": true},
                               "hostname": "h0", "nodeName": "node-1"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    export(
        &client,
        "hello",
        json!({"exportedLabels": {"dummy-label": "true"},
               "exportedAnnotations": {"dummy-annotation": "true"}}),
    )
    .await;

    let i = await_import(&client, "hello", |i| i["status"]["clusters"].is_array()).await;
    assert_eq!(i["spec"]["type"], "ClusterSetIP", "{i:#}");
    // The ClusterSetIP is the ClusterIP of the derived Service, which the service proxy
    // balances over the MCS slices (they name it).
    let derived = derived_service(&client, "hello").await;
    assert_eq!(
        i["spec"]["ips"],
        json!(derived.spec.as_ref().unwrap().cluster_ips)
    );
    let ip: std::net::Ipv4Addr = i["spec"]["ips"][0].as_str().unwrap().parse().unwrap();
    assert!(
        ip.octets()[0] == 10 && ip.octets()[1] & 0xf0 == 96,
        "in 10.96.0.0/12: {i:#}"
    );
    let dspec = derived.spec.as_ref().unwrap();
    assert_eq!(dspec.selector, None);
    assert_eq!(dspec.session_affinity.as_deref(), Some("ClientIP"));
    let dports: Vec<(Option<String>, i32)> = dspec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        dports,
        [(Some("http".into()), 42), (Some("dns".into()), 53)]
    );
    assert_eq!(
        i["spec"]["ports"],
        json!([{"name": "http", "port": 42, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}])
    );
    assert_eq!(i["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(
        i["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 300}})
    );
    assert_eq!(i["metadata"]["labels"]["dummy-label"], "true");
    assert_eq!(i["metadata"]["annotations"]["dummy-annotation"], "true");
    assert!(i["metadata"]["labels"].get("svc-label").is_none(), "{i:#}");
    assert!(i["metadata"]["annotations"].get("svc-annotation").is_none());
    assert_eq!(i["status"]["clusters"], json!([{"cluster": CLUSTER}]));

    let valid = await_condition(&client, "hello", "Valid", "True").await;
    assert_eq!(valid["reason"], "Valid");
    let conflict = await_condition(&client, "hello", "Conflict", "False").await;
    assert_eq!(conflict["reason"], "NoConflicts");
    await_condition(&client, "hello", "Ready", "True").await;

    // The MCS slice: the required labels, not the EndpointSlice controller's, the endpoints
    // mirrored without this cluster's node names.
    let eps = eventually(10, "MCS slice", || async {
        let s = mcs_slices(&client, "hello").await;
        (s.len() == 1).then(|| s.into_iter().next().unwrap())
    })
    .await;
    let labels = eps.metadata.labels.clone().unwrap();
    assert_eq!(labels["multicluster.kubernetes.io/source-cluster"], CLUSTER);
    assert_ne!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(
        labels["kubernetes.io/service-name"],
        derived.metadata.name.clone().unwrap(),
        "names the derived Service, not the exported one"
    );
    let ep = &eps.endpoints.as_ref().unwrap()[0];
    assert_eq!(ep.addresses, ["10.244.1.7"]);
    assert_eq!(ep.hostname.as_deref(), Some("h0"));
    assert_eq!(ep.node_name, None);
    assert_eq!(eps.ports.as_ref().unwrap()[0].port, Some(8080));

    // Quiet: the controller's own writes do not make it write again.
    let rv = i["metadata"]["resourceVersion"].clone();
    let slice_rv = eps.metadata.resource_version.clone();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let again = import(&client, "hello").await.unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], rv);
    assert_eq!(
        mcs_slices(&client, "hello").await[0]
            .metadata
            .resource_version,
        slice_rv
    );

    // A second import takes another address.
    create_service(&client, hello("other", json!({}))).await;
    export(&client, "other", json!({})).await;
    let o = await_import(&client, "other", |i| i["spec"]["ips"].is_array()).await;
    assert_ne!(o["spec"]["ips"][0], i["spec"]["ips"][0]);

    // Deleting the derived Service brings it back, with the import's address changed to it.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let dname = derived.metadata.name.clone().unwrap();
    services
        .delete(&dname, &DeleteParams::default())
        .await
        .unwrap();
    let back = eventually(10, "derived Service again", || async {
        services
            .get_opt(&dname)
            .await
            .unwrap()
            .filter(|s| s.metadata.uid != derived.metadata.uid)
    })
    .await;
    await_import(&client, "hello", |i| {
        i["spec"]["ips"] == json!(back.spec.as_ref().unwrap().cluster_ips)
    })
    .await;

    unexport(&client, "hello").await;
    await_no_import(&client, "hello").await;
    eventually(10, "MCS slices and derived Service gone", || async {
        (mcs_slices(&client, "hello").await.is_empty()
            && services.get_opt(&dname).await.unwrap().is_none())
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_export_is_imported_without_an_address() {
    let (_s, client) = start().await;
    create_service(&client, hello("db", json!({"clusterIP": "None"}))).await;
    export(&client, "db", json!({})).await;
    let i = await_import(&client, "db", |i| i["status"]["clusters"].is_array()).await;
    assert_eq!(i["spec"]["type"], "Headless");
    assert!(i["spec"].get("ips").is_none(), "{i:#}");
    let derived = derived_service(&client, "db").await;
    assert_eq!(
        derived.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    let eps = mcs_slices(&client, "db").await;
    assert_eq!(eps.len(), 1, "one empty slice carries the export");
    assert!(eps[0]
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .contains_key("service.kubernetes.io/headless"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn externalname_and_missing_services_are_not_exported() {
    let (_s, client) = start().await;
    create_service(
        &client,
        json!({"metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    )
    .await;
    export(&client, "ext", json!({})).await;
    let c = await_condition(&client, "ext", "Valid", "False").await;
    assert_eq!(c["reason"], "InvalidServiceType");

    export(&client, "ghost", json!({})).await;
    let c = await_condition(&client, "ghost", "Valid", "False").await;
    assert_eq!(c["reason"], "NoService");
    assert!(c["message"].as_str().unwrap().contains("default/ghost"));
    let ready = await_condition(&client, "ghost", "Ready", "False").await;
    assert_eq!(ready["reason"], "Failed");
    for n in ["ext", "ghost"] {
        assert!(import(&client, n).await.is_none());
        assert!(mcs_slices(&client, n).await.is_empty());
    }

    // The Service appears: the export becomes valid and is imported.
    create_service(&client, hello("ghost", json!({}))).await;
    await_condition(&client, "ghost", "Valid", "True").await;
    await_import(&client, "ghost", |_| true).await;
}

/// Another cluster's export, as the cluster-set sync copies it in: an MCS slice of `east`.
fn remote_slice(name: &str, created: &str, port: i64, ty: &str) -> EndpointSlice {
    let record = json!({"created": created, "type": ty,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "sessionAffinity": "None", "ipFamilies": ["IPv4"], "labels": {}, "annotations": {}});
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-east"),
            "labels": {"multicluster.kubernetes.io/service-name": name,
                       "multicluster.kubernetes.io/source-cluster": "east",
                       "endpointslice.kubernetes.io/managed-by": "mcs-controller.sarasa.io"},
            "annotations": {"multicluster.sarasa.io/export": record.to_string()}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.245.0.9"], "conditions": {"ready": true}}],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_export_merges_by_the_oldest_and_keeps_the_import() {
    let (_s, client) = start().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    // east exported long ago, with another port number under the same name.
    slices
        .create(
            &PostParams::default(),
            &remote_slice("hello", "2020-01-01T00:00:00Z", 4242, "ClusterSetIP"),
        )
        .await
        .unwrap();
    // The import is created, then its status written: wait for the status.
    let i = await_import(&client, "hello", |i| !i["status"]["clusters"].is_null()).await;
    assert_eq!(i["status"]["clusters"], json!([{"cluster": "east"}]));

    create_service(&client, hello("hello", json!({}))).await;
    export(&client, "hello", json!({})).await;
    let c = await_condition(&client, "hello", "Conflict", "True").await;
    assert_eq!(c["reason"], "PortConflict");
    let m = c["message"].as_str().unwrap();
    assert!(
        m.contains("42/TCP in west") && m.contains("4242/TCP in east"),
        "{m}"
    );
    let i = await_import(&client, "hello", |i| {
        i["status"]["clusters"] == json!([{"cluster": "east"}, {"cluster": CLUSTER}])
    })
    .await;
    // east's port is kept (oldest); west's other port joins the union.
    assert_eq!(
        i["spec"]["ports"],
        json!([{"name": "http", "port": 4242, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}])
    );

    // Unexported here, still exported by east: the import stays, with east alone.
    unexport(&client, "hello").await;
    await_import(&client, "hello", |i| {
        i["status"]["clusters"] == json!([{"cluster": "east"}])
    })
    .await;
    slices
        .delete("hello-east", &DeleteParams::default())
        .await
        .unwrap();
    await_no_import(&client, "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headlessness_conflict_takes_the_oldest_type() {
    let (_s, client) = start().await;
    create_service(&client, hello("mixed", json!({"clusterIP": "None"}))).await;
    export(&client, "mixed", json!({})).await;
    await_import(&client, "mixed", |i| i["spec"]["type"] == "Headless").await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &remote_slice("mixed", "2020-01-01T00:00:00Z", 42, "ClusterSetIP"),
        )
        .await
        .unwrap();
    let c = await_condition(&client, "mixed", "Conflict", "True").await;
    assert_eq!(c["reason"], "TypeConflict");
    let i = await_import(&client, "mixed", |i| i["spec"]["ips"][0].is_string()).await;
    assert_eq!(i["spec"]["type"], "ClusterSetIP");
    let derived = derived_service(&client, "mixed").await;
    assert_eq!(i["spec"]["ips"], json!(derived.spec.unwrap().cluster_ips));
}
