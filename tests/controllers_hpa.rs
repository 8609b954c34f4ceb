//! The HorizontalPodAutoscaler end to end on a real cluster: `kubectl autoscale` on a
//! Deployment whose pods burn CPU (capped by a limit at twice their request), the controller
//! reading usage from metrics.k8s.io and scaling the Deployment up to maxReplicas; then the
//! burn stops (the pod template is changed to sleep) and it scales back down once the
//! scaleDown stabilization window (shortened through spec.behavior) has passed. While the pods
//! are busy, a second autoscaler scales a custom resource selecting them through its /scale.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const IMAGE: &str = "kcluster-e2e/hpa-busybox:1";

fn deployment(image: &str) -> String {
    r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: spin
        image: IMAGE
        command: ["sh", "-c", "while :; do :; done"]
        # Busy at the limit: 200% of the request, without taking much of a loaded machine.
        resources: {requests: {cpu: 50m}, limits: {cpu: 100m}}
"#
    .replace("IMAGE", image)
}

const CREW: &str = "apiVersion: example.org/v1
kind: Crew
metadata: {name: burners}
spec: {replicas: 1}
";

const CREW_HPA: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: crew}
spec:
  scaleTargetRef: {apiVersion: example.org/v1, kind: Crew, name: burners}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
";

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&cluster.kubectl_ok(&all)).expect("kubectl printed JSON")
}

/// Polls until `check` accepts the autoscaler and its Deployment; panics with both at the end.
fn wait_for(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value, &Value) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let hpa = json(cluster, &["hpa", "burn"]);
        let deploy = json(cluster, &["deployment", "burn"]);
        if check(&hpa, &deploy) {
            return;
        }
        if Instant::now() > deadline {
            let describe = cluster.kubectl(&["describe", "hpa", "burn"]);
            panic!(
                "timed out waiting for {what}\nautoscaler: {hpa:#}\ndeployment spec.replicas: {}\n{}",
                deploy["spec"]["replicas"],
                text(&describe)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn condition<'a>(hpa: &'a Value, type_: &str) -> Option<&'a Value> {
    hpa["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn autoscaler_scales_a_busy_deployment_up_and_an_idle_one_down() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("hpa");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    // Sync every 5 s instead of 15 s, so the test waits less.
    let out = sandbox
        .kcluster_cmd(&["create", "--name", &name, "--wait", "120s"])
        .env("KCLUSTER_HPA_SYNC_PERIOD_SECONDS", "5")
        .output()
        .expect("cannot run kcluster");
    let cluster = Cluster {
        name: name.clone(),
        sandbox: &sandbox,
    };
    assert!(
        out.status.success(),
        "kcluster create failed: {}",
        text(&out)
    );
    cluster.load_image(&tag);

    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &deployment(&tag));
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.kubectl_ok(&["rollout", "status", "deployment/burn", "--timeout=120s"]);

    let out = cluster.kubectl_ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    assert!(out.contains("autoscaled"), "{out}");
    cluster.kubectl_ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":10}}}}"#,
    ]);

    // Busy: 200% of a 50% target asks for 4, capped at maxReplicas 3.
    wait_for(
        &cluster,
        "a scale-up to 3",
        Duration::from_secs(180),
        |hpa, deploy| deploy["spec"]["replicas"] == 3 && hpa["status"]["desiredReplicas"] == 3,
    );
    let hpa = json(&cluster, &["hpa", "burn"]);
    let able = condition(&hpa, "AbleToScale").expect("an AbleToScale condition");
    assert_eq!(able["status"], "True", "{hpa:#}");
    let active = condition(&hpa, "ScalingActive").expect("a ScalingActive condition");
    assert_eq!(active["reason"], "ValidMetricFound", "{hpa:#}");
    assert!(hpa["status"]["lastScaleTime"].is_string(), "{hpa:#}");

    // kubectl get prints TARGETS as a real cluster does: cpu: <current>%/50%.
    let table = cluster.wait_for(&["get", "hpa", "burn"], Duration::from_secs(60), |t| {
        t.lines().nth(1).is_some_and(|row| {
            row.split_whitespace()
                .any(|c| c.ends_with("%/50%") && !c.contains("unknown"))
        })
    });
    assert!(table.contains("Deployment/burn"), "{table}");
    let describe = cluster.kubectl_ok(&["describe", "hpa", "burn"]);
    assert!(
        describe.contains("SuccessfulRescale")
            && describe.contains("cpu resource utilization (percentage of request) above target"),
        "{describe}"
    );

    // A custom resource scaled by real metrics: an operator's Crew whose scale subresource
    // selects the busy pods (the test writes its status, as its operator would). The same
    // usage drives it through /scale to maxReplicas.
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], common::crds::CREWS);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/crews.example.org",
    ]);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], CREW);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.kubectl_ok(&[
        "patch",
        "crew",
        "burners",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"selector":"app=burn"}}"#,
    ]);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], CREW_HPA);
    assert!(out.status.success(), "apply failed: {}", text(&out));
    wait_until("the crew scaled to 3", Duration::from_secs(120), || {
        let crew = json(&cluster, &["crew", "burners"]);
        let hpa = json(&cluster, &["hpa", "crew"]);
        if crew["spec"]["replicas"] == 3 && hpa["status"]["desiredReplicas"] == 3 {
            Ok(())
        } else {
            Err(format!("{crew:#}\n{hpa:#}"))
        }
    });
    let hpa = json(&cluster, &["hpa", "crew"]);
    let active = condition(&hpa, "ScalingActive").expect("a ScalingActive condition");
    assert_eq!(active["reason"], "ValidMetricFound", "{hpa:#}");
    cluster.kubectl_ok(&["delete", "hpa", "crew"]);

    // The burn stops: the template now sleeps, the rollout replaces the pods with idle ones,
    // and after the 10 s window the autoscaler scales down to minReplicas.
    cluster.kubectl_ok(&[
        "patch",
        "deployment",
        "burn",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3600"]}]"#,
    ]);
    wait_for(
        &cluster,
        "a scale-down to 1",
        Duration::from_secs(240),
        |hpa, deploy| deploy["spec"]["replicas"] == 1 && hpa["status"]["desiredReplicas"] == 1,
    );
    let describe = cluster.kubectl_ok(&["describe", "hpa", "burn"]);
    assert!(
        describe.contains("New size: 1; reason: All metrics below target"),
        "{describe}"
    );
}

/// Against the API server with its controllers and no nodes: the metrics API has no samples,
/// targets can be missing or at zero, and the autoscaler says so in Kubernetes' words.
#[test]
fn autoscaler_conditions_report_what_stops_it() {
    let server = ApiServer::start_with(&["--controllers"]);
    for (name, replicas) in [("web", "1"), ("small", "1")] {
        server.kubectl_ok(&[
            "create",
            "deployment",
            name,
            "--image=busybox",
            "--replicas",
            replicas,
        ]);
    }
    server.kubectl_ok(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    // kubectl autoscale refuses a missing target; the API does not.
    let ghost = r#"{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "ghost"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost"},
                 "maxReplicas": 3}}"#;
    let out = server.kubectl_stdin(&["create", "-f", "-"], ghost);
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&[
        "autoscale",
        "deployment",
        "small",
        "--cpu-percent=50",
        "--min=2",
        "--max=4",
    ]);

    let hpa_json = |name: &str| -> Value {
        serde_json::from_str(&server.kubectl_ok(&["get", "hpa", name, "-o", "json"]))
            .expect("kubectl printed JSON")
    };
    let wait_condition = |name: &str, type_: &str, status: &str, reason: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let hpa = hpa_json(name);
            if let Some(c) = condition(&hpa, type_)
                && c["status"] == status
                && c["reason"] == reason
            {
                return c.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {type_}={status} ({reason}) on {name}: {hpa:#}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };

    let c = wait_condition("web", "ScalingActive", "False", "FailedGetResourceMetric");
    assert_eq!(
        c["message"],
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    );
    wait_condition("web", "AbleToScale", "True", "SucceededGetScale");
    let table = server.kubectl_ok(&["get", "hpa", "web"]);
    assert!(table.contains("cpu: <unknown>/50%"), "{table}");
    let describe = server.kubectl_ok(&["describe", "hpa", "web"]);
    assert!(
        describe.contains("FailedComputeMetricsReplicas")
            && describe.contains("invalid metrics (1 invalid out of 1)"),
        "{describe}"
    );

    let c = wait_condition("ghost", "AbleToScale", "False", "FailedGetScale");
    assert_eq!(
        c["message"],
        "the HPA controller was unable to get the target's current scale: deployments.apps \"ghost\" not found"
    );

    // Below minReplicas: corrected before any metric is read.
    let deadline = Instant::now() + Duration::from_secs(90);
    while server.kubectl_ok(&[
        "get",
        "deployment",
        "small",
        "-o",
        "jsonpath={.spec.replicas}",
    ]) != "2"
    {
        assert!(
            Instant::now() < deadline,
            "small was not scaled to minReplicas"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let describe = server.kubectl_ok(&["describe", "hpa", "small"]);
    assert!(
        describe.contains("New size: 2; reason: Current number of replicas below Spec.MinReplicas"),
        "{describe}"
    );

    // A target scaled to zero switches autoscaling off (noticed at the next sync period).
    server.kubectl_ok(&["scale", "deployment", "web", "--replicas=0"]);
    let c = wait_condition("web", "ScalingActive", "False", "ScalingDisabled");
    assert_eq!(
        c["message"],
        "scaling is disabled since the replica count of the target is zero"
    );
}
