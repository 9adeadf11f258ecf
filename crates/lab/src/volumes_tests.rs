//! Unit tests of [`super`]: what lands on disk and what gets mounted where.

use super::*;
use serde_json::json;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_files_take_every_key_or_the_items_with_their_modes() {
    let d = data(&[("a", "1"), ("b", "2")]);
    let all = key_files("f", &d, None, 0o600, false).unwrap();
    assert_eq!(
        all.iter()
            .map(|f| (f.path.as_str(), f.mode))
            .collect::<Vec<_>>(),
        [("a", 0o600), ("b", 0o600)]
    );
    let items: Vec<KeyToPath> = serde_json::from_value(json!([
        {"key": "b", "path": "dir/b.txt", "mode": 0o400}
    ]))
    .unwrap();
    let some = key_files("f", &d, Some(&items), 0o644, false).unwrap();
    assert_eq!(
        some,
        [VolumeFile {
            path: "dir/b.txt".into(),
            data: b"2".to_vec(),
            mode: 0o400
        }]
    );
    let missing: Vec<KeyToPath> =
        serde_json::from_value(json!([{"key": "zz", "path": "z"}])).unwrap();
    let e = key_files("spec.volumes[0].secret", &d, Some(&missing), 0o644, false).unwrap_err();
    assert!(e.contains("spec.volumes[0].secret.items[0].key"), "{e}");
    assert!(key_files("f", &d, Some(&missing), 0o644, true)
        .unwrap()
        .is_empty());
    let escape: Vec<KeyToPath> =
        serde_json::from_value(json!([{"key": "a", "path": "../etc/passwd"}])).unwrap();
    let e = key_files("f", &d, Some(&escape), 0o644, false).unwrap_err();
    assert!(e.contains("f.items[0].path") && e.contains(".."), "{e}");
}

#[test]
fn downward_api_renders_fields_as_the_kubelet_does() {
    let p = pod(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
            "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "say \"hi\""}},
        "spec": {"nodeName": "node2", "serviceAccountName": "sa", "containers": []}
    }));
    assert_eq!(field_value(&p, "metadata.name").unwrap(), "web");
    assert_eq!(field_value(&p, "metadata.namespace").unwrap(), "shop");
    assert_eq!(field_value(&p, "metadata.uid").unwrap(), "u-1");
    assert_eq!(field_value(&p, "spec.nodeName").unwrap(), "node2");
    assert_eq!(field_value(&p, "spec.serviceAccountName").unwrap(), "sa");
    assert_eq!(
        field_value(&p, "metadata.labels").unwrap(),
        "app=\"web\"\ntier=\"front\""
    );
    assert_eq!(
        field_value(&p, "metadata.annotations").unwrap(),
        "note=\"say \\\"hi\\\"\""
    );
    assert_eq!(field_value(&p, "metadata.labels['tier']").unwrap(), "front");
    assert!(field_value(&p, "status.podIP")
        .unwrap_err()
        .contains("status.podIP"));
}

#[test]
fn host_paths_map_into_the_node_root_and_types_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nodes/n1/root");
    let p = host_path(&root, "/var/log/app").unwrap();
    assert_eq!(p, root.join("var/log/app"));
    assert!(host_path(&root, "relative").is_err());
    assert!(host_path(&root, "/a/../../etc").is_err());
    assert!(prepare_host_path(&p, "Directory").is_err());
    prepare_host_path(&p, "DirectoryOrCreate").unwrap();
    assert!(p.is_dir());
    prepare_host_path(&p, "Directory").unwrap();
    assert!(prepare_host_path(&p, "File").is_err());
    let f = root.join("etc/app.conf");
    assert!(prepare_host_path(&f, "File").is_err());
    prepare_host_path(&f, "FileOrCreate").unwrap();
    prepare_host_path(&f, "File").unwrap();
    assert!(prepare_host_path(&f, "DirectoryOrCreate").is_err());
    assert!(prepare_host_path(&f, "Socket")
        .unwrap_err()
        .contains("Socket"));
    // Devices are the machine's own.
    let tun = host_path(&root, "/dev/net/tun").unwrap();
    assert_eq!(tun, Path::new("/dev/net/tun"));
    prepare_host_path(Path::new("/dev/null"), "CharDevice").unwrap();
    assert!(prepare_host_path(&f, "CharDevice")
        .unwrap_err()
        .contains("not a character device"));
}

fn sample() -> (Pod, PodVolumes) {
    let p = pod(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "containers": [
                {"name": "app", "volumeMounts": [
                    {"name": "cache", "mountPath": "/cache"},
                    {"name": "conf", "mountPath": "/etc/app/conf.d/main.conf", "subPath": "main.conf"},
                    {"name": "conf", "mountPath": "/etc/app"},
                    {"name": "cache", "mountPath": "/data", "subPath": "sub/dir", "readOnly": true}
                ]},
                {"name": "side"}
            ],
            "initContainers": [{"name": "init", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}]
        }
    }));
    let vols = PodVolumes {
        volumes: vec![
            (
                "conf".into(),
                Resolved::Files(vec![
                    VolumeFile {
                        path: "main.conf".into(),
                        data: b"x=1".to_vec(),
                        mode: 0o640,
                    },
                    VolumeFile {
                        path: "nested/other".into(),
                        data: b"y".to_vec(),
                        mode: 0o644,
                    },
                ]),
            ),
            ("cache".into(), Resolved::EmptyDir),
        ],
        tokens: Vec::new(),
    };
    (p, vols)
}

#[test]
fn materialize_writes_files_and_a_mount_plan_per_container() {
    let dir = tempfile::tempdir().unwrap();
    let paths = LabPaths {
        root: dir.path().to_path_buf(),
    };
    let pod_dir = paths.pods_dir().join("u-1");
    let (p, vols) = sample();
    materialize(&pod_dir, &p, &vols, &[]).unwrap();
    let conf = volumes_dir(&pod_dir).join("conf");
    assert_eq!(fs::read(conf.join("main.conf")).unwrap(), b"x=1");
    assert_eq!(mode_of(&conf.join("main.conf")), 0o640);
    assert_eq!(fs::read(conf.join("nested/other")).unwrap(), b"y");
    assert_eq!(mode_of(&volumes_dir(&pod_dir).join("cache")), 0o777);

    let app = container_mounts(&paths, "u-1", Some("app"));
    let targets: Vec<&str> = app.iter().map(|m| m.target.to_str().unwrap()).collect();
    // Parents before what is mounted inside them.
    assert_eq!(
        targets,
        ["/cache", "/data", "/etc/app", "/etc/app/conf.d/main.conf"]
    );
    let by_target = |t: &str| app.iter().find(|m| m.target == Path::new(t)).unwrap();
    assert!(!by_target("/cache").read_only, "emptyDir is writable");
    assert!(by_target("/data").read_only, "readOnly: true");
    assert!(
        by_target("/etc/app").read_only,
        "API-sourced volumes are read-only"
    );
    assert_eq!(
        by_target("/etc/app/conf.d/main.conf").source,
        conf.join("main.conf")
    );
    // A missing subPath is created as a directory.
    assert!(volumes_dir(&pod_dir).join("cache/sub/dir").is_dir());
    assert!(container_mounts(&paths, "u-1", Some("side")).is_empty());
    assert_eq!(container_mounts(&paths, "u-1", Some("init")).len(), 1);
    // `exec` without a container gets the first container's.
    assert_eq!(container_mounts(&paths, "u-1", None), app);
    assert!(container_mounts(&paths, "other", Some("app")).is_empty());
}

#[test]
fn bad_mounts_are_refused_naming_the_field() {
    let (mut p, vols) = sample();
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.volume_mounts.as_mut().unwrap()[0].name = "nope".into();
    let e = plan_mounts(Path::new("/tmp/x"), &vols, c).unwrap_err();
    assert!(
        e.contains("volumeMounts[0].name") && e.contains("nope"),
        "{e}"
    );
    c.volume_mounts.as_mut().unwrap()[0].name = "cache".into();
    c.volume_mounts.as_mut().unwrap()[0].sub_path = Some("../../etc".into());
    let e = plan_mounts(Path::new("/tmp/x"), &vols, c).unwrap_err();
    assert!(e.contains("volumeMounts[0].subPath"), "{e}");
}

#[test]
fn tokens_are_due_after_80_percent_of_their_life() {
    let t = TokenRecord {
        volume: "v".into(),
        path: "token".into(),
        audience: None,
        expiration_seconds: 1000,
        mode: 0o644,
        issued: 10_000,
        expires: 11_000,
    };
    assert!(!t.due(10_799));
    assert!(t.due(10_800));
}

#[test]
fn atomic_writes_replace_content_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a/token");
    write_file_atomic(&f, b"one", 0o600).unwrap();
    write_file_atomic(&f, b"two", 0o644).unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"two");
    assert_eq!(mode_of(&f), 0o644);
    assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
}
