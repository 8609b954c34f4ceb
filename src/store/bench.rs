//! Throughput and latency of the write path, run by hand:
//! `cargo test --release store::bench -- --ignored --nocapture`

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Store, Watch};

const WRITERS: usize = 16;
const WRITES: usize = 10_000;

async fn run(store: &Store) -> (f64, Duration, Duration) {
    // A typical small object: a Pod is a few hundred bytes to a few KiB of JSON.
    let value = Bytes::from(format!(
        "{{\"kind\":\"Pod\",\"spec\":\"{}\"}}",
        "x".repeat(1000)
    ));
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|t| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(WRITES / WRITERS + 1);
                for i in (t..WRITES).step_by(WRITERS) {
                    let key = format!("/registry/pods/bench/pod-{i:05}");
                    let began = Instant::now();
                    store.create(&key, value.clone()).await.expect("create");
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(WRITES);
    for t in tasks {
        latencies.extend(t.await.expect("writer task"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    (WRITES as f64 / elapsed.as_secs_f64(), p50, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn creates_16_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (rate, p50, p99) = run(&store).await;
    println!(
        "file store, {WRITES} creates, {WRITERS} writers: {rate:.0} writes/s, p50 {p50:?}, p99 {p99:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn creates_16_writers_1000_watchers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    // Watchers that keep up, as the API server's would: each drains its stream in a task.
    let mut watchers = Vec::new();
    for i in 0..1000 {
        let prefix = if i % 2 == 0 {
            "/registry/pods/"
        } else {
            "/registry/nodes/"
        };
        let mut w: Watch = store.watch(prefix, 1).expect("watch");
        watchers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(ev) = w.next_event().await {
                ev.expect("watch keeps up");
                n += 1;
            }
            n
        }));
    }
    let (rate, p50, p99) = run(&store).await;
    println!(
        "file store, {WRITES} creates, {WRITERS} writers, 1000 watchers: {rate:.0} writes/s, p50 {p50:?}, p99 {p99:?}"
    );
    drop(store);
    let mut delivered = 0;
    for w in watchers {
        delivered += w.await.expect("watcher task");
    }
    assert_eq!(delivered, 500 * WRITES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn creates_1_writer() {
    // The baseline group commit improves on: one fsync per write.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let start = Instant::now();
    for i in 0..1000 {
        store
            .create(
                &format!("/registry/pods/bench/pod-{i:05}"),
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("create");
    }
    let rate = 1000.0 / start.elapsed().as_secs_f64();
    println!("file store, 1000 creates, 1 writer: {rate:.0} writes/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn list_10000() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    run(&store).await;
    let start = Instant::now();
    let (items, _) = store.list("/registry/pods/bench/").expect("list");
    let list = start.elapsed();
    let start = Instant::now();
    let old = store
        .list_at("/registry/pods/bench/", 5_001)
        .expect("list_at");
    let list_at = start.elapsed();
    let start = Instant::now();
    let mut w = store.watch("/registry/pods/", 1).expect("watch");
    let mut replayed = 0;
    while replayed < WRITES {
        w.next_event().await.expect("event").expect("replayed");
        replayed += 1;
    }
    let replay = start.elapsed();
    println!(
        "list of {} keys: {list:?}; list_at half-way ({} keys): {list_at:?}; replay of {replayed} events: {replay:?}",
        items.len(),
        old.len()
    );
}
