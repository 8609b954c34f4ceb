//! The built-in kinds through the real kubectl against the API server alone (no Docker):
//! discovery, Kubernetes' defaulting, validation messages, ClusterIP/NodePort allocation and the
//! server-side printing of every kind.

mod common;

use common::*;
use serde_json::Value;

/// `kubectl create -f -` without client-side validation (OpenAPI is served by other work).
fn create(server: &ApiServer, yaml: &str) -> std::process::Output {
    server.kubectl_stdin(&["create", "-f", "-", "--validate=false"], yaml)
}

fn create_ok(server: &ApiServer, yaml: &str) {
    let out = create(server, yaml);
    assert!(out.status.success(), "create failed: {}", text(&out));
}

fn get_json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

/// The header line of `kubectl get`, columns separated by single spaces.
fn header(server: &ApiServer, args: &[&str]) -> String {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = server.kubectl_ok(&all);
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cells of the row whose first cell is `name`.
fn row(server: &ApiServer, args: &[&str], name: &str) -> Vec<String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = server.kubectl_ok(&all);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{out}"));
    // Columns are aligned; split on runs of 2+ spaces so cells with one space stay whole.
    let mut cells = Vec::new();
    for part in line.split("  ") {
        let part = part.trim();
        if !part.is_empty() {
            cells.push(part.to_string());
        }
    }
    cells
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
        resources: {limits: {cpu: "0.5", memory: 1024Mi}}
        readinessProbe: {httpGet: {port: 80}}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec:
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: "perl:5.34", command: [perl, -e, "print 1"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: hello}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: hello, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "postgres:16"}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: a, image: "fluentd:v1"}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: c, image: "nginx:1.25"}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  template:
    metadata: {labels: {app: rc}}
    spec:
      containers: [{name: c, image: "nginx:1.25"}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"#;

const OTHERS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: "1", b: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {password: hunter2}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 5Gi}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: vol}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  hostPath: {path: /data}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  ingressClassName: nginx
  tls: [{hosts: [example.com]}]
  rules:
  - host: example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: [{ports: [{port: 53}]}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: pdb}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:custom"}
rules: [{nonResourceURLs: ["/healthz"], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read}
roleRef: {kind: Role, name: reader}
subjects: [{kind: User, name: jane}, {kind: ServiceAccount, name: default, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: custom}
roleRef: {kind: ClusterRole, name: "system:custom", apiGroup: rbac.authorization.k8s.io}
subjects: [{kind: Group, name: devs}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: v1
kind: LimitRange
metadata: {name: lr}
spec:
  limits: [{type: Container, max: {cpu: "2"}}]
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: q}
spec: {hard: {pods: "10"}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bot}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: l}
spec: {holderIdentity: me, leaseDurationSeconds: 15}
---
apiVersion: v1
kind: PodTemplate
metadata: {name: pt}
template:
  metadata: {labels: {a: b}}
  spec:
    containers: [{name: c, image: nginx}]
---
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: db-1}
revision: 1
data: {}
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: hostpath.csi.k8s.io}
spec: {}
"#;

#[test]
fn api_resources_lists_every_kind_with_kubernetes_names() {
    let server = ApiServer::start();
    let out = server.kubectl_ok(&["api-resources", "-o", "wide"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // name, short names (or -), apiVersion, namespaced, kind, in "all"?
    let want: &[(&str, &str, &str, &str, &str, bool)] = &[
        ("configmaps", "cm", "v1", "true", "ConfigMap", false),
        ("endpoints", "ep", "v1", "true", "Endpoints", false),
        ("events", "ev", "v1", "true", "Event", false),
        ("limitranges", "limits", "v1", "true", "LimitRange", false),
        ("namespaces", "ns", "v1", "false", "Namespace", false),
        ("nodes", "no", "v1", "false", "Node", false),
        (
            "persistentvolumeclaims",
            "pvc",
            "v1",
            "true",
            "PersistentVolumeClaim",
            false,
        ),
        (
            "persistentvolumes",
            "pv",
            "v1",
            "false",
            "PersistentVolume",
            false,
        ),
        ("pods", "po", "v1", "true", "Pod", true),
        ("podtemplates", "-", "v1", "true", "PodTemplate", false),
        (
            "replicationcontrollers",
            "rc",
            "v1",
            "true",
            "ReplicationController",
            true,
        ),
        (
            "resourcequotas",
            "quota",
            "v1",
            "true",
            "ResourceQuota",
            false,
        ),
        ("secrets", "-", "v1", "true", "Secret", false),
        (
            "serviceaccounts",
            "sa",
            "v1",
            "true",
            "ServiceAccount",
            false,
        ),
        ("services", "svc", "v1", "true", "Service", true),
        (
            "controllerrevisions",
            "-",
            "apps/v1",
            "true",
            "ControllerRevision",
            false,
        ),
        ("daemonsets", "ds", "apps/v1", "true", "DaemonSet", true),
        (
            "deployments",
            "deploy",
            "apps/v1",
            "true",
            "Deployment",
            true,
        ),
        ("replicasets", "rs", "apps/v1", "true", "ReplicaSet", true),
        (
            "statefulsets",
            "sts",
            "apps/v1",
            "true",
            "StatefulSet",
            true,
        ),
        (
            "horizontalpodautoscalers",
            "hpa",
            "autoscaling/v2",
            "true",
            "HorizontalPodAutoscaler",
            true,
        ),
        ("cronjobs", "cj", "batch/v1", "true", "CronJob", true),
        ("jobs", "-", "batch/v1", "true", "Job", true),
        (
            "leases",
            "-",
            "coordination.k8s.io/v1",
            "true",
            "Lease",
            false,
        ),
        (
            "endpointslices",
            "-",
            "discovery.k8s.io/v1",
            "true",
            "EndpointSlice",
            false,
        ),
        ("events", "ev", "events.k8s.io/v1", "true", "Event", false),
        (
            "ingressclasses",
            "-",
            "networking.k8s.io/v1",
            "false",
            "IngressClass",
            false,
        ),
        (
            "ingresses",
            "ing",
            "networking.k8s.io/v1",
            "true",
            "Ingress",
            false,
        ),
        (
            "networkpolicies",
            "netpol",
            "networking.k8s.io/v1",
            "true",
            "NetworkPolicy",
            false,
        ),
        (
            "poddisruptionbudgets",
            "pdb",
            "policy/v1",
            "true",
            "PodDisruptionBudget",
            false,
        ),
        (
            "clusterrolebindings",
            "-",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRoleBinding",
            false,
        ),
        (
            "clusterroles",
            "-",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRole",
            false,
        ),
        (
            "rolebindings",
            "-",
            "rbac.authorization.k8s.io/v1",
            "true",
            "RoleBinding",
            false,
        ),
        (
            "roles",
            "-",
            "rbac.authorization.k8s.io/v1",
            "true",
            "Role",
            false,
        ),
        (
            "priorityclasses",
            "pc",
            "scheduling.k8s.io/v1",
            "false",
            "PriorityClass",
            false,
        ),
        (
            "csidrivers",
            "-",
            "storage.k8s.io/v1",
            "false",
            "CSIDriver",
            false,
        ),
        (
            "csinodes",
            "-",
            "storage.k8s.io/v1",
            "false",
            "CSINode",
            false,
        ),
        (
            "storageclasses",
            "sc",
            "storage.k8s.io/v1",
            "false",
            "StorageClass",
            false,
        ),
        (
            "volumeattachments",
            "-",
            "storage.k8s.io/v1",
            "false",
            "VolumeAttachment",
            false,
        ),
    ];
    for (name, short, version, namespaced, kind, all) in want {
        let found = lines
            .iter()
            .find(|l| l.first() == Some(name) && l.contains(version) && l.contains(kind));
        let Some(line) = found else {
            panic!("{name} ({version}) missing from api-resources:\n{out}");
        };
        if *short != "-" {
            assert_eq!(line[1], *short, "short name of {name}: {line:?}");
        } else {
            assert_eq!(line[1], *version, "{name} has no short name: {line:?}");
        }
        assert!(line.contains(namespaced), "{name}: {line:?}");
        assert_eq!(
            line.last() == Some(&"all"),
            *all,
            "categories of {name}: {line:?}"
        );
    }

    // deployments/scale answers with autoscaling/v1 Scale, as `kubectl scale` needs.
    let apps: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "--raw", "/apis/apps/v1"])).unwrap();
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .expect("deployments/scale is advertised");
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (
            &Value::from("autoscaling"),
            &Value::from("v1"),
            &Value::from("Scale")
        )
    );
    let core: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "--raw", "/api/v1"])).unwrap();
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for sub in [
        "pods/status",
        "pods/binding",
        "pods/eviction",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "pods/proxy",
        "services/proxy",
        "nodes/proxy",
        "serviceaccounts/token",
        "replicationcontrollers/scale",
    ] {
        assert!(names.contains(&sub), "{sub} not advertised: {names:?}");
    }
    let autoscaling: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "--raw", "/apis/autoscaling"])).unwrap();
    assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
}

#[test]
fn objects_come_back_with_kubernetes_defaults() {
    let server = ApiServer::start();
    create_ok(&server, WORKLOADS);

    let d = get_json(&server, &["deployment", "web"]);
    let spec = &d["spec"];
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["status"], serde_json::json!({}));
    let tpl = &spec["template"];
    assert!(tpl["metadata"]["creationTimestamp"].is_null());
    let pod_spec = &tpl["spec"];
    for (k, v) in [
        ("restartPolicy", "Always"),
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
    ] {
        assert_eq!(pod_spec[k], v, "{k}");
    }
    assert_eq!(pod_spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod_spec["securityContext"], serde_json::json!({}));
    // Templates do not get what only Pods get.
    assert!(pod_spec.get("enableServiceLinks").is_none());
    let c = &pod_spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    let probe = &c["readinessProbe"];
    assert_eq!(
        (
            &probe["timeoutSeconds"],
            &probe["periodSeconds"],
            &probe["successThreshold"],
            &probe["failureThreshold"]
        ),
        (&1.into(), &10.into(), &1.into(), &3.into())
    );
    assert_eq!(probe["httpGet"]["path"], "/");
    assert_eq!(probe["httpGet"]["scheme"], "HTTP");

    let pod = get_json(&server, &["pod", "solo"]);
    let ps = &pod["spec"];
    assert_eq!(ps["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(ps["containers"][0]["resources"], serde_json::json!({}));
    assert_eq!(ps["enableServiceLinks"], true);
    assert_eq!(ps["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(ps["priority"], 0);
    assert_eq!(ps["serviceAccountName"], "default");
    assert_eq!(ps["serviceAccount"], "default");
    let tolerations = ps["tolerations"].as_array().unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tolerations.iter().any(|t| t["key"] == key
                && t["effect"] == "NoExecute"
                && t["operator"] == "Exists"
                && t["tolerationSeconds"] == 300),
            "{key}: {tolerations:?}"
        );
    }
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");

    let job = get_json(&server, &["job", "pi"]);
    let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
    let js = &job["spec"];
    assert_eq!(js["backoffLimit"], 6);
    assert_eq!(js["completions"], 1);
    assert_eq!(js["parallelism"], 1);
    assert_eq!(js["completionMode"], "NonIndexed");
    assert_eq!(js["suspend"], false);
    assert_eq!(js["manualSelector"], false);
    assert_eq!(js["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(
        js["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );
    for labels in [
        &job["metadata"]["labels"],
        &js["template"]["metadata"]["labels"],
    ] {
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid.as_str());
        assert_eq!(labels["controller-uid"], uid.as_str());
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["job-name"], "pi");
    }

    let cj = get_json(&server, &["cronjob", "hello"]);
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);

    let sts = get_json(&server, &["statefulset", "db"]);
    let ss = &sts["spec"];
    assert_eq!(ss["podManagementPolicy"], "OrderedReady");
    assert_eq!(ss["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(ss["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(
        ss["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );
    assert_eq!(
        ss["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
        "Retain"
    );
    assert_eq!(ss["replicas"], 1);
    assert_eq!(ss["revisionHistoryLimit"], 10);
    assert_eq!(
        ss["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );

    let ds = get_json(&server, &["daemonset", "agent"]);
    let us = &ds["spec"]["updateStrategy"];
    assert_eq!(us["type"], "RollingUpdate");
    assert_eq!(us["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(us["rollingUpdate"]["maxSurge"], 0);
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

    let rc = get_json(&server, &["rc", "rc"]);
    assert_eq!(rc["spec"]["replicas"], 1);
    assert_eq!(rc["spec"]["selector"]["app"], "rc");
    assert_eq!(rc["metadata"]["labels"]["app"], "rc");

    let hpa = get_json(&server, &["hpa", "web"]);
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );

    let svc = get_json(&server, &["service", "web"]);
    let sv = &svc["spec"];
    assert_eq!(sv["type"], "ClusterIP");
    assert_eq!(sv["sessionAffinity"], "None");
    assert_eq!(sv["ports"][0]["protocol"], "TCP");
    assert_eq!(sv["ports"][0]["targetPort"], 80);
    assert_eq!(sv["ipFamilies"], serde_json::json!(["IPv4"]));
    assert_eq!(sv["ipFamilyPolicy"], "SingleStack");
    assert_eq!(sv["internalTrafficPolicy"], "Cluster");
    assert!(sv.get("externalTrafficPolicy").is_none());
    assert_eq!(sv["clusterIPs"][0], sv["clusterIP"]);

    create_ok(&server, OTHERS);
    let secret = get_json(&server, &["secret", "sec"]);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert!(secret.get("stringData").is_none());
    let pvc = get_json(&server, &["pvc", "claim"]);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    // The claim was created before any default StorageClass existed; a later one gets it.
    assert!(pvc["spec"].get("storageClassName").is_none());
    create_ok(
        &server,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: later}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    let later = get_json(&server, &["pvc", "later"]);
    assert_eq!(later["spec"]["storageClassName"], "standard");
    create_ok(
        &server,
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: traefik, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}\nspec: {controller: traefik.io/ingress-controller}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: plain}\nspec: {defaultBackend: {service: {name: web, port: {number: 80}}}}\n",
    );
    let plain = get_json(&server, &["ingress", "plain"]);
    assert_eq!(plain["spec"]["ingressClassName"], "traefik");
    let pv = get_json(&server, &["pv", "vol"]);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let np = get_json(&server, &["netpol", "deny"]);
    assert_eq!(
        np["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let rb = get_json(&server, &["rolebinding", "read"]);
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    let sc = get_json(&server, &["storageclass", "standard"]);
    assert_eq!(sc["reclaimPolicy"], "Delete");
    let pc = get_json(&server, &["priorityclass", "high"]);
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let lr = get_json(&server, &["limitrange", "lr"]);
    assert_eq!(lr["spec"]["limits"][0]["default"]["cpu"], "2");
    assert_eq!(lr["spec"]["limits"][0]["defaultRequest"]["cpu"], "2");
    let ns = get_json(&server, &["namespace", "default"]);
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "default"
    );
    assert_eq!(ns["status"]["phase"], "Active");
}

#[test]
fn every_kind_prints_kubectls_columns() {
    let server = ApiServer::start();
    create_ok(&server, WORKLOADS);
    create_ok(&server, OTHERS);
    let cases: &[(&[&str], &str)] = &[
        (&["pods"], "NAME READY STATUS RESTARTS AGE"),
        (
            &["pods", "-o", "wide"],
            "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
        ),
        (&["deployments"], "NAME READY UP-TO-DATE AVAILABLE AGE"),
        (
            &["deployments", "-o", "wide"],
            "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
        ),
        (&["replicasets"], "NAME DESIRED CURRENT READY AGE"),
        (
            &["replicasets", "-o", "wide"],
            "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR",
        ),
        (&["rc"], "NAME DESIRED CURRENT READY AGE"),
        (&["statefulsets"], "NAME READY AGE"),
        (
            &["statefulsets", "-o", "wide"],
            "NAME READY AGE CONTAINERS IMAGES",
        ),
        (
            &["daemonsets"],
            "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE",
        ),
        (&["jobs"], "NAME STATUS COMPLETIONS DURATION AGE"),
        (
            &["jobs", "-o", "wide"],
            "NAME STATUS COMPLETIONS DURATION AGE CONTAINERS IMAGES SELECTOR",
        ),
        (
            &["cronjobs"],
            "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE",
        ),
        (
            &["services"],
            "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
        ),
        (
            &["services", "-o", "wide"],
            "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR",
        ),
        (&["endpoints"], "NAME ENDPOINTS AGE"),
        (&["endpointslices"], "NAME ADDRESSTYPE PORTS ENDPOINTS AGE"),
        (&["ingresses"], "NAME CLASS HOSTS ADDRESS PORTS AGE"),
        (&["ingressclasses"], "NAME CONTROLLER PARAMETERS AGE"),
        (&["networkpolicies"], "NAME POD-SELECTOR AGE"),
        (&["configmaps"], "NAME DATA AGE"),
        (&["secrets"], "NAME TYPE DATA AGE"),
        (&["serviceaccounts"], "NAME SECRETS AGE"),
        (
            &["pvc"],
            "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE",
        ),
        (
            &["pv"],
            "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE",
        ),
        (
            &["hpa"],
            "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE",
        ),
        (
            &["pdb"],
            "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE",
        ),
        (&["roles"], "NAME CREATED AT"),
        (&["clusterroles"], "NAME CREATED AT"),
        (&["rolebindings"], "NAME ROLE AGE"),
        (
            &["clusterrolebindings", "-o", "wide"],
            "NAME ROLE AGE USERS GROUPS SERVICEACCOUNTS",
        ),
        (
            &["storageclasses"],
            "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE",
        ),
        (
            &["priorityclasses"],
            "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY",
        ),
        (&["leases"], "NAME HOLDER AGE"),
        (&["limitranges"], "NAME CREATED AT"),
        (&["resourcequotas"], "NAME REQUEST LIMIT AGE"),
        (&["controllerrevisions"], "NAME CONTROLLER REVISION AGE"),
        (&["podtemplates"], "NAME CONTAINERS IMAGES POD LABELS"),
        (
            &["csidrivers"],
            "NAME ATTACHREQUIRED PODINFOONMOUNT STORAGECAPACITY TOKENREQUESTS REQUIRESREPUBLISH MODES AGE",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(header(&server, args), *want, "kubectl get {args:?}");
    }

    // Every cell but AGE, which ticks between two kubectl runs.
    let mut wide = row(&server, &["deployments", "-o", "wide"], "web");
    wide.remove(4);
    assert_eq!(
        wide,
        ["web", "0/2", "0", "0", "nginx", "nginx:1.25", "app=web"]
    );
    let pod = row(&server, &["pods"], "solo");
    assert_eq!(pod[1..4], ["0/1", "Pending", "0"]);
    let job = row(&server, &["jobs"], "pi");
    assert_eq!(job[1..3], ["Running", "0/1"]);
    let cj = row(&server, &["cronjobs"], "hello");
    assert_eq!(cj[1..6], ["*/5 * * * *", "<none>", "False", "0", "<none>"]);
    let sts = row(&server, &["sts"], "db");
    assert_eq!(sts[1], "0/1");
    let ds = row(&server, &["ds"], "agent");
    assert_eq!(ds[1..6], ["0", "0", "0", "0", "0"]);
    assert_eq!(ds[6], "<none>");
    let hpa = row(&server, &["hpa"], "web");
    assert_eq!(
        hpa[1..6],
        ["Deployment/web", "cpu: <unknown>/80%", "1", "5", "0"]
    );
    assert_eq!(row(&server, &["cm"], "cfg")[1], "2");
    assert_eq!(row(&server, &["secret"], "sec")[1..3], ["Opaque", "1"]);
    assert_eq!(row(&server, &["sa"], "bot")[1], "0");
    let pv = row(&server, &["pv"], "vol");
    assert_eq!(pv[1..5], ["10Gi", "RWO,ROX", "Retain", "Pending"]);
    let pvc = row(&server, &["pvc"], "claim");
    assert_eq!(pvc[1..3], ["Pending", "<unset>"]);
    let ing = row(&server, &["ingress"], "ing");
    assert_eq!(ing[1..4], ["nginx", "example.com", "80, 443"]);
    assert_eq!(
        row(&server, &["ingressclass"], "nginx")[1..3],
        ["k8s.io/ingress-nginx", "<none>"]
    );
    assert_eq!(row(&server, &["netpol"], "deny")[1], "app=web");
    assert_eq!(row(&server, &["pdb"], "pdb")[1..4], ["1", "N/A", "0"]);
    assert_eq!(
        row(&server, &["rolebinding", "-o", "wide"], "read")[1],
        "Role/reader"
    );
    let rb = row(&server, &["rolebinding", "-o", "wide"], "read");
    assert_eq!(rb[3..], ["jane", "default/default"]);
    let sc = row(&server, &["sc"], "standard");
    assert_eq!(
        sc[..5],
        [
            "standard (default)",
            "rancher.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );
    let pc = row(&server, &["pc"], "system-node-critical");
    assert_eq!(pc[1..3], ["2000001000", "false"]);
    assert_eq!(row(&server, &["lease"], "l")[1], "me");
    assert_eq!(
        row(&server, &["podtemplates"], "pt")[1..4],
        ["c", "nginx", "a=b"]
    );
    let svc = row(&server, &["svc", "-o", "wide"], "kubernetes");
    assert_eq!(svc[1..5], ["ClusterIP", "10.96.0.1", "<none>", "443/TCP"]);
    assert_eq!(svc[6], "<none>");
}

#[test]
fn get_all_lists_exactly_the_all_category() {
    let server = ApiServer::start();
    create_ok(&server, WORKLOADS);
    create_ok(&server, OTHERS);
    let out = server.kubectl_ok(&["get", "all"]);
    for name in [
        "pod/solo",
        "service/kubernetes",
        "service/web",
        "replicationcontroller/rc",
        "daemonset.apps/agent",
        "deployment.apps/web",
        "replicaset.apps/rs",
        "statefulset.apps/db",
        "horizontalpodautoscaler.autoscaling/web",
        "cronjob.batch/hello",
        "job.batch/pi",
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from get all:\n{out}"
        );
    }
    for absent in ["configmap/", "secret/", "ingress", "persistentvolumeclaim/"] {
        assert!(!out.contains(absent), "{absent} in get all:\n{out}");
    }
}

#[test]
fn cluster_ips_and_node_ports_are_allocated_once() {
    let server = ApiServer::start();
    let kubernetes = get_json(&server, &["service", "kubernetes"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);
    assert_eq!(kubernetes["spec"]["ports"][0]["name"], "https");
    let ep = get_json(&server, &["endpoints", "kubernetes"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");

    create_ok(
        &server,
        r#"
apiVersion: v1
kind: Service
metadata: {name: np}
spec:
  type: NodePort
  selector: {app: np}
  ports: [{name: http, port: 80, nodePort: 30080}, {name: auto, port: 81}]
---
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  ports: [{port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
"#,
    );
    let np = get_json(&server, &["service", "np"]);
    assert_eq!(np["spec"]["ports"][0]["nodePort"], 30080);
    let auto = np["spec"]["ports"][1]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&auto), "{auto}");
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    let ip = np["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("10.96.") && ip != "10.96.0.1" && ip != "10.96.0.10",
        "{ip}"
    );
    let lb = get_json(&server, &["service", "lb"]);
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert!(lb["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    assert_eq!(row(&server, &["svc"], "lb")[3], "<pending>");
    let headless = get_json(&server, &["service", "headless"]);
    assert_eq!(headless["spec"]["clusterIPs"], serde_json::json!(["None"]));
    assert_eq!(row(&server, &["svc"], "headless")[2], "None");

    let conflict = create(
        &server,
        r#"
apiVersion: v1
kind: Service
metadata: {name: np2}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}, {name: low, port: 81, nodePort: 80}]
"#,
    );
    assert!(!conflict.status.success());
    let msg = text(&conflict);
    for want in [
        "The Service \"np2\" is invalid:",
        "* spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated",
        "* spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
        "* spec.ports[1].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    ] {
        assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
    }
    let out = create(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec: {clusterIP: 192.168.1.1, ports: [{port: 80}]}\n",
    );
    assert!(
        text(&out).contains("failed to allocate IP 192.168.1.1: the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/16"),
        "{}",
        text(&out)
    );

    // What a deleted Service held is free again.
    server.kubectl_ok(&["delete", "service", "np", "dns"]);
    create_ok(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: again}\nspec: {type: NodePort, clusterIP: 10.96.0.10, ports: [{port: 80, nodePort: 30080}]}\n",
    );

    // Allocated values carry over an update that leaves them out; they cannot be changed.
    let out = server.kubectl_stdin(
        &["replace", "-f", "-", "--validate=false"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: again}\nspec: {type: NodePort, ports: [{port: 80}]}\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let again = get_json(&server, &["service", "again"]);
    assert_eq!(again["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(again["spec"]["ports"][0]["nodePort"], 30080);
    let out = server.kubectl(&[
        "patch",
        "service",
        "again",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.11"}}"#,
    ]);
    assert!(
        text(&out).contains(
            "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"
        ),
        "{}",
        text(&out)
    );
    // Turning a NodePort Service into a ClusterIP one releases its node ports.
    server.kubectl_ok(&[
        "patch",
        "service",
        "again",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    let again = get_json(&server, &["service", "again"]);
    assert!(again["spec"]["ports"][0].get("nodePort").is_none());
    create_ok(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: takes-it}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}\n",
    );
}

#[test]
fn allocations_survive_a_restart() {
    use std::io::BufRead;
    let sandbox = Sandbox::new();
    let data = sandbox.path().join("data");
    let start = || {
        let mut child = std::process::Command::new(kcluster_bin())
            .args(["node", "apiserver", "--data-dir"])
            .arg(&data)
            .arg("--kubeconfig")
            .arg(sandbox.kubeconfig())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start the API server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready "), "{line}");
        child
    };
    let apply = |yaml: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("kubectl")
            .args([
                "--context",
                "kcluster-standalone",
                "create",
                "-f",
                "-",
                "--validate=false",
            ])
            .env("KUBECONFIG", sandbox.kubeconfig())
            .env("HOME", sandbox.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let mut first = start();
    let out = apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: NodePort, clusterIP: 10.96.5.5, ports: [{port: 80, nodePort: 31000}]}\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let _ = first.kill();
    let _ = first.wait();

    let mut second = start();
    let out = apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {type: NodePort, clusterIP: 10.96.5.5, ports: [{port: 80, nodePort: 31000}]}\n",
    );
    let _ = second.kill();
    let _ = second.wait();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("provided IP is already allocated")
            && text(&out).contains("provided port is already allocated"),
        "{}",
        text(&out)
    );
}

#[test]
fn validation_errors_read_as_kubernetes_writes_them() {
    let server = ApiServer::start();
    let cases: &[(&str, &[&str])] = &[
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - {name: web}\n  - {name: web, image: x, volumeMounts: [{name: data, mountPath: /d}]}\n",
            &[
                "The Pod \"bad\" is invalid:",
                "* spec.containers[0].image: Required value",
                "* spec.containers[1].name: Duplicate value: \"web\"",
                "* spec.containers[1].volumeMounts[0].name: Not found: \"data\"",
                "* spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: nocontainers}\nspec: {containers: []}\n",
            &["The Pod \"nocontainers\" is invalid: spec.containers: Required value"],
        ),
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: busybox}]\n",
            &[
                "The Job \"j\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec:\n      containers: [{name: c, image: nginx}]\n",
            &[
                "The Deployment \"d\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`",
            ],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nosel}\nspec:\n  replicas: -1\n  template:\n    metadata: {labels: {app: b}}\n    spec:\n      containers: [{name: c, image: nginx}]\n",
            &[
                "* spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "* spec.selector: Required value",
            ],
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: My_Svc}\nspec: {ports: [{port: 80}]}\n",
            &[
                "The Service \"My_Svc\" is invalid: metadata.name: Invalid value: \"My_Svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            ],
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: noports}\nspec: {selector: {app: x}}\n",
            &["The Service \"noports\" is invalid: spec.ports: Required value"],
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: badtype}\nspec: {type: Magic, ports: [{port: 0}]}\n",
            &[
                "* spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "* spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, labels: {\"bad key\": v}}\ndata: {\"a b\": x}\n",
            &[
                "* metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                "* data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ],
        ),
        (
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {}\n",
            &[
                "* spec.accessModes: Required value: at least 1 access mode is required",
                "* spec.resources[storage]: Required value",
            ],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  containers: [{name: c, image: x, resources: {limits: {cpu: lots}}}]\n",
            &[
                "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ],
        ),
        (
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj}\nspec:\n  schedule: bad\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: x}]\n",
            &[
                "The CronJob \"cj\" is invalid: spec.schedule: Invalid value: \"bad\": expected exactly 5 fields, found 1: bad",
            ],
        ),
        (
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tz}\nspec:\n  schedule: '0 9 * * *'\n  timeZone: Mars/Olympus\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: x}]\n",
            &[
                "The CronJob \"tz\" is invalid: spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus",
            ],
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - http:\n      paths: [{path: /, backend: {service: {name: web, port: {number: 80}}}}]\n",
            &[
                "The Ingress \"i\" is invalid: spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            ],
        ),
        (
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n  scaleTargetRef: {kind: Deployment, name: web}\n  minReplicas: 3\n  maxReplicas: 2\n",
            &[
                "The HorizontalPodAutoscaler \"h\" is invalid: spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
            ],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\nrules: [{resources: [pods]}]\n",
            &[
                "* rules[0].verbs: Required value: verbs must contain at least one value",
                "* rules[0].apiGroups: Required value: resource rules must supply at least one api group",
            ],
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ntype: kubernetes.io/tls\ndata: {}\n",
            &[
                "* data[tls.crt]: Required value",
                "* data[tls.key]: Required value",
            ],
        ),
    ];
    for (yaml, wants) in cases {
        let out = create(&server, yaml);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        let msg = text(&out);
        for want in *wants {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
    }
    // RBAC names are path segments, so the usual colons are fine.
    create_ok(
        &server,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: \"system:reader\"}\nrules: []\n",
    );
}

#[test]
fn fields_that_are_fixed_stay_fixed() {
    let server = ApiServer::start();
    create_ok(&server, WORKLOADS);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "deployment",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}"#,
            ],
            "The Deployment \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
        ),
        (
            &[
                "pod",
                "solo",
                "--type=merge",
                "-p",
                r#"{"spec":{"restartPolicy":"Never"}}"#,
            ],
            "The Pod \"solo\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
        ),
        (
            &[
                "job",
                "pi",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"perl:5.36"}]"#,
            ],
            "The Job \"pi\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable",
        ),
        (
            &[
                "statefulset",
                "db",
                "--type=merge",
                "-p",
                r#"{"spec":{"serviceName":"other"}}"#,
            ],
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["patch"];
        all.extend_from_slice(args);
        let out = server.kubectl(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
    // What may change does.
    server.kubectl_ok(&[
        "patch",
        "pod",
        "solo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/containers/0/image","value":"busybox:1.36"}]"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    let d = get_json(&server, &["deployment", "web"]);
    assert_eq!(d["metadata"]["generation"], 2);
    // Sending the object again without its defaulted fields changes nothing Kubernetes counts.
    let out = server.kubectl_stdin(
        &["replace", "-f", "-", "--validate=false"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:1.25\n        ports: [{containerPort: 80}]\n        resources: {limits: {cpu: \"0.5\", memory: 1024Mi}}\n        readinessProbe: {httpGet: {port: 80}}\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let d = get_json(&server, &["deployment", "web"]);
    assert_eq!(d["metadata"]["generation"], 2);
}

#[test]
fn hpas_and_events_are_served_at_both_versions() {
    let server = ApiServer::start();
    create_ok(
        &server,
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: 50\n",
    );
    let v2 = get_json(&server, &["horizontalpodautoscalers.v2.autoscaling", "web"]);
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );
    let v1 = get_json(&server, &["horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(v1["status"]["currentReplicas"], 0);
    server.kubectl_ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":70}}"#,
    ]);
    assert_eq!(row(&server, &["hpa"], "web")[2], "cpu: <unknown>/70%");
    let v1_list: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
    ]))
    .unwrap();
    assert_eq!(v1_list["kind"], "HorizontalPodAutoscalerList");
    assert_eq!(v1_list["apiVersion"], "autoscaling/v1");
    assert_eq!(
        v1_list["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        70
    );

    server.kubectl_stdin(
        &["create", "--raw", "/apis/events.k8s.io/v1/namespaces/default/events", "-f", "-"],
        r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e1"},"eventTime":"2024-01-01T00:00:00.000000Z","reportingController":"test","reportingInstance":"t1","action":"Checking","reason":"Tested","regarding":{"kind":"Pod","name":"p1","namespace":"default"},"note":"hello world","type":"Normal"}"#,
    );
    let core = get_json(&server, &["events", "e1"]);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "hello world");
    assert_eq!(core["involvedObject"]["name"], "p1");
    assert_eq!(core["reportingComponent"], "test");
    let out = server.kubectl_ok(&["get", "events"]);
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    assert!(
        out.contains("pod/p1") && out.contains("hello world"),
        "{out}"
    );
    let new = get_json(&server, &["events.events.k8s.io", "e1"]);
    assert_eq!(new["apiVersion"], "events.k8s.io/v1");
    assert_eq!(new["note"], "hello world");
    assert_eq!(new["regarding"]["name"], "p1");
}

/// An eviction spends one of the budget's allowed disruptions at once, so a second eviction
/// right after it is refused even before the disruption controller recounts.
#[test]
fn an_eviction_spends_the_budgets_allowed_disruption() {
    let server = ApiServer::start();
    create_ok(
        &server,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: web}}\n",
    );
    for pod in ["web-a", "web-b"] {
        create_ok(
            &server,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, labels: {{app: web}}}}\nspec:\n  containers: [{{name: c, image: nginx}}]\n"
            ),
        );
    }
    // What the disruption controller would write for two healthy pods.
    server.kubectl_ok(&[
        "patch",
        "pdb",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1,"disruptionsAllowed":1,"currentHealthy":2,"desiredHealthy":1,"expectedPods":2}}"#,
    ]);
    let evict = |pod: &str| {
        server.kubectl_stdin(
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
                "-f",
                "-",
            ],
            &format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
            ),
        )
    };
    let first = evict("web-a");
    assert!(first.status.success(), "{}", text(&first));
    let pdb = get_json(&server, &["pdb", "web"]);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "{pdb}");
    assert!(pdb["status"]["disruptedPods"]["web-a"].is_string(), "{pdb}");

    let second = evict("web-b");
    assert!(
        !second.status.success(),
        "the second eviction must be refused"
    );
    assert!(
        text(&second).contains("Too Many Requests") || text(&second).contains("disruption budget"),
        "{}",
        text(&second)
    );
    assert!(server.kubectl(&["get", "pod", "web-b"]).status.success());
}

/// Events expire `--event-ttl` after their last write, as kube-apiserver keeps them (an hour by
/// default): written either as core/v1 or events.k8s.io/v1, they are deleted by the store and
/// watchers see them go; other kinds stay.
#[test]
fn events_expire_after_the_event_ttl() {
    let server = ApiServer::start_with(&["--event-ttl", "3s"]);
    let list: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/events",
    ]))
    .expect("a list");
    let before = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("the list's resourceVersion")
        .to_string();
    create_ok(
        &server,
        "apiVersion: v1\nkind: Event\nmetadata: {name: core-one}\ninvolvedObject: {kind: Pod, name: p, namespace: default}\nreason: Tested\nmessage: from core/v1\ntype: Normal\n",
    );
    let out = server.kubectl_stdin(
        &["create", "--raw", "/apis/events.k8s.io/v1/namespaces/default/events", "-f", "-"],
        r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"new-one"},"eventTime":"2024-01-01T00:00:00.000000Z","reportingController":"test","reportingInstance":"t1","action":"Checking","reason":"Tested","regarding":{"kind":"Pod","name":"p","namespace":"default"},"note":"from events.k8s.io","type":"Normal"}"#,
    );
    assert!(out.status.success(), "events.k8s.io create: {}", text(&out));
    server.kubectl_ok(&["create", "configmap", "stays", "--from-literal=a=b"]);
    for event in ["core-one", "new-one"] {
        wait_until(
            &format!("event {event} to expire"),
            std::time::Duration::from_secs(60),
            || {
                let out = server.kubectl(&["get", "event", event]);
                if gone(&out) {
                    Ok(())
                } else if out.status.success() {
                    Err("still there".into())
                } else {
                    panic!("get event {event} failed otherwise: {}", text(&out))
                }
            },
        );
    }
    server.kubectl_ok(&["get", "configmap", "stays"]);
    // A watch from before the writes replays what the store did: each Event added, then deleted.
    let replay = server.kubectl_ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/events?watch=1&resourceVersion={before}&timeoutSeconds=1"
        ),
    ]);
    let seen: Vec<(String, String)> = replay
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    for event in ["core-one", "new-one"] {
        let of: Vec<&str> = seen
            .iter()
            .filter(|(_, name)| name == event)
            .map(|(kind, _)| kind.as_str())
            .collect();
        assert_eq!(
            of,
            ["ADDED", "DELETED"],
            "the watch's events of {event}: {replay}"
        );
    }
}
