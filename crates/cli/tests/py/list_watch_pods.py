"""Drives a lab's API with the official Python `kubernetes` client: lists pods, creates one,
then watches from the list's resourceVersion (so the creation arrives as a watch event) until
that pod is seen Running; prints one JSON object with what it saw.
Usage: list_watch_pods.py KUBECONFIG NAMESPACE POD_NAME"""
import json
import sys

from kubernetes import client, config, watch

kubeconfig, namespace, new_pod = sys.argv[1], sys.argv[2], sys.argv[3]
config.load_kube_config(config_file=kubeconfig)
v1 = client.CoreV1Api()

listed = v1.list_namespaced_pod(namespace)
result = {
    "listed": sorted(p.metadata.name for p in listed.items),
    "list_resource_version": listed.metadata.resource_version,
    "events": [],
    "running": False,
}

pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name=new_pod, labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(
        name="c", image="x", ports=[client.V1ContainerPort(container_port=8080)])]),
)
v1.create_namespaced_pod(namespace, pod)
w = watch.Watch()
for event in w.stream(v1.list_namespaced_pod, namespace,
                      resource_version=listed.metadata.resource_version, timeout_seconds=60):
    obj = event["object"]
    if obj.metadata.name == new_pod:
        result["events"].append([event["type"], obj.status.phase if obj.status else None])
        if obj.status and obj.status.phase == "Running":
            result["running"] = True
            result["pod_ip"] = obj.status.pod_ip
            w.stop()

print(json.dumps(result))
