use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::health::{self, Failure};
use super::*;
use crate::pki::CertificateAuthority;

/// A port nothing listens on: bound, then let go.
async fn refused_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr.to_string()
}

/// An echo server; returns its address.
async fn echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn start(balancer: Arc<Balancer>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(serve(l, balancer));
    addr
}

#[test]
fn down_backends_are_tried_last() {
    let b = Balancer::new(&["a:1".into(), "b:1".into(), "c:1".into()]).expect("balancer");
    b.all()[1].healthy.send_replace(Health::Unready);
    for _ in 0..6 {
        let order: Vec<_> = b.candidates().iter().map(|c| c.address.clone()).collect();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "b:1", "{order:?}");
    }
}

#[test]
fn backends_are_added_once_from_the_file() {
    let b = Balancer::new(&["a:1".into()]).expect("balancer");
    let text = "# servers\na:1\n\n b:1 \nc:1\n";
    let added: Vec<_> = b
        .add(&backends_in(text))
        .iter()
        .map(|x| x.address.clone())
        .collect();
    assert_eq!(added, ["b:1", "c:1"]);
    assert!(b.add(&backends_in(text)).is_empty());
    assert_eq!(b.all().len(), 3);
}

#[test]
fn the_file_is_the_whole_list_once_written() {
    let b = Balancer::new(&["a:1".into(), "b:1".into()]).expect("balancer");
    let old_b = b.all()[1].clone();
    let added: Vec<_> = b
        .set(&backends_in("a:1\nc:1\n"))
        .iter()
        .map(|x| x.address.clone())
        .collect();
    assert_eq!(added, ["c:1"]);
    let now: Vec<_> = b.all().iter().map(|x| x.address.clone()).collect();
    assert_eq!(now, ["a:1", "c:1"]);
    assert!(old_b.retired(), "a removed backend's checks stop");
    assert_eq!(
        *old_b.healthy.borrow(),
        Health::Gone,
        "its connections are cut"
    );
    assert!(!b.all()[0].retired());
}

#[tokio::test]
async fn connections_skip_a_refusing_backend_and_are_cut_only_when_theirs_is_gone() {
    let balancer =
        Arc::new(Balancer::new(&[refused_address().await, echo().await]).expect("balancer"));
    let lb = start(balancer.clone()).await;
    for _ in 0..2 {
        let mut c = TcpStream::connect(&lb).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("echoed");
        assert_eq!(&buf, b"ping");
    }
    let mut c = TcpStream::connect(&lb).await.expect("connect");
    c.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    c.read_exact(&mut one).await.expect("echoed");
    // Unready: the connection stays, and still answers.
    balancer.all()[1].healthy.send_replace(Health::Unready);
    c.write_all(b"y").await.expect("write");
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut one))
        .await
        .expect("an unready backend's connection still answers")
        .expect("echoed");
    assert_eq!(&one, b"y");
    // Gone: cut.
    balancer.all()[1].healthy.send_replace(Health::Gone);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut one))
        .await
        .expect("the connection is cut, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "the client sees the connection end");

    // With every backend gone, the balancer still tries them, and keeps what connects.
    balancer.all()[0].healthy.send_replace(Health::Gone);
    let mut c = TcpStream::connect(&lb).await.expect("connect");
    c.write_all(b"last").await.expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf)
        .await
        .expect("echoed by a backend marked down");
    assert_eq!(&buf, b"last");
    balancer.all()[1].healthy.send_replace(Health::Up);
    balancer.all()[1].healthy.send_replace(Health::Gone);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut one))
        .await
        .expect("the connection is cut, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "the client sees the connection end");
}

/// A TLS server for `localhost` answering every request with `status`.
async fn readyz_server(ca: &CertificateAuthority, status: &'static str) -> String {
    let serving = ca
        .issue_server("kube-apiserver", &["localhost".to_string()], &[])
        .expect("cert");
    let config =
        crate::apiserver::tls::server_config(&ca.cert_pem(), &serving.cert_pem, &serving.key_pem)
            .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let body = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("localhost:{port}")
}

#[tokio::test]
async fn readyz_checks_tell_ready_from_unready_from_gone() {
    let ca = CertificateAuthority::generate("test-ca").expect("ca");
    let tls = health::tls_config(&ca.cert_pem()).expect("tls");
    let ready = readyz_server(&ca, "200 OK").await;
    assert_eq!(
        health::check(&ready, "localhost", tls.clone()).await,
        Ok(())
    );
    let unready = readyz_server(&ca, "500 Internal Server Error").await;
    assert!(matches!(
        health::check(&unready, "localhost", tls.clone()).await,
        Err(Failure::Bad(m)) if m.contains("500")
    ));
    let gone = refused_address().await;
    assert!(matches!(
        health::check(&gone, "localhost", tls.clone()).await,
        Err(Failure::Gone(_))
    ));
    // A certificate of another CA is not a server of this cluster.
    let other = CertificateAuthority::generate("other-ca").expect("ca");
    let stranger = readyz_server(&other, "200 OK").await;
    assert!(matches!(
        health::check(&stranger, "localhost", tls).await,
        Err(Failure::Bad(m)) if m.contains("TLS")
    ));
}
