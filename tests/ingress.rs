//! The built-in Ingress controller end to end: the seed tutorial's Ingress chapter replayed on
//! a real cluster with busybox httpd stand-ins for its apps, driven by real kubectl and reached
//! from this machine with curl and openssl through the host ports the cluster published (read
//! back from the cluster, since other clusters on this machine may hold 80/443).

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::images::{TestImage, build_web_image};
use common::*;

/// An httpd serving /www on PORT, logging requests to stderr (`kubectl logs`), with files
/// FILES ("path=content" words) and a CGI script printing its environment at /cgi-bin/env.
const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, namespace: NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: IMAGE
        imagePullPolicy: Never
        command: ["sh", "-c"]
        args:
        - |
          mkdir -p /www/cgi-bin
          for f in FILES; do p=${f%%=*}; mkdir -p /www$(dirname $p); echo ${f#*=} > /www$p; done
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\nenv | sort\ncat >/dev/null\n' > /www/cgi-bin/env
          chmod +x /www/cgi-bin/env
          head -c 67108864 /dev/zero > /www/big
          exec httpd -f -vv -p PORT -h /www
        readinessProbe:
          tcpSocket: {port: PORT}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: NAME, namespace: NS}
spec:
  selector: {app: NAME}
  ports: [{name: http, port: SVCPORT, targetPort: PORT}]
"#;

fn app(
    cluster: &Cluster,
    image: &str,
    ns: &str,
    name: &str,
    port: u16,
    svc_port: u16,
    files: &str,
) {
    let manifest = APP
        .replace("NAME", name)
        .replace("NS", ns)
        .replace("IMAGE", image)
        .replace("FILES", files)
        .replace("SVCPORT", &svc_port.to_string())
        .replace("PORT", &port.to_string());
    apply(cluster, &manifest);
}

fn apply(cluster: &Cluster, manifest: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("cannot run curl (apt-get install curl)")
}

/// `curl -H Host:<host> http://127.0.0.1:<port><path>`: "<code> <body>".
fn get(port: u16, host: &str, path: &str) -> String {
    let out = curl(&[
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-H",
        &format!("Host: {host}"),
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    let t = stdout(&out);
    match t.rsplit_once('\n') {
        Some((body, code)) => format!("{code} {}", body.trim()),
        None => format!("curl failed: {}", text(&out)),
    }
}

/// The host ports the cluster published the ingress on: (http, https), for the Service's
/// own ports (80/443 unless the cluster was made with other ones).
fn ingress_ports(cluster: &Cluster) -> (u16, u16) {
    let svc_ports = cluster.ingress_service("{.spec.ports[0].port} {.spec.ports[1].port}");
    let (h, s) = svc_ports.trim().split_once(' ').expect("two ports");
    let (h, s): (u16, u16) = (h.parse().expect("a port"), s.parse().expect("a port"));
    let mut ports = (0, 0);
    wait_until(
        "the Ingress controller's host ports",
        Duration::from_secs(60),
        || match (cluster.ingress_host_port(h), cluster.ingress_host_port(s)) {
            (Some(a), Some(b)) => {
                ports = (a, b);
                Ok(())
            }
            _ => Err(cluster.ingress_service_annotation("kcluster.dev/host-ports")),
        },
    );
    ports
}

fn events(cluster: &Cluster, ns: &str, ingress: &str) -> String {
    cluster.kubectl_ok(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.kind=Ingress,involvedObject.name={ingress}"),
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
    ])
}

const MYBLOG: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: myblog
  namespace: luffy
ANNOTATIONS
spec:
  rules:
  - host: myblog.luffy.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: myblog
            port:
              number: 80
TLS
"#;

fn myblog(annotations: &str, tls: bool) -> String {
    MYBLOG.replace("ANNOTATIONS", annotations).replace(
        "TLS",
        if tls {
            "  tls:\n  - hosts:\n    - myblog.luffy.com\n    secretName: tls-myblog\n"
        } else {
            ""
        },
    )
}

const SEED_ANNOTATIONS: &str = r#"  annotations:
    nginx.ingress.kubernetes.io/force-ssl-redirect: "false"
    nginx.ingress.kubernetes.io/proxy-body-size: 1000m
    nginx.ingress.kubernetes.io/ssl-redirect: "false"
    nginx.org/client-max-body-size: 1000m"#;

fn subject(https: u16, sni: Option<&str>) -> String {
    let connect = format!("127.0.0.1:{https}");
    let mut args = vec!["s_client", "-connect", &connect];
    if let Some(s) = sni {
        args.extend(["-servername", s]);
    } else {
        args.push("-noservername");
    }
    let sc = Command::new("openssl")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run openssl (apt-get install openssl)");
    let pem = stdout(&sc);
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl x509");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pem.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("openssl x509");
    stdout(&out)
}

/// One WebSocket round trip through the ingress on `port` for `host`.
fn websocket_echo(port: u16, host: &str, msg: &str) -> Result<(), String> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{host}:{port}/chat"), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        ws.send(Message::Text(msg.into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "no reply in 10 s".to_string())?;
        match reply {
            Some(Ok(Message::Text(t))) if t.as_str() == format!("echo: {msg}") => Ok(()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    })
}

#[test]
fn seed_ingress_chapter() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("ing");
    let tag = format!("kcluster-e2e/httpd:{name}");
    let _image: TestImage = build_web_image(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);

    // Published at create: the host ports, in `kcluster port ls` too.
    let (http, https) = ingress_ports(&cluster);
    let ls = stdout(&sandbox.kcluster(&["port", "ls", "--name", &name]));
    assert!(
        ls.contains(&format!("127.0.0.1:{http}/TCP"))
            && ls.contains("kube-system/ingress-nginx-controller"),
        "kcluster port ls: {ls}"
    );
    // The default class, as charts expect it.
    let class = cluster.kubectl_ok(&[
        "get",
        "ingressclass",
        "nginx",
        "-o",
        "jsonpath={.spec.controller} {.metadata.annotations.ingressclass\\.kubernetes\\.io/is-default-class}",
    ]);
    assert_eq!(class, "k8s.io/ingress-nginx true");

    cluster.kubectl_ok(&["create", "ns", "luffy"]);
    app(
        &cluster,
        &tag,
        "luffy",
        "myblog",
        8002,
        80,
        "/blog/index/index.html=myblog-index /admin/login/index.html=myblog-admin",
    );
    app(
        &cluster,
        &tag,
        "default",
        "reviews",
        9080,
        9080,
        "/reviews/0=reviews-0 /reviews/1=reviews-1",
    );
    app(
        &cluster,
        &tag,
        "default",
        "details",
        9080,
        9080,
        "/details/0=details-0",
    );
    for (ns, d) in [
        ("luffy", "myblog"),
        ("default", "reviews"),
        ("default", "details"),
    ] {
        cluster.kubectl_ok(&[
            "-n",
            ns,
            "rollout",
            "status",
            &format!("deploy/{d}"),
            "--timeout=120s",
        ]);
    }

    // T2: the host rule; another host gets the default backend's 404.
    apply(&cluster, &myblog("", false));
    wait_output(
        "myblog through the ingress",
        || get(http, "myblog.luffy.com", "/blog/index/"),
        &["200 myblog-index"],
    );
    assert!(get(http, "other.luffy.com", "/blog/index/").starts_with("404"));
    // T3: class filled in by the API server, status with the host address.
    let cls = cluster.kubectl_ok(&[
        "-n",
        "luffy",
        "get",
        "ing",
        "myblog",
        "-o",
        "jsonpath={.spec.ingressClassName}",
    ]);
    assert_eq!(cls, "nginx");
    cluster.wait_for(
        &[
            "-n",
            "luffy",
            "get",
            "ing",
            "myblog",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        Duration::from_secs(30),
        |s| s == "127.0.0.1",
    );

    // T4-T6: the seed's CN-only certificate, chosen by SNI; HTTP redirected with 308.
    let key = sandbox.path().join("tls.key");
    let crt = sandbox.path().join("tls.crt");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "2920", "-newkey", "rsa:2048", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", "/CN=*.luffy.com/O=ingress-nginx"])
        .output()
        .expect("openssl req");
    assert!(out.status.success(), "openssl req: {}", text(&out));
    cluster.kubectl_ok(&[
        "-n",
        "luffy",
        "create",
        "secret",
        "tls",
        "tls-myblog",
        "--key",
        key.to_str().expect("path"),
        "--cert",
        crt.to_str().expect("path"),
    ]);
    apply(&cluster, &myblog("", true));
    let resolve = format!("myblog.luffy.com:{https}:127.0.0.1");
    let url = format!("https://myblog.luffy.com:{https}/blog/index/");
    wait_output(
        "the seed's certificate for myblog.luffy.com",
        || subject(https, Some("myblog.luffy.com")),
        &["CN = *.luffy.com"],
    );
    let body = stdout(&curl(&["-k", "--resolve", &resolve, &url]));
    assert_eq!(body.trim(), "myblog-index");
    let head = stdout(&curl(&[
        "-sI",
        "-H",
        "Host: myblog.luffy.com",
        &format!("http://127.0.0.1:{http}/blog/index/?a=1"),
    ]));
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    let want = if https == 443 {
        "location: https://myblog.luffy.com/blog/index/?a=1".to_string()
    } else {
        format!("location: https://myblog.luffy.com:{https}/blog/index/?a=1")
    };
    assert!(head.to_ascii_lowercase().contains(&want), "{head}");
    // T7: no SNI → the default certificate.
    assert!(subject(https, None).contains("Kubernetes Ingress Controller Fake Certificate"));
    // Status lists both ports now.
    cluster.wait_for(
        &[
            "-n",
            "luffy",
            "get",
            "ing",
            "myblog",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ports[*].port}",
        ],
        Duration::from_secs(30),
        |s| s == format!("{http} {https}"),
    );

    // T9-T10: the seed's annotations — no redirect, 5 MB POSTs pass; without them 413.
    let post = |host: &str| {
        let file = sandbox.path().join("5m");
        std::fs::write(&file, vec![0u8; 5 * 1024 * 1024]).expect("write");
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
            &format!("@{}", file.display()),
            "-H",
            &format!("Host: {host}"),
            &format!("http://127.0.0.1:{http}/cgi-bin/env"),
        ]);
        stdout(&out)
    };
    cluster.kubectl_ok(&[
        "-n",
        "luffy",
        "annotate",
        "ing",
        "myblog",
        "nginx.ingress.kubernetes.io/ssl-redirect=false",
    ]);
    wait_output("no redirect", || post("myblog.luffy.com"), &["413"]);
    apply(&cluster, &myblog(SEED_ANNOTATIONS, true));
    wait_output("a 5 MB POST", || post("myblog.luffy.com"), &["200"]);
    assert!(get(http, "myblog.luffy.com", "/admin/login/").starts_with("200 myblog-admin"));
    // The NGINX Inc. annotation is not ours: left alone. Ours, unknown, gets a Warning.
    cluster.kubectl_ok(&[
        "-n",
        "luffy",
        "annotate",
        "ing",
        "myblog",
        "nginx.ingress.kubernetes.io/configuration-snippet=more_set_headers x;",
    ]);
    wait_output(
        "a Warning naming the unsupported annotation",
        || events(&cluster, "luffy", "myblog"),
        &[
            "UnsupportedAnnotation",
            "nginx.ingress.kubernetes.io/configuration-snippet",
        ],
    );
    // T8: the secret deleted → default certificate, HTTPS still served.
    cluster.kubectl_ok(&["-n", "luffy", "delete", "secret", "tls-myblog"]);
    wait_output(
        "the default certificate",
        || subject(https, Some("myblog.luffy.com")),
        &["Kubernetes Ingress Controller Fake Certificate"],
    );
    wait_output(
        "an event about the missing secret",
        || events(&cluster, "luffy", "myblog"),
        &["DefaultCertificate", "secret luffy/tls-myblog not found"],
    );

    // T11: the bookstore's two paths.
    apply(
        &cluster,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bookstore, namespace: default}
spec:
  rules:
  - host: bookstore.luffy.com
    http:
      paths:
      - {path: /reviews, pathType: Prefix, backend: {service: {name: reviews, port: {number: 9080}}}}
      - {path: /details, pathType: Prefix, backend: {service: {name: details, port: {number: 9080}}}}
"#,
    );
    let b = |p: &str| get(http, "bookstore.luffy.com", p);
    wait_output("bookstore reviews", || b("/reviews/0"), &["200 reviews-0"]);
    assert!(b("/details/0").starts_with("200 details-0"));
    assert!(b("/detailsX/0").starts_with("404"), "{}", b("/detailsX/0"));
    assert!(b("/other").starts_with("404"));

    // T12: the seed's rewrite, case-insensitive, seen by the backend.
    cluster.kubectl_ok(&["delete", "ing", "bookstore"]);
    apply(
        &cluster,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bookstore-reviews
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /reviews/$1
spec:
  rules:
  - host: bookstore.luffy.com
    http:
      paths:
      - {path: "/api/reviews/(.*)", pathType: Prefix, backend: {service: {name: reviews, port: {number: 9080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bookstore-details}
spec:
  rules:
  - host: bookstore.luffy.com
    http:
      paths:
      - {path: /details, pathType: Prefix, backend: {service: {name: details, port: {number: 9080}}}}
      - {path: /cgi-bin, pathType: Prefix, backend: {service: {name: details, port: {number: 9080}}}}
"#,
    );
    wait_output("the rewrite", || b("/api/reviews/0"), &["200 reviews-0"]);
    assert!(b("/API/Reviews/1").starts_with("200 reviews-1"));
    // The second Ingress is its own object: the route table may take it in a later rebuild.
    wait_output(
        "the details Ingress",
        || b("/details/0"),
        &["200 details-0"],
    );
    wait_output(
        "the rewritten path in the backend's log",
        || stdout(&cluster.kubectl(&["logs", "deploy/reviews"])),
        &["url:/reviews/1"],
    );
    wait_output(
        "the Warning about the seed's Prefix regex path",
        || events(&cluster, "default", "bookstore-reviews"),
        &["PathNotStrict"],
    );

    // T13: the headers the backend sees.
    let env = get(http, "bookstore.luffy.com", "/cgi-bin/env?x=1");
    for want in [
        "HTTP_HOST=bookstore.luffy.com",
        "HTTP_X_REAL_IP=",
        "HTTP_X_FORWARDED_FOR=",
        "HTTP_X_FORWARDED_HOST=bookstore.luffy.com",
        &format!("HTTP_X_FORWARDED_PORT={http}"),
        "HTTP_X_FORWARDED_PROTO=http",
        "HTTP_X_REQUEST_ID=",
        "QUERY_STRING=x=1",
    ] {
        assert!(env.contains(want), "no {want} in:\n{env}");
    }

    // Bad input: a missing Service answers 503 with a Warning; a bad regex refuses that path only.
    apply(
        &cluster,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: broken
  annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}
spec:
  rules:
  - host: broken.example
    http:
      paths:
      - {path: /gone, pathType: ImplementationSpecific, backend: {service: {name: nope, port: {number: 80}}}}
      - {path: "/bad/(", pathType: ImplementationSpecific, backend: {service: {name: details, port: {number: 9080}}}}
      - {path: /details, pathType: ImplementationSpecific, backend: {service: {name: details, port: {number: 9080}}}}
"#,
    );
    wait_output(
        "the good path of a broken Ingress",
        || get(http, "broken.example", "/details/0"),
        &["200 details-0"],
    );
    assert!(get(http, "broken.example", "/gone").starts_with("503"));
    wait_output(
        "Warnings about the broken Ingress",
        || events(&cluster, "default", "broken"),
        &[
            "BackendNotFound",
            "service default/nope not found",
            "InvalidPath",
        ],
    );

    // More annotations: basic auth, cookie affinity, redirects, app-root, source ranges, CORS.
    let htpasswd = Command::new("openssl")
        .args(["passwd", "-apr1", "s3cret"])
        .output()
        .expect("openssl passwd");
    let auth_file = sandbox.path().join("auth");
    std::fs::write(&auth_file, format!("foo:{}", stdout(&htpasswd).trim())).expect("write");
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "basic-auth",
        &format!("--from-file=auth={}", auth_file.display()),
    ]);
    let annotated = |host: &str, annotations: &str| {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: details, port: {{number: 9080}}}}}}}}
---
"#,
            name = host.replace('.', "-")
        )
    };
    let p = "nginx.ingress.kubernetes.io";
    apply(
        &cluster,
        &[
            annotated(
                "auth.example",
                &format!(
                    "{p}/auth-type: basic, {p}/auth-secret: basic-auth, {p}/auth-realm: kcluster"
                ),
            ),
            annotated(
                "sticky.example",
                &format!("{p}/affinity: cookie, {p}/session-cookie-max-age: \"60\""),
            ),
            annotated(
                "moved.example",
                &format!("{p}/permanent-redirect: \"https://moved.example/new\""),
            ),
            annotated("root.example", &format!("{p}/app-root: /details/0")),
            annotated(
                "deny.example",
                &format!("{p}/whitelist-source-range: 10.255.255.255/32"),
            ),
            annotated("cors.example", &format!("{p}/enable-cors: \"true\"")),
        ]
        .concat(),
    );
    let code = |extra: &[&str], host: &str, path: &str| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        let h = format!("Host: {host}");
        let url = format!("http://127.0.0.1:{http}{path}");
        args.extend(["-H", &h, &url]);
        stdout(&curl(&args))
    };
    wait_output(
        "basic auth refusing",
        || code(&[], "auth.example", "/details/0"),
        &["401"],
    );
    assert_eq!(
        code(&["-u", "foo:s3cret"], "auth.example", "/details/0"),
        "200"
    );
    assert_eq!(
        code(&["-u", "foo:wrong"], "auth.example", "/details/0"),
        "401"
    );
    let head = |host: &str, path: &str, extra: &[&str]| {
        let h = format!("Host: {host}");
        let url = format!("http://127.0.0.1:{http}{path}");
        let mut args = vec!["-s", "-o", "/dev/null", "-D", "-", "-H", &h];
        args.extend_from_slice(extra);
        args.push(&url);
        stdout(&curl(&args)).to_ascii_lowercase()
    };
    let sticky = head("sticky.example", "/details/0", &[]);
    assert!(
        sticky.contains("set-cookie: ingresscookie=") && sticky.contains("max-age=60"),
        "{sticky}"
    );
    let moved = head("moved.example", "/x", &[]);
    assert!(
        moved.starts_with("http/1.1 301") && moved.contains("location: https://moved.example/new"),
        "{moved}"
    );
    let root = head("root.example", "/", &[]);
    assert!(
        root.starts_with("http/1.1 302") && root.contains("/details/0"),
        "{root}"
    );
    assert_eq!(code(&[], "deny.example", "/details/0"), "403");
    let cors = head(
        "cors.example",
        "/details/0",
        &["-X", "OPTIONS", "-H", "Origin: http://a.example"],
    );
    assert!(
        cors.starts_with("http/1.1 204") && cors.contains("access-control-allow-origin: *"),
        "{cors}"
    );

    // Canary: half the requests by weight, all of them by header.
    apply(
        &cluster,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: main}
spec:
  rules:
  - host: canary.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: reviews, port: {number: 9080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: canary
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-weight: "50"
    nginx.ingress.kubernetes.io/canary-by-header: X-Canary
spec:
  rules:
  - host: canary.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: details, port: {number: 9080}}}}
"#,
    );
    wait_output(
        "the canary",
        || get(http, "canary.example", "/details/0"),
        &["200 details-0"],
    );
    let mut canary = 0;
    for _ in 0..200 {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: canary.example",
            &format!("http://127.0.0.1:{http}/details/0"),
        ]);
        if stdout(&out) == "200" {
            canary += 1;
        }
    }
    assert!(
        (60..=140).contains(&canary),
        "{canary} of 200 went to the canary"
    );
    let always = curl(&[
        "-H",
        "Host: canary.example",
        "-H",
        "X-Canary: always",
        &format!("http://127.0.0.1:{http}/details/0"),
    ]);
    assert_eq!(stdout(&always).trim(), "details-0");

    // WebSocket through the proxy (the upgrade passed through, frames both ways).
    apply(
        &cluster,
        &r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ws}
spec:
  selector: {matchLabels: {app: ws}}
  template:
    metadata: {labels: {app: ws}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: ws, image: IMAGE, imagePullPolicy: Never, command: [ws-echo, "8080"]}
---
apiVersion: v1
kind: Service
metadata: {name: ws}
spec:
  selector: {app: ws}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ws}
spec:
  rules:
  - host: ws.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: ws, port: {number: 80}}}}
"#
        .replace("IMAGE", &tag),
    );
    cluster.kubectl_ok(&["rollout", "status", "deploy/ws", "--timeout=120s"]);
    wait_until(
        "a WebSocket echo through the ingress",
        Duration::from_secs(30),
        || websocket_echo(http, "ws.example", "hello"),
    );

    // An Ingress edited while a long download runs does not cut it.
    let download = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "--limit-rate",
            "8M",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "-H",
            "Host: myblog.luffy.com",
        ])
        .arg(format!("http://127.0.0.1:{http}/big"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    cluster.kubectl_ok(&[
        "-n",
        "luffy",
        "annotate",
        "ing",
        "myblog",
        "nginx.ingress.kubernetes.io/proxy-read-timeout=120",
    ]);
    apply(
        &cluster,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: extra, namespace: luffy}
spec:
  rules:
  - host: extra.luffy.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: myblog, port: {number: 80}}}}
"#,
    );
    wait_output(
        "the new Ingress while downloading",
        || get(http, "extra.luffy.com", "/blog/index/"),
        &["200 myblog-index"],
    );
    let out = download.wait_with_output().expect("curl");
    assert_eq!(stdout(&out), "200 67108864", "{}", text(&out));

    tls_backends(&cluster, http);
    send_timeout(&cluster, &sandbox, http);
}

/// The cluster network's gateway: this machine as the cluster's containers reach it.
fn gateway(cluster: &Cluster) -> String {
    let gateway = stdout(&docker(&[
        "network",
        "inspect",
        &format!("kcluster-{}", cluster.name),
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]))
    .trim()
    .to_string();
    assert!(!gateway.is_empty(), "the cluster network has no gateway");
    gateway
}

/// A selector-less Service `name` (port 80) whose one endpoint is `ip:port`.
fn external_service(name: &str, ip: &str, port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: web, port: 80, targetPort: {port}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: {name}}}
subsets:
- addresses: [{{ip: {ip}}}]
  ports: [{{name: web, port: {port}}}]
"#
    )
}

/// An Ingress for `host` to Service `service` port 80, with `annotations` (a YAML flow map body).
fn simple_ingress(name: &str, host: &str, service: &str, annotations: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"#
    )
}

/// proxy-send-timeout: an upstream that accepts the connection and never reads the request
/// is given up on after the send timeout (504), long before the read timeout would end it.
fn send_timeout(cluster: &Cluster, sandbox: &Sandbox, http: u16) {
    let listener = std::net::TcpListener::bind((gateway(cluster).as_str(), 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for tcp in listener.incoming().flatten() {
            held.push(tcp);
        }
    });
    let mut manifest = external_service("stalled", &gateway(cluster), port);
    manifest.push_str(&simple_ingress(
        "stalled",
        "stalled.example",
        "stalled",
        "nginx.ingress.kubernetes.io/proxy-send-timeout: \"2\", nginx.ingress.kubernetes.io/proxy-read-timeout: \"600\", nginx.ingress.kubernetes.io/proxy-body-size: \"0\"",
    ));
    apply(cluster, &manifest);
    // More than every buffer between the proxy and a process that does not read can hold.
    let upload = sandbox.path().join("upload");
    std::fs::write(&upload, vec![b'x'; 64 << 20]).expect("write the upload");
    wait_output(
        "a stalled upload given up on after proxy-send-timeout",
        || {
            let out = curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Host: stalled.example",
                "--data-binary",
                &format!("@{}", upload.display()),
                &format!("http://127.0.0.1:{http}/"),
            ]);
            stdout(&out)
        },
        &["504"],
    );
}

/// A TLS server in this process with a self-signed certificate, speaking HTTP/1.1 and HTTP/2
/// (ALPN); every answer says which protocol the request came in and that it came over TLS.
/// Returns its port.
fn start_tls_backend(bind: &str) -> u16 {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["backend.invalid".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key"),
    )
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind((bind, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let body = format!("tls {:?} {}", req.version(), req.uri().path());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
    });
    port
}

/// backend-protocol HTTPS and GRPCS: the ingress speaks TLS to the pod (HTTP/1.1, or HTTP/2 by
/// ALPN) without verifying its self-signed certificate, as ingress-nginx does; plain HTTP to a
/// TLS port fails with 502. The backend is this process on the cluster network's gateway,
/// named by a selector-less Service's Endpoints.
fn tls_backends(cluster: &Cluster, http: u16) {
    let gateway = gateway(cluster);
    let port = start_tls_backend(&gateway);
    let mut manifest = external_service("secure", &gateway, port);
    for (host, protocol) in [
        ("https.example", Some("HTTPS")),
        ("grpcs.example", Some("GRPCS")),
        ("plain.example", None),
    ] {
        let annotation = protocol
            .map(|p| format!("nginx.ingress.kubernetes.io/backend-protocol: {p}"))
            .unwrap_or_default();
        manifest.push_str(&simple_ingress(
            &host.replace('.', "-"),
            host,
            "secure",
            &annotation,
        ));
    }
    apply(cluster, &manifest);
    wait_output(
        "HTTP/1.1 over TLS to the backend",
        || get(http, "https.example", "/one"),
        &["200 tls HTTP/1.1 /one"],
    );
    wait_output(
        "HTTP/2 over TLS to the backend",
        || get(http, "grpcs.example", "/two"),
        &["200 tls HTTP/2.0 /two"],
    );
    wait_output(
        "plain HTTP to a TLS backend",
        || get(http, "plain.example", "/three"),
        &["502 "],
    );
}

/// Host ports taken on this machine: the ingress moves to the next free ones, says so in the
/// create summary and `kcluster port ls`, and serves there.
#[test]
fn taken_ports_move_to_the_next_free_ones() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("ingport");
    // Two ports held by this test (a listener each), handed to create as the ingress ports.
    let held: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let out = sandbox
        .kcluster_cmd(&[
            "create",
            "--name",
            &name,
            "--wait",
            "120s",
            "--ingress-http-port",
            &ports[0].to_string(),
            "--ingress-https-port",
            &ports[1].to_string(),
        ])
        .output()
        .expect("kcluster create");
    let cluster = Cluster {
        name: name.clone(),
        sandbox: &sandbox,
    };
    assert!(out.status.success(), "create: {}", text(&out));
    let (http, https) = ingress_ports(&cluster);
    assert!(
        !ports.contains(&http) && !ports.contains(&https),
        "{http} {https} vs held {ports:?}"
    );
    let summary = text(&out);
    assert!(
        summary.contains(&format!("http://127.0.0.1:{http}"))
            && summary.contains(&format!("https://127.0.0.1:{https}")),
        "create summary: {summary}"
    );
    let ls = stdout(&sandbox.kcluster(&["port", "ls", "--name", &name]));
    assert!(ls.contains(&format!("127.0.0.1:{https}/TCP")), "{ls}");
    // The proxy answers there: no Ingress yet, so the default backend's 404.
    wait_output(
        "the default backend",
        || get(http, "any.example", "/"),
        &["404"],
    );
    drop(held);
}

/// The address of container `name` on the cluster's Docker network.
fn container_ip(cluster: &Cluster, name: &str) -> String {
    let ip = stdout(&docker(&[
        "inspect",
        name,
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"kcluster-{}\").IPAddress}}}}",
            cluster.name
        ),
    ]))
    .trim()
    .to_string();
    assert!(
        !ip.is_empty(),
        "{name} has no address on the cluster network"
    );
    ip
}

/// Removes the client container when the test ends, however it ends.
struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// One value (`HTTP_X_REAL_IP=…`) of a CGI environment dump.
/// Each `(key, value)` is what the CGI environment says.
fn assert_env(env: &str, want: &[(&str, &str)]) {
    for (key, value) in want {
        assert_eq!(env_value(env, key), *value, "{key} in:\n{env}");
    }
}

fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in:\n{env}"))
        .to_string()
}

/// The client's own address reaches the backend through the host ports (carried from the
/// host-port proxy to the ingress in a PROXY protocol header): the host over 127.0.0.1 is seen
/// as 127.0.0.1 (Docker hands the proxy the network's gateway for it), a container on the
/// cluster's Docker network dialling the proxy container as its own address, a pod on port 80
/// of the node as the pod's. whitelist-source-range applies to that address, and a PROXY
/// header from anyone but our port proxies is not believed.
#[test]
fn backends_see_the_real_client_address() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("ingress-ip");
    let tag = format!("kcluster-e2e/httpd:{name}");
    let _image: TestImage = build_web_image(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &[]);
    cluster.load_image(&tag);
    let (http, https) = ingress_ports(&cluster);

    app(
        &cluster,
        &tag,
        "default",
        "who",
        8080,
        80,
        "/index.html=who",
    );
    cluster.kubectl_ok(&["rollout", "status", "deploy/who", "--timeout=120s"]);
    let p = "nginx.ingress.kubernetes.io";
    apply(
        &cluster,
        &[
            simple_ingress("who", "who.example", "who", ""),
            simple_ingress(
                "local-only",
                "local.example",
                "who",
                &format!("{p}/whitelist-source-range: 127.0.0.1/32"),
            ),
        ]
        .concat(),
    );

    // The host over 127.0.0.1: a forged X-Forwarded-For is replaced (ingress-nginx's default,
    // use-forwarded-headers false), X-Real-IP is the client.
    let from_host = |scheme: &str, port: u16, host: &str| {
        let out = curl(&[
            "-k",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Host: {host}"),
            "-H",
            "X-Forwarded-For: 203.0.113.66",
            &format!("{scheme}://127.0.0.1:{port}/cgi-bin/env"),
        ]);
        stdout(&out)
    };
    let env = wait_output(
        "the headers over HTTP from the host",
        || from_host("http", http, "who.example"),
        &["\n200"],
    );
    assert_env(
        &env,
        &[
            ("HTTP_X_REAL_IP", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_PROTO", "http"),
            ("HTTP_X_FORWARDED_PORT", &http.to_string()),
        ],
    );
    let env = from_host("https", https, "who.example");
    assert!(env.ends_with("\n200"), "{env}");
    assert_eq!(env_value(&env, "HTTP_X_REAL_IP"), "127.0.0.1", "{env}");
    assert_eq!(env_value(&env, "HTTP_X_FORWARDED_PROTO"), "https", "{env}");
    assert_eq!(env_value(&env, "HTTP_X_FORWARDED_SCHEME"), "https", "{env}");
    assert!(from_host("http", http, "local.example").ends_with("\n200"));

    // A container on the cluster's network, dialling the HTTP port proxy container itself.
    let client = format!("{name}-client");
    let run = docker(&[
        "run",
        "-d",
        "--name",
        &client,
        "--network",
        &format!("kcluster-{name}"),
        &tag,
        "sleep",
        "600",
    ]);
    let _remove = RemoveContainer(client.clone());
    assert!(run.status.success(), "docker run: {}", text(&run));
    let client_ip = container_ip(&cluster, &client);
    let proxy = format!("kcluster-{name}-port-{http}-tcp");
    let from_container = |host: &str| {
        let out = docker(&[
            "exec",
            &client,
            "wget",
            "-q",
            "-S",
            "-O",
            "-",
            "--header",
            &format!("Host: {host}"),
            &format!("http://{proxy}:{http}/cgi-bin/env"),
        ]);
        text(&out)
    };
    let env = wait_output(
        "the headers from a container on the cluster network",
        || from_container("who.example"),
        &["200 OK"],
    );
    assert_eq!(env_value(&env, "HTTP_X_REAL_IP"), client_ip, "{env}");
    assert_eq!(env_value(&env, "HTTP_X_FORWARDED_FOR"), client_ip, "{env}");

    // whitelist-source-range judges that address: the container is refused where the host is
    // let through, and let through once its own address is listed.
    assert!(
        from_container("local.example").contains("403 Forbidden"),
        "the container on a 127.0.0.1/32 whitelist"
    );
    apply(
        &cluster,
        &simple_ingress(
            "container-only",
            "container.example",
            "who",
            &format!("{p}/whitelist-source-range: {client_ip}/32"),
        ),
    );
    wait_output(
        "the container on its own whitelist",
        || from_container("container.example"),
        &["200 OK"],
    );
    assert!(
        from_host("http", http, "container.example").ends_with("\n403"),
        "the host on the container's whitelist"
    );

    // A PROXY header from anyone but our port proxies is not believed: the container sends
    // one straight to the node's PROXY listener, claiming to be 127.0.0.1, and gets nothing.
    let server_node = format!("{name}-server-0");
    let mut forged = Vec::new();
    forged.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c");
    forged.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0, 80]);
    forged.extend_from_slice(b"GET /cgi-bin/env HTTP/1.0\r\nHost: local.example\r\n\r\n");
    let mut nc = std::process::Command::new("docker")
        .args([
            "exec",
            "-i",
            &client,
            "nc",
            "-w",
            "5",
            &server_node,
            "10080",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker exec nc");
    {
        use std::io::Write;
        let mut stdin = nc.stdin.take().expect("stdin");
        stdin.write_all(&forged).expect("write the forged header");
    }
    let out = nc.wait_with_output().expect("nc");
    assert!(
        out.stdout.is_empty() && !text(&out).contains("can't connect"),
        "a forged PROXY header: the connection is accepted, then closed unanswered: {}",
        text(&out)
    );
    // Port 80 of the node, without a header, serves the container as itself.
    let out = docker(&[
        "exec",
        &client,
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Host: who.example",
        &format!("http://{server_node}/cgi-bin/env"),
    ]);
    assert_eq!(
        env_value(&stdout(&out), "HTTP_X_REAL_IP"),
        client_ip,
        "{}",
        text(&out)
    );

    // A pod calling port 80 of the node is its own client (no proxy in between).
    let pod = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=who",
        "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}",
    ]);
    let (pod, pod_ip) = pod.trim().split_once(' ').expect("a pod and its IP");
    let node_ip = cluster
        .node_ips()
        .into_iter()
        .find(|(n, _)| *n == server_node)
        .map(|(_, ip)| ip)
        .expect("the server node's address");
    let env = cluster.kubectl_ok(&[
        "exec",
        pod,
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Host: who.example",
        &format!("http://{node_ip}/cgi-bin/env"),
    ]);
    assert_eq!(env_value(&env, "HTTP_X_REAL_IP"), pod_ip, "{env}");

    controller_configmap(&cluster, http);
}

/// The controller's ConfigMap, as ingress-nginx's: behind a proxy of their own, users set
/// `use-forwarded-headers` and `compute-full-forwarded-for`, and defaults such as
/// `proxy-body-size`; a key we do not implement is named in a Warning event.
fn controller_configmap(cluster: &Cluster, http: u16) {
    let patch_cm = |kind: &str, patch: &str| {
        cluster.kubectl_ok(&[
            "-n",
            "kube-system",
            "patch",
            "configmap",
            "ingress-nginx-controller",
            &format!("--type={kind}"),
            "-p",
            patch,
        ]);
    };
    let managed = cluster.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "configmap",
        "ingress-nginx-controller",
        "-o",
        "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}",
    ]);
    assert_eq!(
        managed.trim(),
        "kcluster",
        "the controller creates its ConfigMap"
    );
    let request = |host: &str, body: Option<usize>| {
        let mut args: Vec<String> = [
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "X-Forwarded-For: 203.0.113.66",
            "-H",
            "X-Forwarded-Proto: https",
            "-H",
            "X-Forwarded-Port: 443",
            "-H",
            "Expect:",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["-H".into(), format!("Host: {host}")]);
        if let Some(n) = body {
            args.extend(["--data-binary".into(), "a".repeat(n)]);
        }
        args.push(format!("http://127.0.0.1:{http}/cgi-bin/env"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout(&curl(&args))
    };
    let status = |out: &str| out.rsplit('\n').next().unwrap_or_default().to_string();

    let patch = r#"{"data": {"use-forwarded-headers": "true", "compute-full-forwarded-for": "true",
                   "proxy-body-size": "2k", "worker-processes": "4"}}"#;
    patch_cm("merge", patch);
    let env = wait_output(
        "the client's X-Forwarded-For believed and extended",
        || request("who.example", None),
        &["HTTP_X_FORWARDED_FOR=203.0.113.66, 127.0.0.1\n"],
    );
    assert_eq!(status(&env), "200", "{env}");
    assert_env(
        &env,
        &[
            ("HTTP_X_REAL_IP", "203.0.113.66"),
            ("HTTP_X_ORIGINAL_FORWARDED_FOR", "203.0.113.66"),
            ("HTTP_X_FORWARDED_PROTO", "https"),
            ("HTTP_X_FORWARDED_PORT", "443"),
        ],
    );
    // The whitelist now judges the forwarded address, not the host's 127.0.0.1.
    let out = request("local.example", None);
    assert_eq!(status(&out), "403", "{out}");
    // proxy-body-size from the ConfigMap is every Ingress's default.
    let out = request("who.example", Some(4096));
    assert_eq!(status(&out), "413", "a 4 KiB body over a 2k limit: {out}");
    let out = request("who.example", Some(1024));
    assert_eq!(status(&out), "200", "a 1 KiB body under a 2k limit: {out}");
    let events = wait_output(
        "a Warning naming the unsupported key",
        || {
            cluster.kubectl_ok(&[
                "-n",
                "kube-system",
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=ConfigMap,involvedObject.name=ingress-nginx-controller",
                "-o",
                "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
            ])
        },
        &["worker-processes"],
    );
    assert!(
        events.contains("Warning") && events.contains("UnsupportedConfig"),
        "{events}"
    );
    assert!(!events.contains("use-forwarded-headers"), "{events}");

    // Without the keys, ingress-nginx's defaults are back: the forwarded headers replaced.
    patch_cm("json", r#"[{"op": "remove", "path": "/data"}]"#);
    let env = wait_output(
        "the forwarded headers replaced again",
        || request("who.example", None),
        &["HTTP_X_FORWARDED_FOR=127.0.0.1\n"],
    );
    assert_eq!(env_value(&env, "HTTP_X_REAL_IP"), "127.0.0.1", "{env}");
    assert_eq!(env_value(&env, "HTTP_X_FORWARDED_PROTO"), "http", "{env}");
    assert_eq!(status(&request("local.example", None)), "200");
    assert_eq!(status(&request("who.example", Some(4096))), "200");
}
