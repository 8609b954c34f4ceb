//! Per-node CPU and memory limits end to end: `--node-cpus/--node-memory` become the node
//! containers' Docker limits, the Nodes report them as capacity (allocatable less the eviction
//! threshold), the scheduler refuses a pod the node cannot hold, a memory hog is OOM-killed
//! inside its node, `kubectl top nodes` measures against the node's size, and `kcluster node
//! update` changes a running node. Bad sizes are refused before anything exists.

mod common;

use std::time::Duration;

use common::*;

const IMAGE: &str = "kcluster-e2e/limits-busybox:1";

fn docker_inspect(container: &str, format: &str) -> String {
    let out = docker(&["inspect", "--format", format, container]);
    assert!(
        out.status.success(),
        "docker inspect failed: {}",
        text(&out)
    );
    stdout(&out).trim().to_string()
}

/// The row of a table whose first column is `name`, split on whitespace.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

/// A column of `kcluster get nodes` for one node.
fn get_nodes_column(sandbox: &Sandbox, cluster: &str, node: &str, column: &str) -> String {
    let table = stdout(&sandbox.kcluster(&["get", "nodes", "--name", cluster]));
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let index = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no {column} column in:\n{table}"));
    row(&table, node)[index].clone()
}

fn node_field(cluster: &Cluster, node: &str, path: &str) -> String {
    cluster.kubectl_ok(&["get", "node", node, "-o", &format!("jsonpath={{{path}}}")])
}

/// `123Mi` / `1Gi` / `456Ki` as kubectl top prints memory → bytes.
fn top_bytes(text: &str) -> u64 {
    for (suffix, shift) in [("Ki", 10), ("Mi", 20), ("Gi", 30)] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().expect("a number") << shift;
        }
    }
    text.parse()
        .unwrap_or_else(|_| panic!("not a memory value: {text:?}"))
}

fn percent(text: &str) -> u64 {
    text.strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a percentage: {text:?}"))
}

fn millicores(text: &str) -> u64 {
    match text.strip_suffix('m') {
        Some(m) => m.parse().expect("millicores"),
        None => text.parse::<u64>().expect("cores") * 1000,
    }
}

/// Whether the node container's memory cgroup, as the Docker host sees it, reached its limit:
/// v1 `memory.max_usage_in_bytes` at `memory.limit_in_bytes` (the peak; `failcnt` is not kept
/// for parents on every kernel), v2 a non-zero "max" in `memory.events`.
fn node_reached_memory_limit(container: &str) -> Result<(), String> {
    let pid = docker_inspect(container, "{{.State.Pid}}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("cannot read the cgroups of {container} (pid {pid}): {e}"));
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "memory")
            };
            wanted.then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no memory cgroup for {container}:\n{cgroups}"));
    let read = |file: String| {
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
    };
    if v2 {
        // The node moves its own processes into a leaf, `init`, below its cgroup.
        let path = path.strip_suffix("/init").unwrap_or(&path);
        let events = read(format!("/sys/fs/cgroup{path}/memory.events"));
        let hits: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
            .unwrap_or(0);
        if hits > 0 {
            Ok(())
        } else {
            Err(format!("memory.events of the node:\n{events}"))
        }
    } else {
        let dir = format!("/sys/fs/cgroup/memory{path}");
        let number = |file: &str| -> u64 {
            read(format!("{dir}/{file}"))
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{dir}/{file} is not a number"))
        };
        let (peak, limit) = (
            number("memory.max_usage_in_bytes"),
            number("memory.limit_in_bytes"),
        );
        if peak + (4 << 20) >= limit {
            Ok(())
        } else {
            Err(format!(
                "the node's peak {peak} stayed below its limit {limit}"
            ))
        }
    }
}

#[test]
fn node_limits_shape_capacity_scheduling_oom_top_and_update() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("nl");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(
        &sandbox,
        &name,
        &["--workers", "1", "--node-cpus", "1", "--node-memory", "1Gi"],
    );
    cluster.load_image(&tag);
    let server = format!("{name}-server-0");
    let worker = format!("{name}-worker-0");

    // Docker holds the limits, swap included; `kcluster get nodes` shows them.
    for node in [&server, &worker] {
        assert_eq!(
            docker_inspect(
                node,
                "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"
            ),
            "1000000000 1073741824 1073741824"
        );
        assert_eq!(get_nodes_column(&sandbox, &name, node, "CPUS"), "1");
        assert_eq!(get_nodes_column(&sandbox, &name, node, "MEMORY"), "1Gi");
    }

    // The Nodes report the limits as capacity; allocatable keeps back the default
    // memory.available<100Mi eviction threshold.
    for node in [&server, &worker] {
        assert_eq!(node_field(&cluster, node, ".status.capacity.cpu"), "1");
        // The API server writes quantities in canonical form, as kube-apiserver does.
        assert_eq!(node_field(&cluster, node, ".status.capacity.memory"), "1Gi");
        assert_eq!(node_field(&cluster, node, ".status.allocatable.cpu"), "1");
        assert_eq!(
            node_field(&cluster, node, ".status.allocatable.memory"),
            "924Mi"
        );
    }
    let describe = cluster.kubectl_ok(&["describe", "node", &worker]);
    assert!(describe.contains("Capacity:"), "{describe}");

    // A pod asking for 2 CPUs fits no 1-CPU node: Pending, in the scheduler's words.
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: big}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {tag}
    command: ["sleep", "3600"]
    resources: {{requests: {{cpu: "2"}}}}
"#
        ),
    );
    assert!(out.status.success(), "apply failed: {}", text(&out));
    // A node that has just turned Ready may still carry the not-ready taint at the first
    // attempt: the scheduler retries, and the message that counts is the one for Ready nodes.
    cluster.wait_pod_events("big", |e| {
        e.contains("FailedScheduling: 0/2 nodes are available: 2 Insufficient cpu.")
    });
    assert_eq!(
        cluster.kubectl_ok(&[
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.phase} {.status.conditions[?(@.type==\"PodScheduled\")].reason}"
        ]),
        "Pending Unschedulable"
    );

    // More memory than a node has: the same, for memory.
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: bigmem}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {tag}
    command: ["sleep", "3600"]
    resources: {{requests: {{memory: 2Gi}}}}
"#
        ),
    );
    assert!(out.status.success(), "apply failed: {}", text(&out));
    // A node that has just turned Ready may still carry the not-ready taint at the first
    // attempt: the scheduler retries, and the message that counts is the one for Ready nodes.
    cluster.wait_pod_events("bigmem", |e| {
        e.contains("FailedScheduling: 0/2 nodes are available: 2 Insufficient memory.")
    });

    // `kubectl top nodes` measures against the node's own size: a pod holding 300Mi in a
    // memory-backed emptyDir makes a third of the worker's memory, never a sliver of the host's.
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: filler}}
spec:
  terminationGracePeriodSeconds: 0
  nodeSelector: {{kubernetes.io/hostname: {worker}}}
  volumes: [{{name: mem, emptyDir: {{medium: Memory}}}}]
  containers:
  - name: c
    image: {tag}
    command: ["sh", "-c", "dd if=/dev/zero of=/mem/fill bs=1M count=300 && touch /mem/done && sleep 3600"]
    volumeMounts: [{{name: mem, mountPath: /mem}}]
    readinessProbe: {{exec: {{command: ["test", "-f", "/mem/done"]}}, periodSeconds: 1}}
"#
        ),
    );
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.wait_pod_ready("filler");
    let allocatable_memory = (1048576u64 - 102400) << 10;
    let mut last = String::new();
    wait_until(
        "kubectl top nodes to see the filler",
        Duration::from_secs(120),
        || {
            let out = cluster.kubectl(&["top", "nodes"]);
            last = text(&out);
            if !out.status.success() {
                return Err(last.clone());
            }
            let table = stdout(&out);
            let cols = row(&table, &worker);
            let (cpu, cpu_pct, memory, memory_pct) = (
                millicores(&cols[1]),
                percent(&cols[2]),
                top_bytes(&cols[3]),
                percent(&cols[4]),
            );
            if memory < 300 << 20 {
                return Err(format!("not yet 300Mi:\n{table}"));
            }
            // kubectl's percentages: usage over the Node's allocatable (1 CPU, 924Mi).
            let want_memory_pct = memory * 100 / allocatable_memory;
            assert!(
                memory_pct.abs_diff(want_memory_pct) <= 1 && memory_pct >= 32,
                "memory% against the node's limit:\n{table}"
            );
            assert!(
                cpu_pct.abs_diff(cpu / 10) <= 1,
                "cpu% against the node's 1 CPU:\n{table}"
            );
            Ok(())
        },
    );
    // Less memory than the node uses now is refused before Docker is asked (the kernel would
    // otherwise OOM-kill its pods), and changes nothing.
    let out = sandbox.kcluster(&["node", "update", &worker, "--memory", "256Mi"]);
    assert!(
        !out.status.success(),
        "shrinking below the node's use was accepted"
    );
    assert!(
        text(&out).contains("uses") && text(&out).contains("more than 256Mi"),
        "{}",
        text(&out)
    );
    assert_eq!(
        docker_inspect(&worker, "{{.HostConfig.Memory}}"),
        "1073741824"
    );
    cluster.kubectl_ok(&["delete", "pod", "filler", "--wait=true"]);

    // Bad sizes for a running node are refused and change nothing.
    let host_cpus: u64 = stdout(&docker(&["info", "--format", "{{.NCPU}}"]))
        .trim()
        .parse()
        .expect("docker info NCPU");
    let too_many = (host_cpus + 1).to_string();
    let out = sandbox.kcluster(&["node", "update", &worker, "--cpus", &too_many]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("more than the {host_cpus}")),
        "{}",
        text(&out)
    );
    let out = sandbox.kcluster(&["node", "update", &worker, "--memory", "16Mi"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("needs to run"), "{}", text(&out));
    assert_eq!(
        docker_inspect(&worker, "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}"),
        "1000000000 1073741824"
    );

    // A live update: Docker changes the cgroup, the Node follows at its next heartbeat, and
    // the 2-CPU pod that waited now fits the worker.
    assert!(
        host_cpus >= 2,
        "this test grows a node to 2 CPUs; the Docker host has only {host_cpus}"
    );
    let cpus = "2";
    let out = sandbox.kcluster(&[
        "node", "update", &worker, "--cpus", cpus, "--memory", "1536Mi",
    ]);
    assert!(out.status.success(), "node update failed: {}", text(&out));
    assert_eq!(
        docker_inspect(
            &worker,
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"
        ),
        format!("{}000000000 1610612736 1610612736", cpus)
    );
    wait_eq(
        "the worker's capacity after the update",
        || {
            node_field(
                &cluster,
                &worker,
                ".status.capacity.cpu} {.status.capacity.memory",
            )
        },
        format!("{cpus} 1536Mi"),
    );
    assert_eq!(
        get_nodes_column(&sandbox, &name, &worker, "MEMORY"),
        "1536Mi"
    );
    assert_eq!(get_nodes_column(&sandbox, &name, &server, "MEMORY"), "1Gi");
    cluster.wait_for(
        &["get", "pod", "big", "-o", "jsonpath={.spec.nodeName}"],
        Duration::from_secs(120),
        |n| n == worker,
    );

    // Last (its OOM may raise MemoryPressure for 5 minutes): a process without a memory
    // limit grows until the node's limit stops it. The kernel kills it inside the node, the
    // pod says OOMKilled, the node container itself lives on.
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  nodeSelector: {{kubernetes.io/hostname: {worker}}}
  containers:
  - name: c
    image: {tag}
    command: ["tail", "/dev/zero"]
"#
        ),
    );
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.wait_for(
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}",
        ],
        Duration::from_secs(120),
        |s| s == "OOMKilled",
    );
    assert_eq!(
        cluster.kubectl_ok(&["get", "pod", "hog", "-o", "jsonpath={.status.phase}"]),
        "Failed"
    );
    assert_eq!(
        docker_inspect(
            &worker,
            "{{.State.Status}} {{.State.OOMKilled}} {{.RestartCount}}"
        ),
        "running false 0",
        "the node container itself must not be killed"
    );
    // The kill came from the node's limit: its cgroup (as the host sees it) hit its limit.
    if let Err(e) = node_reached_memory_limit(&worker) {
        panic!("the OOM kill did not come from the node's limit: {e}");
    }
    assert_eq!(
        node_field(
            &cluster,
            &worker,
            ".status.conditions[?(@.type==\"Ready\")].status"
        ),
        "True"
    );
}

#[test]
fn bad_node_sizes_are_refused_before_anything_is_created() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("nlbad");
    let nothing_created = |name: &str| {
        assert!(
            docker_objects("container", name).is_empty()
                && docker_objects("network", name).is_empty()
                && docker_objects("volume", name).is_empty(),
            "something was created for {name}"
        );
        assert!(!sandbox.kubeconfig().exists(), "kubeconfig written");
    };
    let refused = |args: &[&str], needles: &[&str]| {
        let mut all = vec!["create", "--name", name.as_str()];
        all.extend_from_slice(args);
        let out = sandbox.kcluster(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = text(&out);
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: no {needle:?} in:\n{err}");
        }
        nothing_created(&name);
    };

    refused(
        &["--node-cpus", "lots"],
        &["--node-cpus", "\"lots\"", "1500m"],
    );
    refused(
        &["--node-memory", "4GB"],
        &["--node-memory", "\"4GB\"", "4Gi"],
    );
    let host_cpus: u64 = stdout(&docker(&["info", "--format", "{{.NCPU}}"]))
        .trim()
        .parse()
        .expect("docker info NCPU");
    let too_many = (host_cpus + 1).to_string();
    refused(
        &["--node-cpus", &too_many],
        &[
            "--node-cpus",
            &format!("more than the {host_cpus} this Docker host has"),
        ],
    );
    refused(
        &["--node-memory", "64Mi"],
        &[
            "--node-memory",
            "64Mi is less than the server node needs",
            "at least 256Mi",
        ],
    );
    refused(&["--node-cpus", "10m"], &["--node-cpus", "at least 0.1"]);

    // The config file names the field at fault.
    let config = sandbox.path().join("sizes.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nname: {name}\nnodes:\n  - role: server\n  - role: worker\n    resources:\n      cpus: 1\n      memory: 512Mi\n      systemReserved: {{cpu: 500m, memory: 300Mi}}\n      kubeReserved: {{cpu: 500m, memory: 200Mi}}\n"
        ),
    )
    .unwrap();
    refused(
        &["--config", config.to_str().unwrap()],
        &["nodes[1].resources", "leave nothing of the node's 1 CPU"],
    );
    std::fs::write(
        &config,
        format!(
            "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nname: {name}\nnodes:\n  - role: server\n  - role: worker\n    resources: {{memory: 64Mi}}\n"
        ),
    )
    .unwrap();
    refused(
        &["--config", config.to_str().unwrap()],
        &["nodes[1].resources.memory", "less than a worker node needs"],
    );
    std::fs::write(
        &config,
        format!(
            "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nname: {name}\nnodes:\n  - role: server\n    resources: {{cpu: 2}}\n"
        ),
    )
    .unwrap();
    refused(&["--config", config.to_str().unwrap()], &["cpu", "line"]);

    // `node update` of something that is not a node, or without a size.
    let out = sandbox.kcluster(&["node", "update", &format!("{name}-worker-0"), "--cpus", "1"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no kcluster node named"),
        "{}",
        text(&out)
    );
    let out = sandbox.kcluster(&["node", "update", &format!("{name}-worker-0")]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--cpus and/or --memory"),
        "{}",
        text(&out)
    );
    let out = sandbox.kcluster(&["node", "update", "x", "--memory", "lots"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--memory: \"lots\""), "{}", text(&out));
}

/// A node container's working set as kubelet counts it (usage − inactive file pages), read on
/// the Docker host from the container's memory cgroup.
fn node_working_set(container: &str) -> u64 {
    let pid = docker_inspect(container, "{{.State.Pid}}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroups");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "memory")
            };
            wanted.then(|| path.to_string())
        })
        .expect("a memory cgroup");
    let (usage_file, stat_file, inactive_key) = if v2 {
        let path = path.strip_suffix("/init").unwrap_or(&path).to_string();
        (
            format!("/sys/fs/cgroup{path}/memory.current"),
            format!("/sys/fs/cgroup{path}/memory.stat"),
            "inactive_file",
        )
    } else {
        (
            format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"),
            format!("/sys/fs/cgroup/memory{path}/memory.stat"),
            "total_inactive_file",
        )
    };
    let usage: u64 = std::fs::read_to_string(usage_file)
        .expect("usage")
        .trim()
        .parse()
        .expect("a number");
    let inactive: u64 = std::fs::read_to_string(stat_file)
        .expect("memory.stat")
        .lines()
        .find_map(|l| l.strip_prefix(inactive_key)?.trim().parse().ok())
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// The measurement behind the minimum node sizes (MIN_SERVER_MEMORY, MIN_WORKER_MEMORY): a
/// 1+1 cluster at exactly those sizes, an image loaded and a pod running on each node; prints
/// each node's working set and the memory left above the default 100Mi eviction threshold.
/// `cargo test --test node_limits -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_node_working_sets_at_the_minimum_sizes() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("nlmin");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let config = sandbox.path().join("minimum.yaml");
    std::fs::write(
        &config,
        "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nnodes:\n  - role: server\n    resources: {memory: 256Mi}\n  - role: worker\n    resources: {memory: 192Mi}\n",
    )
    .unwrap();
    let cluster = Cluster::create(&sandbox, &name, &["--config", config.to_str().unwrap()]);
    cluster.load_image(&tag);
    let nodes = [format!("{name}-server-0"), format!("{name}-worker-0")];
    for (i, node) in nodes.iter().enumerate() {
        let out = cluster.kubectl_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  nodeName: {node}\n  containers:\n  - {{name: c, image: {tag}, command: [sleep, '3600']}}\n"
            ),
        );
        assert!(out.status.success(), "apply failed: {}", text(&out));
        cluster.wait_pod_ready(&format!("p{i}"));
    }
    // Measured once the agents have sampled the pods (kubectl top shows both).
    wait_until(
        "kubectl top pods to show both pods",
        Duration::from_secs(120),
        || {
            let out = cluster.kubectl(&["top", "pods"]);
            let table = stdout(&out);
            if out.status.success() && table.contains("p0") && table.contains("p1") {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    for node in &nodes {
        let limit: u64 = docker_inspect(node, "{{.HostConfig.Memory}}")
            .parse()
            .expect("a limit");
        let ws = node_working_set(node);
        let pressure = node_field(
            &cluster,
            node,
            ".status.conditions[?(@.type==\"MemoryPressure\")].status",
        );
        println!(
            "{node}: limit {} MiB, working set {:.1} MiB, above the eviction threshold {:.1} MiB, MemoryPressure {pressure}",
            limit >> 20,
            ws as f64 / 1048576.0,
            (limit as f64 - ws as f64) / 1048576.0 - 100.0
        );
    }
}
