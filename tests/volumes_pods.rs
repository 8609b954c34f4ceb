//! Pod volumes end to end on a real cluster: what containers see of configMap, secret,
//! downwardAPI, projected service-account, emptyDir (memory-backed too), hostPath, subPath and
//! claim volumes, read back through termination messages; FailedMount in kubelet's words until
//! the missing ConfigMap appears; an updated ConfigMap reaching a running pod.

mod common;

use std::time::Duration;

use common::*;

const IMAGE: &str = "kcluster-e2e/volumes-busybox:1";

fn manifests(image: &str) -> String {
    r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, other: x}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: files, labels: {tier: backend}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "echo sub > /scratch/logs/files/x; echo written > /data/proof; echo \"$(cat /cfg/greet)|$(stat -L -c %a /cfg/greet)|$(ls /cfg | wc -l)|$(cat /sec/password)|$(cat /info/name)|$(cat /info/labels)|$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)|$(cut -c1-3 /var/run/secrets/kubernetes.io/serviceaccount/token)|$(grep -c BEGIN /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)|$(awk '$2==\"/mem\"{print $1}' /proc/mounts)|$(cat /logs/x 2>/dev/null || echo none)|$(touch /cfg/new 2>/dev/null && echo rw || echo ro)\" > /dev/termination-log"]
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
    - {name: info, mountPath: /info}
    - {name: mem, mountPath: /mem}
    - {name: scratch, mountPath: /scratch}
    - {name: scratch, mountPath: /logs, subPathExpr: "logs/$(POD)"}
    - {name: data, mountPath: /data}
  volumes:
  - name: cfg
    configMap: {name: settings, items: [{key: greeting, path: greet, mode: 0400}]}
  - name: sec
    secret: {secretName: creds}
  - name: info
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 8Mi}
  - name: scratch
    emptyDir: {}
  - name: data
    persistentVolumeClaim: {claimName: data}
---
apiVersion: v1
kind: Pod
metadata: {name: waits}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "cat /late/k > /dev/termination-log"]
    volumeMounts: [{name: late, mountPath: /late}]
  volumes:
  - {name: late, configMap: {name: late}}
---
apiVersion: v1
kind: Pod
metadata: {name: follower}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "until grep -q v2 /cfg/greeting; do sleep 1; done; cat /cfg/greeting > /dev/termination-log"]
    volumeMounts: [{name: cfg, mountPath: /cfg}]
  volumes:
  - {name: cfg, configMap: {name: settings}}
---
apiVersion: v1
kind: Pod
metadata: {name: badhost}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: IMAGE, command: ["true"], volumeMounts: [{name: h, mountPath: /h}]}
  volumes:
  - {name: h, hostPath: {path: /etc/hostname, type: Directory}}
"#
    .replace("IMAGE", image)
}

fn wait_message(cluster: &Cluster, pod: &str, timeout: Duration) -> String {
    cluster
        .wait_for(
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].state.terminated.message}",
            ],
            timeout,
            |m| !m.is_empty(),
        )
        .trim()
        .to_string()
}

#[test]
fn containers_see_their_volumes() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("vol");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);
    // Pods need their namespace's service account before they are admitted with its volume.
    cluster.wait_for(
        &["get", "serviceaccount", "default", "-o", "name"],
        Duration::from_secs(60),
        |s| !s.is_empty(),
    );
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests(&tag));
    assert!(out.status.success(), "apply failed: {}", text(&out));

    let message = wait_message(&cluster, "files", Duration::from_secs(120));
    let fields: Vec<&str> = message.split('|').collect();
    assert_eq!(
        fields,
        vec![
            "hello",
            "400",
            "1",
            "s3cret",
            "files",
            "tier=\"backend\"",
            "default",
            "eyJ",
            "1",
            "tmpfs",
            "sub",
            "ro"
        ],
        "{message}"
    );
    // The claim's volume outlives the pod: a second pod on it reads what the first wrote.
    let reader = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: {tag}, command: [sh, -c, \"cat /data/proof > /dev/termination-log\"], volumeMounts: [{{name: d, mountPath: /data}}]}}\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: data}}}}]\n"
    );
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &reader);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    assert_eq!(
        wait_message(&cluster, "reader", Duration::from_secs(90)),
        "written"
    );
    assert_eq!(
        cluster.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]),
        "Bound"
    );

    // A missing ConfigMap: FailedMount in kubelet's words, then the pod runs once it exists.
    cluster.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=waits,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        Duration::from_secs(60),
        |m| {
            m.contains(
                "MountVolume.SetUp failed for volume \"late\" : configmap \"late\" not found",
            )
        },
    );
    cluster.kubectl_ok(&["create", "configmap", "late", "--from-literal=k=arrived"]);
    assert_eq!(
        wait_message(&cluster, "waits", Duration::from_secs(90)),
        "arrived"
    );

    cluster.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=badhost,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        Duration::from_secs(60),
        |m| m.contains("hostPath type check failed: /etc/hostname is not a directory"),
    );

    // An update reaches a running pod's mounted files (kubelet's refresh runs every minute).
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/follower",
        "--timeout=90s",
    ]);
    cluster.kubectl_ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"v2"}}"#,
    ]);
    assert_eq!(
        wait_message(&cluster, "follower", Duration::from_secs(150)),
        "v2"
    );
}
