use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;

use super::writer::Change;
use super::*;

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn file_store(options: StoreOptions) -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), options).expect("open store");
    (dir, store)
}

fn store() -> (TempDir, Store) {
    file_store(StoreOptions::default())
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Next event, failing the test instead of hanging if none comes.
async fn next(watch: &mut Watch) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(Duration::from_secs(5), watch.next_event())
        .await
        .expect("watch event within 5 s")
}

async fn next_ok(watch: &mut Watch) -> Event {
    match next(watch).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list() {
    let (_dir, s) = store();
    assert_eq!(s.current_revision(), 1);
    let a = s.create("/r/pods/ns/a", b("A")).await.expect("create a");
    assert_eq!((a.create_revision, a.mod_revision), (2, 2));
    s.create("/r/pods/ns/c", b("C")).await.expect("create c");
    s.create("/r/pods/ns/b", b("B")).await.expect("create b");
    s.create("/r/pods/other/x", b("X")).await.expect("create x");
    s.create("/r/podsecurity/y", b("Y"))
        .await
        .expect("create y");
    assert_eq!(s.current_revision(), 6);

    assert_eq!(s.get("/r/pods/ns/a").expect("get"), Some(a));
    assert_eq!(s.get("/r/pods/ns/zz").expect("get"), None);

    let (items, rev) = s.list("/r/pods/ns/").expect("list");
    assert_eq!(rev, 6);
    assert_eq!(
        keys(&items),
        ["/r/pods/ns/a", "/r/pods/ns/b", "/r/pods/ns/c"]
    );
    assert_eq!(items[1].value, b("B"));
    let (items, _) = s.list("/r/pods/").expect("list");
    assert_eq!(items.len(), 4);
    let (items, _) = s.list("").expect("list all");
    assert_eq!(items.len(), 5);
}

#[tokio::test]
async fn create_existing_is_already_exists() {
    let (_dir, s) = store();
    s.create("/k", b("1")).await.expect("create");
    let err = s.create("/k", b("2")).await.expect_err("second create");
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if key == "/k"),
        "{err:?}"
    );
    assert_eq!(s.current_revision(), 2);
    assert_eq!(s.get("/k").expect("get").map(|kv| kv.value), Some(b("1")));
}

#[tokio::test]
async fn missing_keys_are_not_found() {
    let (_dir, s) = store();
    let err = s.update("/k", b("1"), None).await.expect_err("update");
    assert!(
        matches!(err, StoreError::NotFound { ref key } if key == "/k"),
        "{err:?}"
    );
    let err = s.delete("/k", None).await.expect_err("delete");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(s.current_revision(), 1);
}

#[tokio::test]
async fn compare_and_swap() {
    let (_dir, s) = store();
    let v1 = s.create("/k", b("1")).await.expect("create");
    let v2 = s
        .update("/k", b("2"), Some(v1.mod_revision))
        .await
        .expect("CAS with current revision");
    assert_eq!((v2.create_revision, v2.mod_revision), (2, 3));

    let err = s
        .update("/k", b("3"), Some(v1.mod_revision))
        .await
        .expect_err("stale CAS");
    match err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => assert_eq!((key.as_str(), expected, actual), ("/k", 2, 3)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // A stale CAS fails even when the value would not change.
    let err = s.update("/k", b("2"), Some(2)).await.expect_err("stale");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = s.delete("/k", Some(2)).await.expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");

    let v3 = s.update("/k", b("3"), None).await.expect("unconditional");
    assert_eq!(v3.mod_revision, 4);
    assert_eq!(s.get("/k").expect("get"), Some(v3));
}

#[tokio::test]
async fn identical_update_is_a_no_op() {
    let (_dir, s) = store();
    let v1 = s.create("/k", b("same")).await.expect("create");
    let mut w = s.watch("/", s.current_revision()).expect("watch");
    let again = s.update("/k", b("same"), Some(2)).await.expect("update");
    assert_eq!(again, v1);
    assert_eq!(s.current_revision(), 2);
    // Nothing must have been published either: the next event is the next real write.
    s.create("/other", b("x")).await.expect("create");
    assert_eq!(next_ok(&mut w).await.key(), "/other");
}

#[tokio::test]
async fn delete_returns_prev_and_revision() {
    let (_dir, s) = store();
    s.create("/k", b("1")).await.expect("create");
    let v2 = s.update("/k", b("2"), None).await.expect("update");
    let (prev, rev) = s.delete("/k", Some(3)).await.expect("delete");
    assert_eq!(prev, v2);
    assert_eq!(rev, 4);
    assert_eq!(s.current_revision(), 4);
    assert_eq!(s.get("/k").expect("get"), None);
    // Re-creating starts a new life of the key.
    let again = s.create("/k", b("new")).await.expect("re-create");
    assert_eq!(again.create_revision, 5);
}

#[tokio::test]
async fn data_and_revision_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        s.create("/a", b("1")).await.expect("create");
        s.create("/b", b("2")).await.expect("create");
        s.update("/a", b("3"), None).await.expect("update");
        s.delete("/b", None).await.expect("delete");
        s.compact(2).await.expect("compact");
        assert_eq!(s.current_revision(), 5);
    }
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(s.current_revision(), 5);
    assert_eq!(s.compacted_revision(), 2);
    let a = s.get("/a").expect("get").expect("present");
    assert_eq!((a.value, a.create_revision, a.mod_revision), (b("3"), 2, 4));
    assert_eq!(s.get("/b").expect("get"), None);
    // History came back too.
    assert_eq!(keys(&s.list_at("/", 3).expect("list_at")), ["/a", "/b"]);
    let mut w = s.watch("/", 2).expect("watch");
    assert_eq!(next_ok(&mut w).await.revision(), 3);
    assert_eq!(next_ok(&mut w).await.revision(), 4);
    assert_eq!(next_ok(&mut w).await.revision(), 5);
    // And the counter continues where it was.
    assert_eq!(
        s.create("/c", b("4")).await.expect("create").mod_revision,
        6
    );
    assert_eq!(next_ok(&mut w).await.revision(), 6);
}

#[tokio::test]
async fn list_at_sees_old_state() {
    let (_dir, s) = store();
    s.create("/p/a", b("a1")).await.expect("create"); // 2
    s.create("/p/b", b("b1")).await.expect("create"); // 3
    s.create("/q/z", b("z1")).await.expect("create"); // 4
    s.update("/p/a", b("a2"), None).await.expect("update"); // 5
    s.delete("/p/b", None).await.expect("delete"); // 6
    s.create("/p/c", b("c1")).await.expect("create"); // 7

    let values = |items: Vec<KeyValue>| -> Vec<(String, Bytes, Revision)> {
        items
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect()
    };
    assert_eq!(values(s.list_at("/p/", 1).expect("at 1")), []);
    assert_eq!(
        values(s.list_at("/p/", 2).expect("at 2")),
        [("/p/a".into(), b("a1"), 2)]
    );
    assert_eq!(
        values(s.list_at("/p/", 4).expect("at 4")),
        [("/p/a".into(), b("a1"), 2), ("/p/b".into(), b("b1"), 3)]
    );
    assert_eq!(
        values(s.list_at("/p/", 5).expect("at 5")),
        [("/p/a".into(), b("a2"), 5), ("/p/b".into(), b("b1"), 3)]
    );
    assert_eq!(
        values(s.list_at("/p/", 6).expect("at 6")),
        [("/p/a".into(), b("a2"), 5)]
    );
    assert_eq!(
        s.list_at("/p/", 7).expect("at 7"),
        s.list("/p/").expect("list").0
    );
    assert_eq!(
        keys(&s.list_at("/q/", 3).expect("at 3")),
        Vec::<&str>::new()
    );
    assert_eq!(keys(&s.list_at("/q/", 6).expect("at 6")), ["/q/z"]);

    let err = s.list_at("/p/", 8).expect_err("future");
    assert!(
        matches!(
            err,
            StoreError::FutureRevision {
                requested: 8,
                current: 7
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_then_streams_without_gaps_or_duplicates() {
    let (_dir, s) = store();
    for i in 0..50 {
        s.create(&format!("/w/pre-{i}"), b("v"))
            .await
            .expect("create");
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let key = format!("/w/live-{w}-{i}");
                    s.create(&key, b("v")).await.expect("create");
                    if i % 3 == 0 {
                        s.update(&key, b("v2"), None).await.expect("update");
                    }
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    // Start watches throughout the writers' run, so the hand-over from replay to live events
    // happens while commits are in flight; each starts from a revision in the replayed past.
    while s.current_revision() < 120 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = s.current_revision();
    let mut watches = vec![(20, s.watch("/w/", 20).expect("watch"))];
    while watches.len() < 40 && !writers.iter().all(|h| h.is_finished()) {
        let after = s.current_revision() - 5;
        watches.push((after, s.watch("/w/", after).expect("watch")));
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    for h in writers {
        h.await.expect("writer task");
    }
    let last = s.current_revision();
    assert!(
        start < last,
        "the first watch started after the writers finished"
    );
    assert_eq!(last, 1 + 50 + 4 * (100 + 34));
    for (after, mut w) in watches {
        let mut expected = after + 1;
        while expected <= last {
            let ev = next_ok(&mut w).await;
            assert_eq!(
                ev.revision(),
                expected,
                "gap or duplicate (watch after {after})"
            );
            expected += 1;
        }
    }
}

#[tokio::test]
async fn watch_filters_by_prefix() {
    let (_dir, s) = store();
    s.create("/r/pods/a", b("1")).await.expect("create"); // 2
    s.create("/r/nodes/n", b("1")).await.expect("create"); // 3
    let mut w = s.watch("/r/pods/", 1).expect("watch");
    s.create("/r/podsx/b", b("1")).await.expect("create"); // 4: shares a string prefix
    s.update("/r/pods/a", b("2"), None).await.expect("update"); // 5
    s.delete("/r/nodes/n", None).await.expect("delete"); // 6
    s.delete("/r/pods/a", None).await.expect("delete"); // 7

    match next_ok(&mut w).await {
        Event::Put { kv, prev: None } => {
            assert_eq!((kv.key.as_str(), kv.mod_revision), ("/r/pods/a", 2))
        }
        other => panic!("{other:?}"),
    }
    match next_ok(&mut w).await {
        Event::Put { kv, prev: Some(p) } => {
            assert_eq!(
                (kv.value, kv.mod_revision, kv.create_revision),
                (b("2"), 5, 2)
            );
            assert_eq!((p.value, p.mod_revision), (b("1"), 2));
        }
        other => panic!("{other:?}"),
    }
    match next_ok(&mut w).await {
        Event::Delete { prev, revision } => {
            assert_eq!(
                (prev.key.as_str(), prev.mod_revision, revision),
                ("/r/pods/a", 5, 7)
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing else is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), w.next_event())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn watch_from_the_future_waits() {
    let (_dir, s) = store();
    let mut w = s.watch("/", 3).expect("watch ahead of current");
    for i in 0..4 {
        s.create(&format!("/k{i}"), b("v")).await.expect("create");
    }
    assert_eq!(next_ok(&mut w).await.revision(), 4);
    assert_eq!(next_ok(&mut w).await.revision(), 5);
}

#[tokio::test]
async fn compaction_makes_old_revisions_unavailable() {
    let (_dir, s) = store();
    s.create("/a", b("1")).await.expect("create"); // 2
    s.create("/b", b("1")).await.expect("create"); // 3
    s.update("/b", b("2"), None).await.expect("update"); // 4
    s.create("/c", b("1")).await.expect("create"); // 5
    s.compact(4).await.expect("compact");
    assert_eq!(s.compacted_revision(), 4);
    assert_eq!(
        s.current_revision(),
        5,
        "compaction does not bump the revision"
    );

    let err = s.list_at("/", 3).expect_err("list_at compacted");
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 3,
                compacted: 4
            }
        ),
        "{err:?}"
    );
    let err = s.watch("/", 3).err().expect("watch compacted");
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");

    // The compacted revision itself stays readable, and old live keys keep their value.
    assert_eq!(keys(&s.list_at("/", 4).expect("list_at")), ["/a", "/b"]);
    let mut w = s.watch("/", 4).expect("watch");
    assert_eq!(next_ok(&mut w).await.revision(), 5);
    assert_eq!(s.get("/a").expect("get").map(|kv| kv.mod_revision), Some(2));

    s.compact(2).await.expect("compacting backwards is a no-op");
    assert_eq!(s.compacted_revision(), 4);
    let err = s.compact(99).await.expect_err("future");
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
}

#[tokio::test]
async fn background_compaction_keeps_the_configured_window() {
    let options = StoreOptions {
        compaction_interval: Some(Duration::from_millis(20)),
        retention: Duration::ZERO,
        min_retained_revisions: 10,
        ..StoreOptions::default()
    };
    let (_dir, s) = file_store(options);
    for i in 0..40 {
        s.create(&format!("/k{i}"), b("v")).await.expect("create");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while s.compacted_revision() < 31 {
        assert!(tokio::time::Instant::now() < deadline, "no compaction");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.compacted_revision(), 41 - 10);
    assert!(s.list_at("/", 30).is_err());
    assert_eq!(s.list_at("/", 31).expect("retained").len(), 30);
    assert_eq!(s.list("/").expect("list").0.len(), 40);
}

#[tokio::test]
async fn background_compaction_respects_retention_time() {
    let options = StoreOptions {
        compaction_interval: Some(Duration::from_millis(10)),
        retention: Duration::from_secs(3600),
        min_retained_revisions: 0,
        ..StoreOptions::default()
    };
    let (_dir, s) = file_store(options);
    for i in 0..20 {
        s.create(&format!("/k{i}"), b("v")).await.expect("create");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.compacted_revision(),
        0,
        "history younger than retention was dropped"
    );
}

#[tokio::test]
async fn slow_watcher_is_cut_off_with_compacted() {
    let options = StoreOptions {
        watch_buffer: 8,
        ..StoreOptions::default()
    };
    let (_dir, s) = file_store(options);
    let mut slow = s.watch("/", 1).expect("watch");
    for i in 0..40 {
        s.create(&format!("/k{i}"), b("v")).await.expect("create");
    }
    match next(&mut slow).await {
        Some(Err(StoreError::Compacted { requested, .. })) => assert_eq!(requested, 1),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        next(&mut slow).await.is_none(),
        "stream ends after Compacted"
    );

    // A watcher that keeps up is unaffected.
    let mut fast = s.watch("/", s.current_revision()).expect("watch");
    for i in 0..40 {
        s.create(&format!("/j{i}"), b("v")).await.expect("create");
        assert_eq!(next_ok(&mut fast).await.key(), format!("/j{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_gives_distinct_consecutive_revisions() {
    let (_dir, s) = store();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..40 {
                    let kv = s
                        .create(&format!("/g/{t}/{i}"), b("v"))
                        .await
                        .expect("create");
                    revs.push(kv.mod_revision);
                }
                revs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    let expected: Vec<Revision> = (2..2 + 16 * 40).collect();
    assert_eq!(all, expected);
    assert_eq!(s.current_revision(), 1 + 16 * 40);
    assert_eq!(s.list("/g/").expect("list").0.len(), 16 * 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_cas_in_a_batch_fails_alone() {
    let (_dir, s) = store();
    s.create("/k", b("0")).await.expect("create");
    // All racing on the same revision: exactly one CAS can win.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.update("/k", b(&format!("new-{i}")), Some(2)).await })
        })
        .collect();
    let others: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.create(&format!("/o{i}"), b("v")).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    for t in others {
        t.await.expect("task").expect("unrelated create");
    }
    assert_eq!(won, 1);
    assert_eq!(s.current_revision(), 2 + 1 + 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_all_see_every_event() {
    let s = Store::in_memory().expect("in-memory store");
    let mut watchers: Vec<Watch> = (0..1000)
        .map(|i| s.watch(&format!("/m/{}/", i % 10), 1).expect("watch"))
        .collect();
    for i in 0..100 {
        s.create(&format!("/m/{}/{i}", i % 10), b("v"))
            .await
            .expect("create");
    }
    for (n, w) in watchers.iter_mut().enumerate() {
        for j in 0..10 {
            let ev = next_ok(w).await;
            assert_eq!(ev.key(), format!("/m/{}/{}", n % 10, n % 10 + 10 * j));
        }
    }
}

#[tokio::test]
async fn a_watcher_only_falls_behind_on_its_own_prefix() {
    // Events are routed by prefix, so a quiet watch with a tiny queue survives any amount of
    // traffic elsewhere, and still sees the next event of its own.
    let s = Store::in_memory_with(StoreOptions {
        watch_buffer: 2,
        ..StoreOptions::default()
    })
    .expect("in-memory store");
    let mut quiet = s.watch("/a/", 1).expect("watch");
    for i in 0..50 {
        s.create(&format!("/b/{i}"), b("v")).await.expect("create");
    }
    s.create("/a/x", b("v")).await.expect("create");
    let ev = next_ok(&mut quiet).await;
    assert_eq!((ev.key(), ev.revision()), ("/a/x", 52));
}

#[tokio::test]
async fn dropped_watches_are_forgotten() {
    let s = Store::in_memory().expect("in-memory store");
    let watches: Vec<Watch> = (0..10)
        .map(|i| s.watch(&format!("/p{}/", i % 3), 1).expect("watch"))
        .collect();
    assert_eq!(s.inner.watchers.lock().expect("registry").len(), 10);
    drop(watches);
    assert_eq!(s.inner.watchers.lock().expect("registry").len(), 0);
}

#[tokio::test]
async fn a_live_event_is_shared_by_its_watchers() {
    let s = Store::in_memory().expect("in-memory store");
    let mut w1 = s.watch("/s/", 1).expect("watch");
    let mut w2 = s.watch("/s/", 1).expect("watch");
    s.create("/s/k", b("v")).await.expect("create");
    let inits = std::sync::atomic::AtomicUsize::new(0);
    let mut seen = Vec::new();
    for w in [&mut w1, &mut w2] {
        let ev = w.next_shared().await.expect("event").expect("not lagged");
        let derived = ev.memo(|e| {
            inits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.key().len()
        });
        seen.push(derived.copied());
        // Another type than the one stored first is refused, not confused.
        assert!(ev.memo(|_| "other").is_none());
    }
    assert_eq!(seen, [Some(4), Some(4)]);
    assert_eq!(inits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn dropping_the_store_ends_watches() {
    let s = Store::in_memory().expect("in-memory store");
    let mut w = s.watch("/", 1).expect("watch");
    s.create("/a", b("1")).await.expect("create");
    drop(s);
    assert_eq!(next_ok(&mut w).await.revision(), 2);
    assert!(next(&mut w).await.is_none());
}

#[tokio::test]
async fn a_list_of_ten_thousand_keys_holds_exactly_its_prefix() {
    // In memory only to keep the set-up quick; the read path is the same. How fast it is, is
    // a benchmark's business, not a test's.
    let s = Store::in_memory().expect("in-memory store");
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in (t..10_000).step_by(16) {
                    let value = Bytes::from(format!(
                        "{{\"kind\":\"Pod\",\"n\":{i},\"pad\":\"{:0>200}\"}}",
                        i
                    ));
                    s.create(&format!("/r/pods/default/pod-{i:05}"), value)
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    s.create("/r/pods/other/x", b("v")).await.expect("create");
    let (items, _) = s.list("/r/pods/default/").expect("list");
    assert_eq!(items.len(), 10_000);
}

#[test]
fn handles_are_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    fn stream<T: futures::Stream<Item = Result<Event, StoreError>> + Unpin + Send + 'static>() {}
    shareable::<Store>();
    stream::<Watch>();
}

const CRASH_DIR_ENV: &str = "KCLUSTER_STORE_CRASH_TEST_DIR";

/// Acknowledged writes must survive the process being killed at an arbitrary point. The test
/// binary re-runs itself as the victim (`crash_victim`), which writes from 16 tasks and prints
/// each acknowledged key; this process SIGKILLs it mid-stream and checks every printed key.
#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "store::tests::crash_victim",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn victim");
    let stdout = child.stdout.take().expect("victim stdout");
    // Kill the victim even if an assertion below fails first, so no writer is left behind.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acked = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.len() < 300 {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(wait) {
            Ok(line) => acked.extend(parse_ack(&line)),
            Err(e) => panic!(
                "victim stopped acknowledging after {} writes: {e}",
                acked.len()
            ),
        }
    }
    child.0.kill().expect("SIGKILL victim");
    child.0.wait().expect("reap victim");
    // Lines already in the pipe were acknowledged before the kill, too.
    reader.join().expect("reader thread");
    acked.extend(lines.try_iter().filter_map(|l| parse_ack(&l)));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let s = Store::open(dir.path()).expect("reopen after kill -9");
    for (key, rev) in &acked {
        let kv = s
            .get(key)
            .expect("get")
            .unwrap_or_else(|| panic!("acked {key} lost"));
        assert_eq!(kv.mod_revision, *rev, "{key}");
    }
    // Every committed revision is a create, so the counter and the contents must agree.
    let (all, current) = s.list("/crash/").expect("list");
    assert_eq!(current, s.current_revision());
    assert_eq!(all.len() as i64, current - 1);
}

fn parse_ack(line: &str) -> Option<(String, Revision)> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let key = parts.next()?.to_owned();
    let rev = parts.next()?.parse().ok()?;
    Some((key, rev))
}

#[test]
#[ignore = "run as a child process by acknowledged_writes_survive_kill_9"]
fn crash_victim() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let s = Store::open(std::path::Path::new(&dir)).expect("open");
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("/crash/{t}/{i}");
                        let kv = s.create(&key, b("v")).await.expect("create");
                        println!("ack {key} {}", kv.mod_revision);
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn kv(key: &str, value: &str, create: Revision, modified: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: b(value),
        create_revision: create,
        mod_revision: modified,
    }
}

/// What the etcd mirror does: another store's changes applied at that store's revisions, gaps
/// and repeats included.
#[tokio::test]
async fn mirrored_changes_keep_their_revisions_and_skip_repeats() {
    let store = Store::in_memory().expect("store");
    let reply = store
        .submit(Op::Reset {
            kvs: vec![kv("/a", "1", 5, 5)],
            revision: 10,
        })
        .await
        .expect("reset");
    assert!(matches!(reply, Reply::Applied));
    assert_eq!(
        (store.current_revision(), store.compacted_revision()),
        (10, 10)
    );
    let mut watch = store.watch("/", 10).expect("watch from the copy");
    store
        .submit(Op::Mirror {
            changes: vec![
                Change::Put(kv("/b", "2", 12, 12)),
                Change::Put(kv("/a", "1b", 5, 15)),
                Change::Delete {
                    key: "/b".into(),
                    revision: 17,
                },
                // Created and deleted while nobody copied it: nothing to delete here.
                Change::Delete {
                    key: "/never".into(),
                    revision: 18,
                },
            ],
        })
        .await
        .expect("mirror");
    assert_eq!(store.current_revision(), 17);
    match next_ok(&mut watch).await {
        Event::Put { kv, prev: None } => assert_eq!((kv.key.as_str(), kv.mod_revision), ("/b", 12)),
        other => panic!("expected the create of /b, got {other:?}"),
    }
    match next_ok(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((kv.mod_revision, prev.mod_revision), (15, 5));
            assert_eq!(&prev.value[..], b"1");
        }
        other => panic!("expected the update of /a with its previous value, got {other:?}"),
    }
    match next_ok(&mut watch).await {
        Event::Delete { prev, revision } => assert_eq!((prev.key.as_str(), revision), ("/b", 17)),
        other => panic!("expected the delete of /b, got {other:?}"),
    }
    // A resumed watch of etcd repeats what was applied: nothing changes, nothing is sent.
    store
        .submit(Op::Mirror {
            changes: vec![Change::Put(kv("/a", "old", 5, 15))],
        })
        .await
        .expect("repeat");
    assert_eq!(store.current_revision(), 17);
    assert_eq!(
        &store.get("/a").expect("get").expect("present").value[..],
        b"1b"
    );
    let history = store
        .list_at("/", 12)
        .expect("history between the copy and now");
    assert_eq!(keys(&history), ["/a", "/b"]);
}

/// A fresh copy replaces everything and cuts every watch off, so its clients re-list.
#[tokio::test]
async fn a_reset_cuts_watches_off_and_replaces_the_state() {
    let store = Store::in_memory().expect("store");
    store.create("/x", b("1")).await.expect("create");
    let mut watch = store.watch("/", store.current_revision()).expect("watch");
    store
        .submit(Op::Reset {
            kvs: vec![kv("/y", "2", 40, 41)],
            revision: 50,
        })
        .await
        .expect("reset");
    match next(&mut watch).await {
        Some(Err(StoreError::Compacted { .. })) => {}
        other => panic!("expected the watch to be cut off, got {other:?}"),
    }
    let (items, revision) = store.list("/").expect("list");
    assert_eq!((keys(&items), revision), (vec!["/y"], 50));
    assert!(matches!(
        store.watch("/", 49),
        Err(StoreError::Compacted { compacted: 50, .. })
    ));
}

#[tokio::test]
async fn keys_under_a_lease_are_deleted_when_it_ends_and_watchers_see_it() {
    let (_dir, s) = store();
    let lease = s.grant_lease(Duration::from_secs(1)).await.expect("grant");
    let other = s
        .grant_lease(Duration::from_secs(3600))
        .await
        .expect("grant");
    assert_ne!(lease, other);
    let mut watch = s.watch("/r/events/", s.current_revision()).expect("watch");
    s.create_leased("/r/events/ns/a", b("A"), Some(lease))
        .await
        .expect("create a");
    s.create_leased("/r/events/ns/b", b("B"), Some(lease))
        .await
        .expect("create b");
    // Freed by a put without a lease, as in etcd; moved to another lease by a put with it.
    s.create_leased("/r/events/ns/c", b("C"), Some(lease))
        .await
        .expect("create c");
    s.update("/r/events/ns/c", b("C2"), None)
        .await
        .expect("update c");
    s.create_leased("/r/events/ns/d", b("D"), Some(lease))
        .await
        .expect("create d");
    s.update_leased("/r/events/ns/d", b("D2"), None, Some(other))
        .await
        .expect("update d");
    // Deleted before the lease ends: nothing more happens to it.
    s.create_leased("/r/events/ns/e", b("E"), Some(lease))
        .await
        .expect("create e");
    s.delete("/r/events/ns/e", None).await.expect("delete e");
    for _ in 0..8 {
        assert!(matches!(
            next_ok(&mut watch).await,
            Event::Put { .. } | Event::Delete { .. }
        ));
    }
    let before = s.current_revision();
    let mut gone = Vec::new();
    for _ in 0..2 {
        match next_ok(&mut watch).await {
            Event::Delete { prev, revision } => {
                assert!(revision > before);
                gone.push(prev.key);
            }
            other => panic!("expected the lease's deletes, got {other:?}"),
        }
    }
    gone.sort();
    assert_eq!(gone, ["/r/events/ns/a", "/r/events/ns/b"]);
    let (left, _) = s.list("/r/events/").expect("list");
    assert_eq!(keys(&left), ["/r/events/ns/c", "/r/events/ns/d"]);
    // An ended lease takes no more keys.
    assert!(matches!(
        s.create_leased("/r/events/ns/f", b("F"), Some(lease)).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(s.get("/r/events/ns/f").expect("get").is_none());
    // Revoking ends a lease at once.
    s.revoke_lease(other).await.expect("revoke");
    match next_ok(&mut watch).await {
        Event::Delete { prev, .. } => assert_eq!(prev.key, "/r/events/ns/d"),
        other => panic!("expected d's delete, got {other:?}"),
    }
    assert!(matches!(
        s.revoke_lease(other).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
}

#[tokio::test]
async fn a_lease_outlives_a_reopen_of_the_store_and_still_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        let lease = s.grant_lease(Duration::from_secs(1)).await.expect("grant");
        s.create_leased("/r/events/ns/a", b("A"), Some(lease))
            .await
            .expect("create");
        s.create("/r/pods/ns/p", b("P")).await.expect("create");
    }
    let s = Store::open(dir.path()).expect("reopen");
    // From the start: the lease may end before or after the watch begins.
    let mut watch = s.watch("/r/events/", 1).expect("watch");
    let _created = next_ok(&mut watch).await;
    match next_ok(&mut watch).await {
        Event::Delete { prev, .. } => assert_eq!(prev.key, "/r/events/ns/a"),
        other => panic!("expected the leased key's delete, got {other:?}"),
    }
    assert!(s.get("/r/pods/ns/p").expect("get").is_some());
    // Leases granted after the reopen get new IDs.
    let next = s.grant_lease(Duration::from_secs(60)).await.expect("grant");
    assert!(next > 1, "lease IDs are not reused: {next}");
}

#[tokio::test]
async fn lease_for_reuses_one_lease_for_writes_close_together() {
    let (_dir, s) = store();
    let ttl = Duration::from_secs(3600);
    let first = s.lease_for(ttl).await.expect("lease");
    assert_eq!(s.lease_for(ttl).await.expect("lease"), first);
    assert_ne!(
        s.lease_for(Duration::from_secs(60)).await.expect("lease"),
        first
    );
}
