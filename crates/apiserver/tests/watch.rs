//! Watch through kube-rs: events from a resourceVersion, selector transitions, BOOKMARKs,
//! 410 Expired, streaming lists, and a watcher + reflector that converges across a restart.

mod common;

use std::time::Duration;

use common::{eventually, TestServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

async fn next_event(
    s: &mut (impl futures::Stream<Item = Result<WatchEvent<Pod>, kube::Error>> + Unpin),
) -> WatchEvent<Pod> {
    tokio::time::timeout(Duration::from_secs(15), s.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("event ok")
}

fn describe(e: &WatchEvent<Pod>) -> String {
    match e {
        WatchEvent::Added(p) => format!("ADDED {}", p.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

/// The next event that is not a BOOKMARK.
async fn next_change(
    s: &mut (impl futures::Stream<Item = Result<WatchEvent<Pod>, kube::Error>> + Unpin),
) -> String {
    loop {
        let e = next_event(s).await;
        if !matches!(e, WatchEvent::Bookmark(_)) {
            return describe(&e);
        }
    }
}

#[tokio::test]
async fn watch_from_resource_version_with_selector_transitions() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    pods.create(
        &PostParams::default(),
        &pod("before", json!({"app": "web"})),
    )
    .await
    .unwrap();
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut all = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut web = pods
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();

    pods.create(&PostParams::default(), &pod("a", json!({"app": "web"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", json!({"app": "db"})))
        .await
        .unwrap();
    let pp = PatchParams::default();
    pods.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    pods.patch(
        "b",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    pods.delete("b", &DeleteParams::default()).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_change(&mut all).await);
    }
    assert_eq!(
        got,
        [
            "ADDED a",
            "ADDED b",
            "MODIFIED a",
            "MODIFIED b",
            "DELETED b"
        ]
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_change(&mut web).await);
    }
    // Leaving the selection reads as DELETED, entering it as ADDED.
    assert_eq!(got, ["ADDED a", "DELETED a", "ADDED b", "DELETED b"]);
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_current_objects_and_bookmarks() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    pods.create(&PostParams::default(), &pod("x", json!({})))
        .await
        .unwrap();
    let mut s = pods
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            },
            "0",
        )
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next_event(&mut s).await), "ADDED x");
    // Bookmarks arrive on an idle watch (every 300 ms in tests) and carry the current resourceVersion.
    let rv_now = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    match next_event(&mut s).await {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv_now),
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired() {
    let ts = TestServer::start_with(|c| c.watch_history = 5).await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let first = pods
        .create(&PostParams::default(), &pod("p0", json!({})))
        .await
        .unwrap();
    for i in 1..20 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({})))
            .await
            .unwrap();
    }
    let rv = first.metadata.resource_version.unwrap();
    let mut s = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(st) => {
            assert_eq!(st.code, 410);
            assert_eq!(st.reason, "Expired");
            assert!(
                st.message.contains("too old resource version"),
                "{}",
                st.message
            );
        }
        other => panic!("expected 410, got {}", describe(&other)),
    }
    // A recent resourceVersion still works.
    let recent = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = pods
        .watch(&WatchParams::default(), &recent)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("late", json!({})))
        .await
        .unwrap();
    assert_eq!(next_change(&mut s).await, "ADDED late");
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let s = pods
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    let all: Vec<_> = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
        .await
        .expect("ended");
    assert!(all.iter().all(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))));
}

async fn reflected_names(reader: &reflector::Store<Pod>) -> Vec<String> {
    let mut v: Vec<String> = reader
        .state()
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    v.sort();
    v
}

async fn server_names(pods: &Api<Pod>) -> Vec<String> {
    let mut v: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|p| p.metadata.name.unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn reflector_survives_restart(streaming: bool) {
    let mut ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    for i in 0..10 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), json!({"i": i.to_string()})),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store::<Pod>();
    let mut cfg = watcher::Config::default().timeout(5);
    if streaming {
        cfg = cfg.streaming_lists();
    }
    let stream = reflector(writer, watcher(pods.clone(), cfg))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = stream.boxed();
        while s.try_next().await.is_ok() {}
    });
    let want = server_names(&pods).await;
    eventually(30, "reflector initial sync", || {
        let reader = reader.clone();
        let want = want.clone();
        async move { (reflected_names(&reader).await == want).then_some(()) }
    })
    .await;

    ts.restart().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    pods.create(&PostParams::default(), &pod("after-restart", json!({})))
        .await
        .unwrap();
    pods.patch(
        "p5",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"i": "changed"}}})),
    )
    .await
    .unwrap();
    let want = server_names(&pods).await;
    assert!(want.contains(&"after-restart".to_string()) && !want.contains(&"p0".to_string()));
    eventually(30, "reflector converges after restart", || {
        let reader = reader.clone();
        let want = want.clone();
        async move {
            let label_ok = reader.state().iter().any(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("i"))
                    .map(String::as_str)
                    == Some("changed")
            });
            (reflected_names(&reader).await == want && label_ok).then_some(())
        }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn watcher_and_reflector_converge_and_survive_restart() {
    reflector_survives_restart(false).await;
}

#[tokio::test]
async fn streaming_list_watcher_survives_restart() {
    reflector_survives_restart(true).await;
}
