"""The official Python `kubernetes` client's CustomObjectsApi against kcluster's API server.

Run by tests/apiserver_crds.rs as `python3 tests/python/crds_test.py KUBECONFIG` against a
standalone server: a CustomResourceDefinition created through ApiextensionsV1Api and waited for
(Established), then custom objects created, read, patched (spec and /status), watched, listed
with a label selector and deleted, and the error codes callers branch on (404, 409, 422).
"""

import sys
import threading
import time

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:
    sys.exit(f"the kubernetes module is missing ({e}): python3 -m pip install kubernetes==37.0.2")

GROUP, VERSION, PLURAL, NS = "stable.example.com", "v1", "crontabs", "default"


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


def definition():
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "cronSpec": {"type": "string", "pattern": r"^(\S+ ){4}\S+$"},
                        "image": {"type": "string"},
                        "replicas": {"type": "integer", "default": 1}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}},
            }],
        },
    }


def crontab(name, spec, labels=None):
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CronTab",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    ext = client.ApiextensionsV1Api()
    api = client.CustomObjectsApi()

    ext.create_custom_resource_definition(definition())
    deadline = time.time() + 30
    while True:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conds = {c.type: c.status for c in (crd.status.conditions or [])}
        if conds.get("Established") == "True":
            break
        check(time.time() < deadline, f"the definition never became Established: {conds}")
        time.sleep(0.2)
    check(crd.status.accepted_names.kind == "CronTab", f"accepted names: {crd.status.accepted_names}")

    made = api.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL,
        crontab("nightly", {"cronSpec": "* * * * */5", "image": "cron:1"}, {"team": "a"}))
    check(made["spec"]["replicas"] == 1, f"defaulted replicas: {made['spec']}")
    expect_status(409, api.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
                  crontab("nightly", {"cronSpec": "* * * * */5"}))
    bad = expect_status(422, api.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
                        crontab("bad", {"cronSpec": "nonsense"}))
    check("spec.cronSpec" in bad.body, f"the 422 names the field: {bad.body}")

    # The watch starts with the existing object (ADDED); the writes below come after it.
    events = []

    def watcher():
        w = watch.Watch()
        for ev in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
                           timeout_seconds=30):
            events.append((ev["type"], ev["object"]["metadata"]["name"],
                           ev["object"].get("status", {}).get("ready")))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not events:
        check(time.time() < deadline, "the watch never delivered the existing object")
        time.sleep(0.1)

    patched = api.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "nightly",
                                                 {"spec": {"image": "cron:2"}})
    check(patched["spec"]["image"] == "cron:2", f"patched spec: {patched['spec']}")
    status = api.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "nightly",
                                                       {"status": {"ready": True}})
    check(status["status"]["ready"] is True, f"patched status: {status.get('status')}")

    got = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "nightly")
    check(got["status"]["ready"] is True and got["spec"]["image"] == "cron:2", f"read back: {got}")
    listed = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector="team=a")
    check([i["metadata"]["name"] for i in listed["items"]] == ["nightly"], f"selected: {listed}")
    listed = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector="team=b")
    check(listed["items"] == [], f"selected nothing: {listed}")

    api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "nightly")
    expect_status(404, api.get_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "nightly")
    t.join(25)
    kinds = [e[0] for e in events]
    check(kinds[:1] == ["ADDED"] and "DELETED" in kinds, f"watch events: {events}")
    check(("MODIFIED", "nightly", True) in events, f"the status change was watched: {events}")
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
