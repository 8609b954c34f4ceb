"""The official Python `kubernetes` client (PyPI) against kcluster's API server.

Run by tests/python_client.rs as `python3 tests/python/client_test.py KUBECONFIG` against a
standalone server; it exits non-zero with the failed check's message on the first mismatch.
Covers what client libraries lean on: typed CRUD of a core and an apps kind (create, read,
replace, merge and strategic merge patch, delete), label and field selectors, a watch that sees
the writes made during it, and the error codes callers branch on (404, 409).
"""

import sys
import threading
import time

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # The Rust test checks this first; this is for people running it by hand.
    sys.exit(f"the kubernetes module is missing ({e}): python3 -m pip install kubernetes==37.0.2")

NS = "pyclient"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        check(e.status == code, f"{fn.__name__}: expected HTTP {code}, got {e.status}: {e.body}")
        return e
    raise AssertionError(f"{fn.__name__}: expected HTTP {code}, but it succeeded")


def configmap(name, data, labels=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data=data,
    )


def test_configmap_crud(core):
    created = core.create_namespaced_config_map(NS, configmap("one", {"a": "1"}, {"app": "py"}))
    check(created.metadata.name == "one", "create returns the object")
    check(created.metadata.uid, "the server assigns a uid")
    check(created.metadata.resource_version, "the server assigns a resourceVersion")
    check(created.metadata.creation_timestamp is not None, "creationTimestamp is parsed")

    got = core.read_namespaced_config_map("one", NS)
    check(got.data == {"a": "1"}, f"read returns the data: {got.data}")
    check(got.metadata.labels == {"app": "py"}, "read returns the labels")

    got.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("one", NS, got)
    check(replaced.data == {"a": "1", "b": "2"}, f"replace stores the new data: {replaced.data}")
    check(
        replaced.metadata.resource_version != got.metadata.resource_version,
        "replace moves the resourceVersion",
    )

    # Replacing with the old resourceVersion is a conflict.
    expect_status(409, core.replace_namespaced_config_map, "one", NS, got)

    merged = core.patch_namespaced_config_map(
        "one", NS, {"data": {"a": None, "c": "3"}}, _content_type=MERGE
    )
    check(merged.data == {"b": "2", "c": "3"}, f"merge patch: {merged.data}")

    # The client's default for a dict body is a strategic merge patch.
    strategic = core.patch_namespaced_config_map(
        "one", NS, {"metadata": {"labels": {"tier": "x"}}, "data": {"d": "4"}}
    )
    check(strategic.data == {"b": "2", "c": "3", "d": "4"}, f"strategic patch: {strategic.data}")
    check(strategic.metadata.labels == {"app": "py", "tier": "x"}, "strategic patch merges labels")

    json_patched = core.patch_namespaced_config_map(
        "one", NS, [{"op": "replace", "path": "/data/b", "value": "two"}]
    )
    check(json_patched.data["b"] == "two", f"JSON patch: {json_patched.data}")

    status = core.delete_namespaced_config_map("one", NS)
    check(status is not None, "delete answers")
    expect_status(404, core.read_namespaced_config_map, "one", NS)


def deployment(name, image):
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="web",
                            image=image,
                            env=[client.V1EnvVar(name="MODE", value="a")],
                        ),
                        client.V1Container(name="sidecar", image="busybox:1.36"),
                    ]
                ),
            ),
        ),
    )


def test_deployment_crud(apps):
    created = apps.create_namespaced_deployment(NS, deployment("web", "nginx:1.25"))
    check(created.metadata.generation == 1, "a new Deployment has generation 1")
    # Defaulting comes back typed.
    check(created.spec.strategy.type == "RollingUpdate", f"default strategy: {created.spec.strategy}")
    check(created.spec.revision_history_limit == 10, "default revisionHistoryLimit")
    check(
        created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent",
        "default imagePullPolicy",
    )

    got = apps.read_namespaced_deployment("web", NS)
    check([c.name for c in got.spec.template.spec.containers] == ["web", "sidecar"], "containers")

    got.spec.replicas = 3
    replaced = apps.replace_namespaced_deployment("web", NS, got)
    check(replaced.spec.replicas == 3, "replace sets replicas")
    check(replaced.metadata.generation == 2, "a spec change bumps the generation")

    # Strategic merge: containers merge by name, so only "web" changes and "sidecar" stays.
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.27", "env": [{"name": "EXTRA", "value": "b"}]}
                    ]
                }
            }
        }
    }
    strategic = apps.patch_namespaced_deployment("web", NS, patch, _content_type=STRATEGIC)
    containers = strategic.spec.template.spec.containers
    check([c.name for c in containers] == ["web", "sidecar"], f"strategic keeps the list: {containers}")
    check(containers[0].image == "nginx:1.27", "strategic patch sets the image")
    check(
        sorted(e.name for e in containers[0].env) == ["EXTRA", "MODE"],
        f"env merges by name: {containers[0].env}",
    )

    # Merge patch replaces lists wholesale.
    merge = {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "nginx:1.27"}]}}}}
    merged = apps.patch_namespaced_deployment("web", NS, merge, _content_type=MERGE)
    check(
        [c.name for c in merged.spec.template.spec.containers] == ["only"],
        "merge patch replaces the containers list",
    )

    scaled = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    check(scaled.spec.replicas == 2, "scale subresource")

    deps = apps.list_namespaced_deployment(NS)
    check([d.metadata.name for d in deps.items] == ["web"], "list Deployments")

    apps.delete_namespaced_deployment("web", NS)
    expect_status(404, apps.read_namespaced_deployment, "web", NS)


def test_selectors(core):
    for i in range(6):
        core.create_namespaced_config_map(
            NS,
            configmap(f"sel-{i}", {"i": str(i)}, {"group": "even" if i % 2 == 0 else "odd", "sel": "yes"}),
        )
    names = lambda lst: sorted(o.metadata.name for o in lst.items)  # noqa: E731
    even = core.list_namespaced_config_map(NS, label_selector="group=even")
    check(names(even) == ["sel-0", "sel-2", "sel-4"], f"label selector: {names(even)}")
    notin = core.list_namespaced_config_map(NS, label_selector="sel=yes,group notin (even)")
    check(names(notin) == ["sel-1", "sel-3", "sel-5"], f"set-based selector: {names(notin)}")
    by_name = core.list_namespaced_config_map(NS, field_selector="metadata.name=sel-3")
    check(names(by_name) == ["sel-3"], f"field selector: {names(by_name)}")
    not_name = core.list_namespaced_config_map(
        NS, label_selector="sel=yes", field_selector="metadata.name!=sel-0"
    )
    check(len(not_name.items) == 5, f"field != and label together: {names(not_name)}")
    everywhere = core.list_config_map_for_all_namespaces(label_selector="group=odd")
    check(names(everywhere) == ["sel-1", "sel-3", "sel-5"], "cluster-wide list with a selector")

    page = core.list_namespaced_config_map(NS, label_selector="sel=yes", limit=4)
    check(len(page.items) == 4 and page.metadata._continue, "limit gives a continue token")
    rest = core.list_namespaced_config_map(
        NS, label_selector="sel=yes", limit=4, _continue=page.metadata._continue
    )
    check(len(rest.items) == 2 and not rest.metadata._continue, "the continue token finishes the list")

    core.delete_collection_namespaced_config_map(NS, label_selector="sel=yes")
    left = core.list_namespaced_config_map(NS, label_selector="sel=yes")
    check(left.items == [], f"deletecollection with a selector: {names(left)}")


def test_watch(core):
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    w = watch.Watch()
    events = []
    ready = threading.Event()

    def consume():
        stream = w.stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=rv,
            label_selector="watched=yes",
            timeout_seconds=20,
        )
        ready.set()
        for event in stream:
            events.append((event["type"], event["object"]))
            if event["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(5)
    # From the list's resourceVersion, the watch misses nothing even if it connects late.
    core.create_namespaced_config_map(NS, configmap("w", {"v": "1"}, {"watched": "yes"}))
    core.create_namespaced_config_map(NS, configmap("unwatched", {"v": "1"}, {"watched": "no"}))
    core.patch_namespaced_config_map("w", NS, {"data": {"v": "2"}}, _content_type=MERGE)
    core.delete_namespaced_config_map("w", NS)
    core.delete_namespaced_config_map("unwatched", NS)
    thread.join(25)
    check(not thread.is_alive(), "the watch ends after DELETED")
    kinds = [(t, o.metadata.name) for t, o in events]
    check(kinds == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")], f"watch events: {kinds}")
    check(isinstance(events[0][1], client.V1ConfigMap), "watch objects are typed")
    check(events[1][1].data == {"v": "2"}, "MODIFIED carries the new object")
    check(
        int(events[2][1].metadata.resource_version) > int(events[1][1].metadata.resource_version),
        "resourceVersions grow",
    )


def test_errors(core):
    e = expect_status(404, core.read_namespaced_config_map, "missing", NS)
    check('"reason":"NotFound"' in e.body.replace(" ", ""), f"a 404 is a NotFound Status: {e.body}")
    core.create_namespaced_config_map(NS, configmap("dup", {}))
    e = expect_status(409, core.create_namespaced_config_map, NS, configmap("dup", {}))
    check('"reason":"AlreadyExists"' in e.body.replace(" ", ""), f"a 409 is AlreadyExists: {e.body}")
    expect_status(404, core.create_namespaced_config_map, "no-such-namespace", configmap("x", {}))
    expect_status(422, core.create_namespaced_config_map, NS, configmap("Not_A_Name", {}))
    core.delete_namespaced_config_map("dup", NS)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: client_test.py KUBECONFIG")
    config.load_kube_config(config_file=sys.argv[1], context="kcluster-standalone")
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    version = client.VersionApi().get_code()
    check(version.major == "1", f"/version: {version}")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

    tests = [
        ("ConfigMap CRUD", lambda: test_configmap_crud(core)),
        ("Deployment CRUD", lambda: test_deployment_crud(apps)),
        ("selectors", lambda: test_selectors(core)),
        ("watch", lambda: test_watch(core)),
        ("errors", lambda: test_errors(core)),
    ]
    passed = 0
    for name, fn in tests:
        started = time.monotonic()
        fn()
        passed += 1
        print(f"ok: {name} ({time.monotonic() - started:.2f}s)", flush=True)
    print(f"python: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
