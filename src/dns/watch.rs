//! Keeps the cluster zone current: list+watch of Services and EndpointSlices in every
//! namespace through whichever client the channel holds, re-watching with a new client when
//! it is replaced. The zone is rebuilt once per batch of events and swapped in whole, so a
//! query sees one consistent snapshot. Until both kinds have been listed once, the zone stays
//! unsynced (cluster names get SERVFAIL); after that a lost API server leaves the last zone
//! serving.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::metrics::Metrics;
use super::records::{ServiceInfo, SliceInfo, Zone};

/// The zone every query reads: swapped whole on each rebuild.
pub struct ZoneCell {
    zone: RwLock<Arc<Zone>>,
}

impl ZoneCell {
    pub fn new(zone: Zone) -> ZoneCell {
        ZoneCell {
            zone: RwLock::new(Arc::new(zone)),
        }
    }

    pub fn get(&self) -> Arc<Zone> {
        match self.zone.read() {
            Ok(z) => z.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, zone: Zone) {
        match self.zone.write() {
            Ok(mut z) => *z = Arc::new(zone),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(zone),
        }
    }
}

type Key = (String, String);

/// One kind's objects, with the list in progress after a (re)start of its watch.
struct Kind<T> {
    objects: HashMap<Key, T>,
    pending: Option<HashMap<Key, T>>,
    listed: bool,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            objects: HashMap::new(),
            pending: None,
            listed: false,
        }
    }
}

impl<T> Kind<T> {
    /// Applies one event; whether the visible set changed.
    fn apply(&mut self, event: Event<(Key, Option<T>)>) -> bool {
        match event {
            Event::Apply((key, value)) => match value {
                Some(v) => {
                    self.objects.insert(key, v);
                    true
                }
                None => self.objects.remove(&key).is_some(),
            },
            Event::Delete((key, _)) => self.objects.remove(&key).is_some(),
            Event::Init => {
                self.pending = Some(HashMap::new());
                false
            }
            Event::InitApply((key, value)) => {
                if let (Some(pending), Some(v)) = (self.pending.as_mut(), value) {
                    pending.insert(key, v);
                }
                false
            }
            Event::InitDone => {
                if let Some(pending) = self.pending.take() {
                    self.objects = pending;
                }
                self.listed = true;
                true
            }
        }
    }
}

fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The same event about the object's DNS-relevant part.
fn convert<K, T>(event: Event<K>, f: impl Fn(&K) -> (Key, Option<T>)) -> Event<(Key, Option<T>)> {
    match event {
        Event::Apply(k) => Event::Apply(f(&k)),
        Event::Delete(k) => Event::Delete(f(&k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(f(&k)),
        Event::InitDone => Event::InitDone,
    }
}

enum Change {
    Service(Event<(Key, Option<ServiceInfo>)>),
    Slice(Event<(Key, Option<SliceInfo>)>),
}

/// Runs forever: watches with the channel's client, restarting when it changes.
pub async fn maintain(
    cell: Arc<ZoneCell>,
    domain: String,
    mut clients: watch::Receiver<Option<kube::Client>>,
    metrics: Arc<Metrics>,
) {
    let mut services: Kind<ServiceInfo> = Kind::default();
    let mut slices: Kind<SliceInfo> = Kind::default();
    loop {
        let client = clients.borrow_and_update().clone();
        match client {
            None => {}
            Some(client) => {
                // A new client: its lists replace what the old one saw once they complete;
                // until then the old zone keeps answering.
                tokio::select! {
                    () = watch_with(client, &cell, &domain, &mut services, &mut slices, &metrics) => {}
                    changed = clients.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
        }
        if clients.changed().await.is_err() {
            // No more clients will come: keep the zone as it is.
            std::future::pending::<()>().await;
        }
    }
}

async fn watch_with(
    client: kube::Client,
    cell: &ZoneCell,
    domain: &str,
    services: &mut Kind<ServiceInfo>,
    slices: &mut Kind<SliceInfo>,
    metrics: &Metrics,
) {
    let service_events = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|r| {
        r.map(|e| {
            Change::Service(convert(e, |s: &Service| {
                (key_of(&s.metadata), ServiceInfo::from_service(s))
            }))
        })
    });
    let slice_events = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|r| {
        r.map(|e| {
            Change::Slice(convert(e, |s: &EndpointSlice| {
                (key_of(&s.metadata), SliceInfo::from_slice(s))
            }))
        })
    });
    let mut events =
        std::pin::pin!(futures::stream::select(service_events, slice_events).ready_chunks(512));
    while let Some(batch) = events.next().await {
        let mut changed = false;
        for event in batch {
            match event {
                Ok(Change::Service(e)) => changed |= services.apply(e),
                Ok(Change::Slice(e)) => changed |= slices.apply(e),
                Err(e) => tracing::warn!("DNS watch: {e}"),
            }
        }
        if changed && services.listed && slices.listed {
            let zone = Zone::build(domain, services.objects.values(), slices.objects.values());
            cell.set(zone);
            metrics
                .zone_services
                .store(services.objects.len() as u64, Ordering::Relaxed);
            metrics.zone_updates.fetch_add(1, Ordering::Relaxed);
            if !metrics.ready.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    services = services.objects.len(),
                    slices = slices.objects.len(),
                    "cluster DNS zone listed"
                );
            }
        }
    }
}
