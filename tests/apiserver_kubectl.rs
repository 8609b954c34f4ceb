//! Everyday kubectl verbs against the API server alone: output formats, scale, replace and its
//! stale-version conflict, delete variants, get -w, describe and wait.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn output_formats_scale_and_describe() {
    let server = ApiServer::start();
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=2",
    ]);

    let yaml = server.kubectl_ok(&["get", "deploy", "web", "-o", "yaml"]);
    for want in [
        "maxSurge: 25%",
        "maxUnavailable: 25%",
        "revisionHistoryLimit: 10",
        "progressDeadlineSeconds: 600",
        "imagePullPolicy: IfNotPresent",
    ] {
        assert!(yaml.contains(want), "-o yaml lacks {want}:\n{yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["replicas"], 2);
    let wide = server.kubectl_ok(&["get", "deploy", "web", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("CONTAINERS")
            && wide.contains("nginx:1.25")
            && wide.contains("app=web"),
        "{wide}"
    );
    assert_eq!(
        server
            .kubectl_ok(&["get", "deploy", "web", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        server.kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.25"
    );
    let custom = server.kubectl_ok(&[
        "get",
        "deploy",
        "-o",
        "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas",
    ]);
    assert!(
        custom.contains("NAME")
            && custom
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["web", "2"]),
        "{custom}"
    );

    let generation = json["metadata"]["generation"].as_i64().unwrap();
    let out = server.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["replicas"], 4);
    assert_eq!(
        json["metadata"]["generation"].as_i64().unwrap(),
        generation + 1
    );

    let describe = server.kubectl_ok(&["describe", "deploy", "web"]);
    for want in [
        "StrategyType:           RollingUpdate",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
        "Selector:               app=web",
    ] {
        assert!(
            describe.contains(want),
            "describe lacks {want:?}:\n{describe}"
        );
    }
}

#[test]
fn replace_with_a_stale_version_conflicts() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=a=1"]);
    let original = server.kubectl_ok(&["get", "cm", "cfg", "-o", "yaml"]);
    let path = server.sandbox.path().join("cfg.yaml");
    std::fs::write(&path, original.replace("a: \"1\"", "a: \"2\"")).unwrap();
    let out = server.kubectl_ok(&["replace", "-f", path.to_str().unwrap()]);
    assert!(out.contains("configmap/cfg replaced"), "{out}");
    // The same file again carries the old resourceVersion.
    std::fs::write(&path, original.replace("a: \"1\"", "a: \"3\"")).unwrap();
    let out = server.kubectl(&["replace", "-f", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("the object has been modified; please apply your changes to the latest version and try again"), "{}", text(&out));
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"]),
        "2"
    );
}

#[test]
fn delete_variants() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "configmap", "keep", "--from-literal=a=1"]);
    let out = server.kubectl_ok(&["delete", "cm", "keep", "--dry-run=server"]);
    assert!(out.contains("deleted (server dry run)"), "{out}");
    server.kubectl_ok(&["get", "cm", "keep"]);
    let out = server.kubectl_ok(&["delete", "cm", "keep"]);
    assert!(out.contains("configmap \"keep\" deleted"), "{out}");
    let out = server.kubectl(&["get", "cm", "keep"]);
    assert!(
        text(&out).contains("configmaps \"keep\" not found"),
        "{}",
        text(&out)
    );

    // A pod on a node waits for its kubelet; --force --grace-period=0 removes it at once.
    server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bound"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"nginx"}]}}"#,
    );
    server.kubectl_ok(&["delete", "pod", "bound", "--wait=false"]);
    let pods = server.kubectl_ok(&["get", "pod", "bound"]);
    assert!(pods.contains("Terminating"), "{pods}");
    let out = server.kubectl_ok(&["delete", "pod", "bound", "--force", "--grace-period=0"]);
    assert!(
        out.contains("force deleted") || out.contains("deleted"),
        "{out}"
    );
    assert!(
        gone(&server.kubectl(&["get", "pod", "bound"])),
        "force delete is at once"
    );

    // Label-selected delete of several objects.
    for n in ["a", "b", "c"] {
        server.kubectl_ok(&["create", "configmap", n]);
        server.kubectl_ok(&["label", "cm", n, "group=x"]);
    }
    let out = server.kubectl_ok(&["delete", "cm", "-l", "group=x"]);
    assert_eq!(out.lines().count(), 3, "{out}");
}

/// A kubectl that watches: started with `-v=6`, returned once its watch request has been
/// answered (its request log names `watch=true`), so what the test does next happens while it
/// watches. Its stdout arrives line by line on `lines`.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Watching {
    fn start(server: &ApiServer, args: &[&str]) -> Watching {
        let mut all = args.to_vec();
        all.push("-v=6");
        let mut child = server.kubectl_spawn(&all);
        let (line_tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (watching_tx, watching) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().expect("piped stderr"));
        let stderr = std::thread::spawn(move || {
            let mut log = String::new();
            for line in err.lines().map_while(Result::ok) {
                if line.contains("watch=true") {
                    let _ = watching_tx.send(());
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        if watching.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let log = stderr.join().unwrap_or_default();
            panic!("kubectl {args:?} never started watching: {log}");
        }
        Watching {
            child,
            lines,
            stderr,
        }
    }

    /// Stdout lines until `done` says they are enough (or 30 s pass).
    fn read_until(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => break,
            }
        }
        got
    }

    /// Waits for kubectl to exit by itself: its status, stdout and log.
    fn finish(mut self) -> (bool, String, String) {
        let status = self.child.wait().expect("kubectl wait");
        let out: Vec<String> = self.lines.iter().collect();
        let log = self.stderr.join().unwrap_or_default();
        (status.success(), out.join("\n"), log)
    }
}

#[test]
fn get_watch_prints_changes_as_they_happen() {
    let server = ApiServer::start();
    let mut watch = Watching::start(&server, &["get", "cm", "-w", "--output-watch-events"]);
    server.kubectl_ok(&["create", "configmap", "watched", "--from-literal=a=1"]);
    server.kubectl_ok(&["label", "cm", "watched", "x=y"]);
    server.kubectl_ok(&["delete", "cm", "watched"]);
    let output = watch.read_until(|l| l.iter().filter(|l| l.contains("watched")).count() >= 3);
    let _ = watch.child.kill();
    let _ = watch.child.wait();
    let events: Vec<&String> = output.iter().filter(|l| l.contains("watched")).collect();
    assert_eq!(events.len(), 3, "{output:?}");
    assert!(
        events[0].starts_with("ADDED")
            && events[1].starts_with("MODIFIED")
            && events[2].starts_with("DELETED"),
        "{output:?}"
    );
}

#[test]
fn wait_for_condition_and_for_delete() {
    let server = ApiServer::start();
    server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"False","reason":"Starting"}]}}"#,
    );
    // Both waits are started, and seen watching, before the change they wait for: a wait that
    // found its condition already met would not test the watch.
    let waiter = Watching::start(
        &server,
        &["wait", "--for=condition=Ready", "node/n1", "--timeout=60s"],
    );
    server.kubectl_ok(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}"#,
    ]);
    let (ok, out, log) = waiter.finish();
    assert!(ok, "{out}\n{log}");
    assert!(out.contains("node/n1 condition met"), "{out}\n{log}");

    server.kubectl_ok(&["create", "configmap", "doomed"]);
    let waiter = Watching::start(
        &server,
        &["wait", "--for=delete", "cm/doomed", "--timeout=60s"],
    );
    server.kubectl_ok(&["delete", "cm", "doomed", "--wait=false"]);
    let (ok, out, log) = waiter.finish();
    assert!(ok, "{out}\n{log}");
    assert!(
        out.contains("configmap/doomed condition met"),
        "{out}\n{log}"
    );
}

#[test]
fn patch_with_json_and_merge_types() {
    let server = ApiServer::start();
    server.kubectl_ok(&[
        "create",
        "configmap",
        "p",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    let out = server.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"one","b":null}}"#,
    ]);
    assert!(out.contains("configmap/p patched"), "{out}");
    let out = server.kubectl_ok(&[
        "patch", "cm", "p", "--type=json",
        "-p", r#"[{"op":"add","path":"/data/c","value":"3"},{"op":"test","path":"/data/a","value":"one"}]"#,
    ]);
    assert!(out.contains("configmap/p patched"), "{out}");
    let data = server.kubectl_ok(&["get", "cm", "p", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"a":"one","c":"3"}"#);
    // A failing test op changes nothing and is reported as Kubernetes does.
    let out = server.kubectl(&[
        "patch",
        "cm",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/a","value":"zzz"},{"op":"remove","path":"/data/c"}]"#,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "p", "-o", "jsonpath={.data.c}"]),
        "3"
    );
    let out = server.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"one"}}"#,
    ]);
    assert!(out.contains("(no change)"), "{out}");
}
