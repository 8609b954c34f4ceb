//! Jobs through the real kubectl: completions with parallelism, Indexed completion, the backoff
//! limit, activeDeadlineSeconds, suspend and resume, and ttlSecondsAfterFinished. The fake
//! kubelet runs images named "…complete…" to exit 0 and "…fail…" to exit 1.

mod common;
mod controllers_support;

use std::time::{Duration, Instant};

use common::*;
use controllers_support::*;
use serde_json::Value;

fn job(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: \"{image}\"}}]\n"
    )
}

fn create(server: &ApiServer, yaml: &str) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(out.status.success(), "create failed: {}", text(&out));
}

fn json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

fn condition(job: &Value, type_: &str) -> Value {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn jobs_run_to_completion_or_failure() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["n1", "n2"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2"]);

    // Three completions, two at a time.
    create(
        &server,
        &job(
            "pi",
            "example/complete:1",
            "  completions: 3\n  parallelism: 2\n",
        ),
    );
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=60s",
    ]);
    let pi = json(&server, &["job", "pi"]);
    assert_eq!(pi["status"]["succeeded"], 3, "{pi}");
    assert!(pi["status"]["completionTime"].is_string());
    assert_eq!(condition(&pi, "Complete")["reason"], "CompletionsReached");
    let get = server.kubectl_ok(&["get", "job", "pi"]);
    let row: Vec<&str> = get
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["pi", "Complete", "3/3"], "{get}");
    let pods = server.kubectl_ok(&["get", "pods", "-l", "job-name=pi", "--no-headers"]);
    assert_eq!(
        pods.lines().filter(|l| l.contains("Completed")).count(),
        3,
        "{pods}"
    );
    wait_output(
        "the job's events",
        || {
            server.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=pi",
            ])
        },
        &["Job completed", "Created pod: pi-"],
    );

    // Indexed: each index once, named and labelled by it.
    create(
        &server,
        &job(
            "idx",
            "example/complete:1",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
        ),
    );
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=60s",
    ]);
    assert_eq!(
        json(&server, &["job", "idx"])["status"]["completedIndexes"],
        "0-2"
    );
    let pods = json(&server, &["pods", "-l", "job-name=idx"]);
    let mut indexes: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
            assert_eq!(p["spec"]["hostname"], format!("idx-{index}"));
            index
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);

    // Failing pods: replaced after the 10 s backoff until backoffLimit is passed.
    create(
        &server,
        &job("bad", "example/fail:1", "  backoffLimit: 1\n"),
    );
    server.kubectl_ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]);
    let bad = json(&server, &["job", "bad"]);
    assert_eq!(bad["status"]["failed"], 2, "{bad}");
    assert_eq!(condition(&bad, "Failed")["reason"], "BackoffLimitExceeded");
    assert_eq!(
        condition(&bad, "Failed")["message"],
        "Job has reached the specified backoff limit"
    );
    wait_output(
        "the failed job's event",
        || {
            server.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad",
            ])
        },
        &["BackoffLimitExceeded"],
    );

    // A deadline ends a job that runs too long, and its pods.
    create(
        &server,
        &job("slow", "example/ready:1", "  activeDeadlineSeconds: 2\n"),
    );
    server.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=60s",
    ]);
    assert_eq!(
        condition(&json(&server, &["job", "slow"]), "Failed")["reason"],
        "DeadlineExceeded"
    );
    wait_for("slow's pod to go", Duration::from_secs(30), || {
        json(&server, &["pods", "-l", "job-name=slow"])["items"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    });

    // Suspended: nothing runs until resumed.
    create(
        &server,
        &job("later", "example/complete:1", "  suspend: true\n"),
    );
    wait_for("the Suspended condition", Duration::from_secs(30), || {
        condition(&json(&server, &["job", "later"]), "Suspended")["status"] == "True"
    });
    assert!(
        json(&server, &["pods", "-l", "job-name=later"])["items"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    server.kubectl_ok(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/later",
        "--timeout=60s",
    ]);

    // ttlSecondsAfterFinished: the finished job and its pods are cleaned up.
    create(
        &server,
        &job(
            "brief",
            "example/complete:1",
            "  ttlSecondsAfterFinished: 1\n",
        ),
    );
    wait_for(
        "the finished job to be deleted",
        Duration::from_secs(60),
        || gone(&server.kubectl(&["get", "job", "brief"])),
    );
    wait_for("its pods to be collected", Duration::from_secs(30), || {
        json(&server, &["pods", "-l", "job-name=brief"])["items"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    });
}

#[test]
fn cronjob_runs_on_schedule_and_keeps_its_history() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[], "4", "8Gi", 110);
    let _kubelet = FakeKubelet::start(&server, &["n1"]);
    create(
        &server,
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: hello}
spec:
  schedule: "*/1 * * * *"
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: "example/complete:1"}]
"#,
    );
    // A manual run from the template (kubectl makes it owned by the CronJob).
    server.kubectl_ok(&["create", "job", "--from=cronjob/hello", "manual"]);
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=60s",
    ]);

    // The scheduled run comes at the next minute.
    let deadline = Instant::now() + Duration::from_secs(90);
    let scheduled = loop {
        let jobs = json(&server, &["jobs"]);
        let found = jobs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["metadata"]["name"].as_str())
            .find(|n| n.starts_with("hello-"))
            .map(str::to_string);
        if let Some(name) = found {
            break name;
        }
        assert!(Instant::now() < deadline, "no scheduled job appeared");
        std::thread::sleep(Duration::from_millis(500));
    };
    let minutes: i64 = scheduled["hello-".len()..]
        .parse()
        .expect("minutes since the epoch");
    let job = json(&server, &["job", &scheduled]);
    let stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let at: jiff::Timestamp = stamp.parse().expect("an RFC 3339 time");
    assert_eq!(
        at.as_second() / 60,
        minutes,
        "the name is the scheduled minute"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{scheduled}"),
        "--timeout=60s",
    ]);

    // One successful job is kept: the manual one, older, goes.
    wait_for(
        "the older successful job to be deleted",
        Duration::from_secs(30),
        || gone(&server.kubectl(&["get", "job", "manual"])),
    );
    let cj = json(&server, &["cronjob", "hello"]);
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    assert!(cj["status"]["active"].is_null(), "{cj}");
    wait_output(
        "the cron job's events",
        || {
            server.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=hello",
            ])
        },
        &[
            &format!("Created job {scheduled}"),
            &format!("Saw completed job: {scheduled}, condition: Complete"),
            "Deleted job manual",
        ],
    );
}

#[test]
fn pod_failure_policy_fails_or_ignores() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[], "4", "8Gi", 110);
    let _kubelet = FakeKubelet::start(&server, &["n1"]);

    // Exit code 1 matches a FailJob rule: the job fails at once, backoffLimit or not.
    let policy = "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: Ignore\n      onPodConditions: [{type: DisruptionTarget}]\n    - action: FailJob\n      onExitCodes: {containerName: c, operator: In, values: [1, 42]}\n";
    create(&server, &job("exits", "example/fail:1", policy));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/exits",
        "--timeout=60s",
    ]);
    let exits = json(&server, &["job", "exits"]);
    let failed = condition(&exits, "Failed");
    assert_eq!(failed["reason"], "PodFailurePolicy", "{exits}");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Container c for pod default/exits-")
            && message.ends_with("failed with exit code 1 matching FailJob rule at index 1"),
        "{message}"
    );

    // A disruption is ignored: not counted, and the pod is replaced even with backoffLimit 0.
    let ignore = policy.replace("backoffLimit: 6", "backoffLimit: 0");
    create(&server, &job("disrupted", "example/long:1", &ignore));
    let mut first_name = String::new();
    wait_for("the first pod to run", Duration::from_secs(60), || {
        let pods = json(&server, &["pods", "-l", "job-name=disrupted"]);
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["status"]["phase"] == "Running")
            .cloned();
        if let Some(p) = running {
            first_name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            return true;
        }
        false
    });
    let status = r#"{"status":{"phase":"Failed","conditions":[{"type":"DisruptionTarget","status":"True","reason":"PreemptionByScheduler"}]}}"#;
    server.kubectl_ok(&[
        "patch",
        "pod",
        &first_name,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    wait_for("a replacement pod", Duration::from_secs(60), || {
        let pods = json(&server, &["pods", "-l", "job-name=disrupted"]);
        pods["items"].as_array().into_iter().flatten().any(|p| {
            p["metadata"]["name"] != first_name.as_str() && p["status"]["phase"] == "Running"
        })
    });
    let disrupted = json(&server, &["job", "disrupted"]);
    assert!(condition(&disrupted, "Failed").is_null(), "{disrupted}");
    assert!(disrupted["status"]["failed"].is_null(), "{disrupted}");
}
