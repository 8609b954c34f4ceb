//! Two kinds of evidence: bodies that kubectl 1.32 really sent (testdata/*.pb, captured with
//! `kubectl -v=9`), checked against the JSON the same kubectl command prints with
//! `--dry-run=client -o json`; and messages built with k8s-pb, for kinds and types kubectl's
//! commands do not reach.

use k8s_pb::api::{apps, authorization, batch, core, policy, rbac};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{Value, json};

use super::*;

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn roundtrip(api_version: &str, kind: &str, message: &impl prost::Message) -> Value {
    decode(&envelope(api_version, kind, message.encode_to_vec())).expect("decodes")
}

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        ..Default::default()
    })
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int_or_string(v: Value) -> Option<IntOrString> {
    Some(match v {
        Value::String(text) => IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: Some(text),
        },
        other => IntOrString {
            r#type: Some(0),
            int_val: other.as_i64().and_then(|i| i32::try_from(i).ok()),
            str_val: Some(String::new()),
        },
    })
}

#[test]
fn the_table_parses_and_names_the_kinds_kubectl_creates() {
    let schema = schema::schema().expect("schema.txt parses");
    for (api_version, kind) in [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("v1", "Pod"),
        ("v1", "ResourceQuota"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("policy/v1", "PodDisruptionBudget"),
        ("policy/v1", "Eviction"),
        ("networking.k8s.io/v1", "Ingress"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("v1", "DeleteOptions"),
        ("apps/v1", "DeleteOptions"),
    ] {
        assert!(
            schema.root(api_version, kind).is_some(),
            "{api_version} {kind}"
        );
    }
}

#[test]
fn kubectl_bodies_decode_to_the_json_kubectl_would_have_sent() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apiserver/protobuf/testdata");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "pb") {
            continue;
        }
        let body = std::fs::read(&path).expect("read body");
        let mut expected: Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).expect("json"))
                .expect("expected JSON parses");
        let got = decode(&body).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        drop_nulls_absent_from(&mut expected, &got);
        assert_eq!(got, expected, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} captured bodies");
}

/// Go writes `null` for a nil slice without omitempty (ClusterRole `rules`); the decoder leaves
/// the field out instead, which means the same to every reader.
fn drop_nulls_absent_from(expected: &mut Value, got: &Value) {
    if let (Value::Object(e), Value::Object(g)) = (expected, got) {
        e.retain(|k, v| !v.is_null() || g.contains_key(k));
        for (k, v) in e.iter_mut() {
            if let Some(g) = g.get(k) {
                drop_nulls_absent_from(v, g);
            }
        }
    }
}

#[test]
fn deployment_with_a_full_pod_template() {
    let container = core::v1::Container {
        name: s("app"),
        image: s("nginx:1.27"),
        command: vec!["nginx".into()],
        args: vec!["-g".into(), "daemon off;".into()],
        ports: vec![core::v1::ContainerPort {
            name: s("http"),
            container_port: Some(80),
            protocol: s("TCP"),
            host_port: Some(0),
            host_ip: s(""),
        }],
        env: vec![
            core::v1::EnvVar {
                name: s("PLAIN"),
                value: s("1"),
                value_from: None,
            },
            core::v1::EnvVar {
                name: s("POD"),
                value: s(""),
                value_from: Some(core::v1::EnvVarSource {
                    field_ref: Some(core::v1::ObjectFieldSelector {
                        api_version: s("v1"),
                        field_path: s("metadata.name"),
                    }),
                    ..Default::default()
                }),
            },
            core::v1::EnvVar {
                name: s("PASSWORD"),
                value: None,
                value_from: Some(core::v1::EnvVarSource {
                    secret_key_ref: Some(core::v1::SecretKeySelector {
                        local_object_reference: Some(core::v1::LocalObjectReference {
                            name: s("db"),
                        }),
                        key: s("password"),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(core::v1::ResourceRequirements {
            limits: [
                ("cpu".to_string(), quantity("500m")),
                ("memory".into(), quantity("128Mi")),
            ]
            .into(),
            requests: [("cpu".to_string(), quantity("250m"))].into(),
            claims: vec![],
        }),
        volume_mounts: vec![core::v1::VolumeMount {
            name: s("config"),
            read_only: Some(true),
            mount_path: s("/etc/app"),
            sub_path: s(""),
            ..Default::default()
        }],
        liveness_probe: Some(core::v1::Probe {
            handler: Some(core::v1::ProbeHandler {
                http_get: Some(core::v1::HttpGetAction {
                    path: s("/healthz"),
                    port: int_or_string(json!("http")),
                    host: s(""),
                    scheme: s("HTTP"),
                    http_headers: vec![],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            timeout_seconds: Some(1),
            period_seconds: Some(10),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            termination_grace_period_seconds: None,
        }),
        readiness_probe: Some(core::v1::Probe {
            handler: Some(core::v1::ProbeHandler {
                tcp_socket: Some(core::v1::TcpSocketAction {
                    port: int_or_string(json!(8080)),
                    host: s(""),
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            ..Default::default()
        }),
        security_context: Some(core::v1::SecurityContext {
            run_as_user: Some(0),
            allow_privilege_escalation: Some(false),
            capabilities: Some(core::v1::Capabilities {
                add: vec![],
                drop: vec!["ALL".into()],
            }),
            ..Default::default()
        }),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    let volumes = vec![
        core::v1::Volume {
            name: s("config"),
            volume_source: Some(core::v1::VolumeSource {
                config_map: Some(core::v1::ConfigMapVolumeSource {
                    local_object_reference: Some(core::v1::LocalObjectReference {
                        name: s("app-config"),
                    }),
                    items: vec![core::v1::KeyToPath {
                        key: s("a"),
                        path: s("a.conf"),
                        mode: Some(0o644),
                    }],
                    default_mode: Some(0o420),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
        core::v1::Volume {
            name: s("scratch"),
            volume_source: Some(core::v1::VolumeSource {
                empty_dir: Some(core::v1::EmptyDirVolumeSource {
                    medium: s(""),
                    size_limit: Some(quantity("1Gi")),
                }),
                ..Default::default()
            }),
        },
    ];
    let deployment = apps::v1::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            generate_name: s(""),
            namespace: s("default"),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(apps::v1::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["web".into(), "api".into()],
                }],
            }),
            template: Some(core::v1::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "web".to_string())].into(),
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::v1::PodSpec {
                    containers: vec![container],
                    volumes,
                    restart_policy: s("Always"),
                    termination_grace_period_seconds: Some(0),
                    automount_service_account_token: Some(false),
                    host_network: Some(false),
                    node_selector: [("disk".to_string(), "ssd".to_string())].into(),
                    tolerations: vec![core::v1::Toleration {
                        key: s("dedicated"),
                        operator: s("Equal"),
                        value: s("web"),
                        effect: s("NoSchedule"),
                        toleration_seconds: None,
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::v1::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::v1::RollingUpdateDeployment {
                    max_unavailable: int_or_string(json!("25%")),
                    max_surge: int_or_string(json!(1)),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
            paused: Some(false),
            progress_deadline_seconds: None,
        }),
        status: Some(apps::v1::DeploymentStatus::default()),
    };
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "creationTimestamp": null,
            "labels": {"app": "web"}
        },
        "spec": {
            "replicas": 0,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]
            },
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "app",
                        "image": "nginx:1.27",
                        "command": ["nginx"],
                        "args": ["-g", "daemon off;"],
                        "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                        "env": [
                            {"name": "PLAIN", "value": "1"},
                            {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}}}
                        ],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "128Mi"},
                            "requests": {"cpu": "250m"}
                        },
                        "volumeMounts": [{"name": "config", "readOnly": true, "mountPath": "/etc/app"}],
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                            "initialDelaySeconds": 5,
                            "timeoutSeconds": 1,
                            "periodSeconds": 10,
                            "successThreshold": 1,
                            "failureThreshold": 3
                        },
                        "readinessProbe": {"tcpSocket": {"port": 8080}},
                        "securityContext": {
                            "runAsUser": 0,
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "app-config", "items": [{"key": "a", "path": "a.conf", "mode": 420}], "defaultMode": 272}},
                        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
                    ],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": false,
                    "nodeSelector": {"disk": "ssd"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]
                }
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
            "revisionHistoryLimit": 10
        },
        "status": {}
    });
    assert_eq!(roundtrip("apps/v1", "Deployment", &deployment), expected);
}

#[test]
fn job_and_cronjob() {
    let template = || core::v1::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(core::v1::PodSpec {
            containers: vec![core::v1::Container {
                name: s("j"),
                image: s("busybox"),
                command: vec!["date".into()],
                ..Default::default()
            }],
            restart_policy: s("OnFailure"),
            ..Default::default()
        }),
    };
    let job_spec = || batch::v1::JobSpec {
        parallelism: None,
        completions: Some(1),
        backoff_limit: Some(0),
        active_deadline_seconds: Some(600),
        ttl_seconds_after_finished: Some(0),
        suspend: Some(false),
        completion_mode: s("NonIndexed"),
        template: Some(template()),
        ..Default::default()
    };
    let expected_spec = json!({
        "completions": 1,
        "backoffLimit": 0,
        "activeDeadlineSeconds": 600,
        "ttlSecondsAfterFinished": 0,
        "suspend": false,
        "completionMode": "NonIndexed",
        "template": {
            "metadata": {},
            "spec": {
                "containers": [{"name": "j", "image": "busybox", "command": ["date"]}],
                "restartPolicy": "OnFailure"
            }
        }
    });
    let job = batch::v1::Job {
        metadata: meta("j"),
        spec: Some(job_spec()),
        status: None,
    };
    assert_eq!(
        roundtrip("batch/v1", "Job", &job),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": expected_spec})
    );
    let cronjob = batch::v1::CronJob {
        metadata: meta("cj"),
        spec: Some(batch::v1::CronJobSpec {
            schedule: s("*/5 * * * *"),
            time_zone: s("Etc/UTC"),
            starting_deadline_seconds: Some(0),
            concurrency_policy: s("Forbid"),
            suspend: Some(true),
            job_template: Some(batch::v1::JobTemplateSpec {
                metadata: Some(meta::ObjectMeta::default()),
                spec: Some(job_spec()),
            }),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(1),
        }),
        status: Some(batch::v1::CronJobStatus {
            last_schedule_time: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(123),
            }),
            ..Default::default()
        }),
    };
    assert_eq!(
        roundtrip("batch/v1", "CronJob", &cronjob),
        json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "cj"},
            "spec": {
                "schedule": "*/5 * * * *",
                "timeZone": "Etc/UTC",
                "startingDeadlineSeconds": 0,
                "concurrencyPolicy": "Forbid",
                "suspend": true,
                "jobTemplate": {"metadata": {}, "spec": expected_spec},
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 1
            },
            // metav1.Time keeps whole seconds, as the Go server does.
            "status": {"lastScheduleTime": "2023-11-14T22:13:20Z"}
        })
    );
}

#[test]
fn eviction_role_and_access_review() {
    let eviction = policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: s("web-0"),
            namespace: s("default"),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(meta::Preconditions {
                uid: s("1234"),
                resource_version: None,
            }),
            propagation_policy: s("Background"),
            dry_run: vec!["All".into()],
            ..Default::default()
        }),
    };
    assert_eq!(
        roundtrip("policy/v1", "Eviction", &eviction),
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "web-0", "namespace": "default"},
            "deleteOptions": {
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "1234"},
                "propagationPolicy": "Background",
                "dryRun": ["All"]
            }
        })
    );

    let role = rbac::v1::Role {
        metadata: meta("r"),
        rules: vec![rbac::v1::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into(), "apps".into()],
            resources: vec!["pods".into(), "deployments".into()],
            resource_names: vec![],
            non_resource_ur_ls: vec![],
        }],
    };
    assert_eq!(
        roundtrip("rbac.authorization.k8s.io/v1", "Role", &role),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "r"},
            "rules": [{"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods", "deployments"]}]
        })
    );

    let review = authorization::v1::SubjectAccessReview {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authorization::v1::SubjectAccessReviewSpec {
            user: s("alice"),
            groups: vec!["devs".into()],
            extra: [(
                "scopes".to_string(),
                authorization::v1::ExtraValue {
                    items: vec!["a".into(), "b".into()],
                },
            )]
            .into(),
            non_resource_attributes: Some(authorization::v1::NonResourceAttributes {
                path: s("/healthz"),
                verb: s("get"),
            }),
            ..Default::default()
        }),
        status: Some(authorization::v1::SubjectAccessReviewStatus {
            allowed: Some(false),
            ..Default::default()
        }),
    };
    assert_eq!(
        roundtrip("authorization.k8s.io/v1", "SubjectAccessReview", &review),
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {},
            "spec": {
                "user": "alice",
                "groups": ["devs"],
                "extra": {"scopes": ["a", "b"]},
                "nonResourceAttributes": {"path": "/healthz", "verb": "get"}
            },
            "status": {"allowed": false}
        })
    );
}

#[test]
fn special_types_bytes_raw_json_and_managed_fields() {
    let secret = core::v1::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("s"),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:data":{".":{},"f:k":{}}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..Default::default()
        }),
        immutable: Some(false),
        data: [
            ("k".to_string(), b"\x00\xffv".to_vec()),
            ("empty".into(), vec![]),
        ]
        .into(),
        string_data: [("plain".to_string(), "text".to_string())].into(),
        r#type: s("Opaque"),
    };
    assert_eq!(
        roundtrip("v1", "Secret", &secret),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s",
                "managedFields": [{
                    "manager": "kubectl",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "1970-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}, "f:k": {}}}
                }]
            },
            "immutable": false,
            "data": {"k": "AP92", "empty": ""},
            "stringData": {"plain": "text"},
            "type": "Opaque"
        })
    );

    let revision = apps::v1::ControllerRevision {
        metadata: meta("rev"),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"template":{"$patch":"replace"}}}"#.to_vec()),
        }),
        revision: Some(2),
    };
    assert_eq!(
        roundtrip("apps/v1", "ControllerRevision", &revision),
        json!({
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {"name": "rev"},
            "data": {"spec": {"template": {"$patch": "replace"}}},
            "revision": 2
        })
    );

    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: meta("l"),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            acquire_time: Some(meta::MicroTime::default()),
            ..Default::default()
        }),
    };
    assert_eq!(
        roundtrip("coordination.k8s.io/v1", "Lease", &lease),
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "l"},
            "spec": {
                "holderIdentity": "node-1",
                "leaseDurationSeconds": 40,
                "renewTime": "2023-11-14T22:13:20.123456Z",
                "acquireTime": null
            }
        })
    );
}

#[test]
fn repeated_ints_packed_or_not_and_negative_values() {
    let mut spec = core::v1::PodSecurityContext {
        supplemental_groups: vec![1, 2, 3],
        run_as_user: Some(-1),
        ..Default::default()
    };
    let unpacked = spec.encode_to_vec();
    // The same list packed: field 4, wire type 2, three one-byte varints.
    spec.supplemental_groups.clear();
    let mut packed = spec.encode_to_vec();
    packed.extend([0x22, 3, 1, 2, 3]);
    for bytes in [unpacked, packed] {
        let pod = core::v1::PodSpec {
            security_context: Some(core::v1::PodSecurityContext::decode(&bytes[..]).expect("ok")),
            ..Default::default()
        };
        let got = roundtrip(
            "v1",
            "Pod",
            &core::v1::Pod {
                metadata: meta("p"),
                spec: Some(pod),
                status: None,
            },
        );
        assert_eq!(
            got["spec"]["securityContext"],
            json!({"runAsUser": -1, "supplementalGroups": [1, 2, 3]})
        );
    }
}

#[test]
fn delete_options_under_any_group_version() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(5),
        orphan_dependents: None,
        ..Default::default()
    };
    for api_version in ["v1", "apps/v1", "batch/v1"] {
        assert_eq!(
            roundtrip(api_version, "DeleteOptions", &options),
            json!({"apiVersion": api_version, "kind": "DeleteOptions", "gracePeriodSeconds": 5})
        );
    }
}

#[test]
fn unknown_fields_from_newer_clients_are_skipped() {
    let mut raw = core::v1::ConfigMap {
        metadata: meta("cm"),
        data: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 99 as a string, then field 98 as a varint.
    raw.extend([0x9a, 0x06, 2, b'h', b'i', 0x90, 0x06, 7]);
    assert_eq!(
        decode(&envelope("v1", "ConfigMap", raw)).expect("decodes"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}})
    );
}

fn status_of(body: &[u8]) -> (u16, String) {
    let e = decode(body).expect_err("must fail");
    (e.code, e.message)
}

#[test]
fn malformed_and_unsupported_bodies() {
    let cm = core::v1::ConfigMap {
        metadata: meta("cm"),
        ..Default::default()
    }
    .encode_to_vec();

    let (code, message) = status_of(b"{\"kind\":\"ConfigMap\"}");
    assert_eq!(code, 400);
    assert!(message.contains("magic"), "{message}");

    let mut truncated = envelope("v1", "ConfigMap", cm.clone());
    truncated.truncate(truncated.len() - 3);
    assert_eq!(status_of(&truncated).0, 400);

    // A string field (metadata.name) arriving as a varint.
    let (code, message) = status_of(&envelope("v1", "ConfigMap", vec![0x0a, 2, 0x08, 1]));
    assert_eq!(code, 400);
    assert!(message.contains("ObjectMeta.name"), "{message}");

    let (code, message) = status_of(&envelope("example.com/v1", "Widget", cm.clone()));
    assert_eq!(code, 415);
    assert!(message.contains("Widget"), "{message}");

    let (code, _) = status_of(&envelope("", "", cm.clone()));
    assert_eq!(code, 400);

    let gzip = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("ConfigMap"),
        }),
        raw: Some(cm),
        content_encoding: s("gzip"),
        content_type: None,
    };
    let mut body = MAGIC.to_vec();
    body.extend(gzip.encode_to_vec());
    assert_eq!(status_of(&body).0, 415);

    // Hostile nesting: a RawExtension holding an envelope holding a RawExtension, and so on.
    let mut raw = br#"{}"#.to_vec();
    for _ in 0..(MAX_DEPTH + 2) {
        let revision = apps::v1::ControllerRevision {
            metadata: None,
            data: Some(RawExtension {
                raw: Some(envelope_bytes(raw)),
            }),
            revision: None,
        };
        raw = revision.encode_to_vec();
    }
    let (code, message) = status_of(&envelope("apps/v1", "ControllerRevision", raw));
    assert_eq!(code, 400);
    assert!(message.contains("deeply"), "{message}");
}

fn envelope_bytes(raw: Vec<u8>) -> Vec<u8> {
    envelope("apps/v1", "ControllerRevision", raw)
}

#[test]
fn go_duration_strings() {
    for (nanos, text) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-5_000_000_000, "-5s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ] {
        assert_eq!(go_duration(nanos), text, "{nanos}");
    }
}

#[test]
fn times_before_the_epoch_and_out_of_range() {
    assert_eq!(
        rfc3339(-1, 0, false).ok(),
        Some("1969-12-31T23:59:59Z".into())
    );
    assert_eq!(
        rfc3339(0, -1_000, true).ok(),
        Some("1969-12-31T23:59:59.999999Z".into())
    );
    // Go cannot write year 10000 in RFC 3339, nor year -1.
    assert!(rfc3339(253_402_300_800, 0, false).is_err());
    assert!(rfc3339(-62_167_219_201, 0, false).is_err());
    assert!(rfc3339(i64::MAX, i64::MAX, true).is_err());

    let event = core::v1::Event {
        metadata: meta("e"),
        first_timestamp: Some(meta::Time {
            seconds: Some(i64::MAX),
            nanos: None,
        }),
        ..Default::default()
    };
    let body = envelope("v1", "Event", event.encode_to_vec());
    let (code, message) = status_of(&body);
    assert_eq!(code, 400);
    assert!(message.contains("firstTimestamp"), "{message}");
}
