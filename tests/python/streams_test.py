"""The official Python client's WebSocket streams against a kcluster cluster.

Run by tests/python_client.rs as
`python3 tests/python/streams_test.py KUBECONFIG CONTEXT BUSYBOX_IMAGE ECHO_IMAGE`; exits
non-zero with the failed check's message. Covers `stream()` exec over v5.channel.k8s.io (what
the client offers first) and v4.channel.k8s.io (what older servers answer): exit codes from the
status on channel 3 and a close, text and binary stdin, closing stdin (v5), stdout and stderr
kept apart; and `portforward()` over WebSocket channels: two echo ports at once, a refused port
reported on its error channel while the others keep working, the WebSocket closed when the
client closes its sockets.
"""

import json
import select
import sys
import time

from kubernetes import client, config
from kubernetes.stream import portforward, stream

NS = "default"
V4 = {"sec-websocket-protocol": "v4.channel.k8s.io"}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_running(core, name):
    deadline = time.time() + 120
    while time.time() < deadline:
        pod = core.read_namespaced_pod(name, NS)
        statuses = pod.status.container_statuses or []
        if pod.status.phase == "Running" and statuses and all(s.ready for s in statuses):
            return
        check(pod.status.phase in ("Pending", "Running"), f"pod {name}: {pod.status}")
        time.sleep(0.5)
    raise AssertionError(f"pod {name} did not become ready: {pod.status}")


def pod(name, image, command, ports=()):
    container = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": command}
    if ports:
        container["startupProbe"] = {"tcpSocket": {"port": ports[-1]}, "periodSeconds": 1,
                                     "failureThreshold": 60}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 1}}


def exec_ws(core, name, command, headers=None, **kwargs):
    opts = dict(stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    opts.update(kwargs)
    if headers:
        opts["_headers"] = headers
    return stream(core.connect_get_namespaced_pod_exec, name, NS, command=command, **opts)


def check_exit_codes(core, name, headers, protocol):
    for command, code in ((["false"], 1), (["/bin/sh", "-c", "sleep 1; exit 3"], 3),
                          (["true"], 0), (["/bin/sh", "-c", "ls /"], 0)):
        ws = exec_ws(core, name, command, headers)
        check(ws.subprotocol == protocol, f"negotiated {ws.subprotocol}, wanted {protocol}")
        check(ws.returncode is None, "no return code while the command runs")
        ws.run_forever(timeout=20)
        check(not ws.is_open(), f"{command}: the server closes the WebSocket after the status")
        check(ws.returncode == code, f"{command} over {protocol}: rc {ws.returncode}, want {code}")


def check_stdin(core, name, headers, protocol):
    ws = exec_ws(core, name, ["/bin/sh"], headers, stdin=True)
    check(ws.subprotocol == protocol, f"negotiated {ws.subprotocol}, wanted {protocol}")
    ws.write_stdin("echo text stdin\n")  # a str goes out as a text message
    check(ws.readline_stdout(timeout=10) == "text stdin", "text stdin reaches the shell")
    ws.write_stdin(b"echo binary stdin >&2\n")
    check(ws.readline_stderr(timeout=10) == "binary stdin", "stderr comes on channel 2")
    check(not ws.peek_stdout(), "nothing stray on stdout")
    ws.write_stdin("exit 4\n")
    ws.run_forever(timeout=20)
    check(not ws.is_open(), "the WebSocket closes when the shell exits")
    check(ws.returncode == 4, f"rc {ws.returncode} after exit 4")


def check_close_stdin(core, name):
    ws = exec_ws(core, name, ["/bin/sh", "-c", "cat; echo done"], stdin=True)
    check(ws.subprotocol == "v5.channel.k8s.io", f"negotiated {ws.subprotocol}")
    ws.write_stdin("before close\n")
    check(ws.readline_stdout(timeout=10) == "before close", "cat echoes stdin")
    ws.close_channel(0)  # v5: 255 0 ends stdin; cat sees end of input
    ws.run_forever(timeout=20)
    check(not ws.is_open(), "the WebSocket closes once cat has exited")
    check(ws.returncode == 0, f"rc {ws.returncode}")
    check("done" in ws.read_all(), "the command went on after its input ended")


def read_exactly(sock, want):
    got = b""
    deadline = time.time() + 30
    while got != want:
        check(time.time() < deadline, f"timed out: got {got!r}, want {want!r}")
        r, _, _ = select.select([sock], [], [], 1)
        if r:
            data = sock.recv(1024)
            check(data != b"", f"unexpected end of stream after {got!r}")
            got += data
            check(want.startswith(got), f"got {got!r}, want {want!r}")


def check_portforward(core, name):
    for round_ in range(3):
        pf = portforward(core.connect_get_namespaced_pod_portforward, name, NS,
                         ports="1234,1235,1236")
        check(pf.connected, "port-forward connects")
        a, b = pf.socket(1234), pf.socket(1235)
        a.setblocking(True)
        b.setblocking(True)
        for sock, port in ((a, 1234), (b, 1235)):
            sent = f"round {round_} port {port}".encode()
            sock.sendall(sent)
            read_exactly(sock, sent)
        refused = pf.socket(1236)
        refused.setblocking(True)
        check(refused.recv(1024) == b"", "a refused port's socket ends")
        check("1236" in (pf.error(1236) or ""), f"the refusal is reported: {pf.error(1236)!r}")
        check(pf.connected, "a refused port leaves the others working")
        for sock in (a, b):
            sent = b"again " + str(sock.fileno()).encode()
            sock.sendall(sent)
            read_exactly(sock, sent)
            sock.close()
        deadline = time.time() + 10
        while pf.connected and time.time() < deadline:
            time.sleep(0.1)
        check(not pf.connected, "the WebSocket ends when every socket is closed")
        check(pf.error(1234) is None and pf.error(1235) is None, "no errors on working ports")


def main():
    kubeconfig, context, busybox, echo = sys.argv[1:5]
    config.load_kube_config(config_file=kubeconfig, context=context)
    core = client.CoreV1Api()
    core.create_namespaced_pod(NS, pod("shell", busybox,
                                       ["/bin/sh", "-c", "while true; do sleep 1; done"]))
    core.create_namespaced_pod(NS, pod("echo", echo, ["python", "-u", "/x.py", "1234", "1235"],
                                       ports=(1234, 1235)))
    wait_running(core, "shell")
    wait_running(core, "echo")
    checks = [
        ("exit codes over v5", lambda: check_exit_codes(core, "shell", None, "v5.channel.k8s.io")),
        ("exit codes over v4", lambda: check_exit_codes(core, "shell", V4, "v4.channel.k8s.io")),
        ("stdin over v5", lambda: check_stdin(core, "shell", None, "v5.channel.k8s.io")),
        ("stdin over v4", lambda: check_stdin(core, "shell", V4, "v4.channel.k8s.io")),
        ("closing stdin", lambda: check_close_stdin(core, "shell")),
        ("port-forward", lambda: check_portforward(core, "echo")),
    ]
    for what, fn in checks:
        fn()
        print(f"ok: {what}")


if __name__ == "__main__":
    main()
