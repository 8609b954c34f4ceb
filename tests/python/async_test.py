"""The Python client's asyncio flavour (`kubernetes.aio`, in the same pinned wheel) against a
kcluster cluster: a watch that sees a write made during it, and exec over WebSocket — the aio
client offers only `v4.channel.k8s.io` — with the output read whole and the exit code read from
the status on channel 3. The aio client has no port-forward, so there is none to check.

Run by tests/python_client.rs as
`python3 tests/python/async_test.py KUBECONFIG CONTEXT POD` with POD a running busybox pod in
`default`; exits non-zero with the failed check's message.
"""

import asyncio
import sys

from kubernetes.aio import client, config, watch
from kubernetes.aio.stream import WsApiClient

NS = "default"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def check_watch(core):
    listed = await core.list_namespaced_config_map(NS)
    seen = []

    async def follow():
        w = watch.Watch()
        async with w.stream(core.list_namespaced_config_map, NS,
                            resource_version=listed.metadata.resource_version,
                            timeout_seconds=30) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name))
                if event["object"].metadata.name == "async-watched":
                    return

    # The watch starts at the list's resourceVersion, so it sees the create whenever its
    # request arrives: no need to wait for it before creating.
    task = asyncio.create_task(follow())
    await core.create_namespaced_config_map(
        NS, {"metadata": {"name": "async-watched"}, "data": {"a": "1"}})
    await asyncio.wait_for(task, 30)
    check(("ADDED", "async-watched") in seen, f"the watch saw {seen}")
    await core.delete_namespaced_config_map("async-watched", NS)


async def check_exec(api_client, pod):
    core = client.CoreV1Api(api_client=api_client)
    out = await core.connect_get_namespaced_pod_exec(
        pod, NS, command=["/bin/sh", "-c", "echo out; echo err >&2"],
        stderr=True, stdin=False, stdout=True, tty=False)
    check("out" in out and "err" in out, f"exec output: {out!r}")
    ws = await core.connect_get_namespaced_pod_exec_without_preload_content(
        pod, NS, command=["/bin/sh", "-c", "exit 3"],
        stderr=True, stdin=False, stdout=True, tty=False)
    code = None
    async with ws as conn:
        async for msg in conn:
            data = msg.data
            if isinstance(data, str):
                data = data.encode()
            if data and data[0] == 3:
                code = WsApiClient.parse_error_data(data[1:].decode())
    check(code == 3, f"exit code from the status on channel 3: {code}")


async def main():
    kubeconfig, context, pod = sys.argv[1:4]
    await config.load_kube_config(config_file=kubeconfig, context=context)
    async with client.ApiClient() as api:
        await check_watch(client.CoreV1Api(api_client=api))
        print("ok: async watch")
    async with WsApiClient() as ws_api:
        await check_exec(ws_api, pod)
        print("ok: async exec over v4.channel.k8s.io")


if __name__ == "__main__":
    asyncio.run(main())
