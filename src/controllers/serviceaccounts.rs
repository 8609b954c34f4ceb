//! Two small per-namespace controllers of kube-controller-manager: the serviceaccount controller
//! (every namespace has a ServiceAccount `default`, put back if deleted) and the
//! root-ca-cert-publisher (every namespace has a ConfigMap `kube-root-ca.crt` holding the
//! cluster's CA, which pods' service account volumes project to verify the API server).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use super::runtime::queue::WorkQueue;
use super::runtime::{Change, Informer, ObjKey, api_code};

const ROOT_CA: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
/// Both are re-checked this often, which also puts back what someone deleted.
const RESYNC: Duration = Duration::from_secs(30);

pub struct NamespaceDefaults {
    /// kube-controller-manager's own client: reads, as its informers would.
    client: kube::Client,
    /// The serviceaccount controller's and the root-ca-cert-publisher's accounts write.
    accounts_client: kube::Client,
    publisher_client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    ca_pem: Option<String>,
    queue: Arc<WorkQueue<ObjKey>>,
}

impl NamespaceDefaults {
    pub fn new(
        client: kube::Client,
        accounts_client: kube::Client,
        publisher_client: kube::Client,
        namespaces: Arc<Informer<Namespace>>,
        ca_pem: Option<String>,
    ) -> Arc<Self> {
        let this = Arc::new(NamespaceDefaults {
            client,
            accounts_client,
            publisher_client,
            namespaces,
            ca_pem,
            queue: WorkQueue::new(),
        });
        let weak = Arc::downgrade(&this);
        this.namespaces.add_handler(move |change| {
            if let (Some(c), Change::Added(ns) | Change::Updated { new: ns, .. }) =
                (weak.upgrade(), change)
            {
                c.queue.add(ObjKey::of(&**ns));
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.namespaces.wait_synced().await;
        info!("serviceaccount and root CA publisher controllers started");
        let resync = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                for ns in resync.namespaces.list_all() {
                    resync.queue.add(ObjKey::of(&*ns));
                }
            }
        });
        loop {
            let key = self.queue.get().await;
            match self.sync(&key.name).await {
                Ok(()) => self.queue.forget(&key),
                Err(e) => {
                    warn!(namespace = %key.name, error = format!("{e:#}"), "cannot set up the namespace's defaults; retrying");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    async fn sync(&self, namespace: &str) -> Result<()> {
        let Some(ns) = self.namespaces.get(&ObjKey::new("", namespace)) else {
            return Ok(());
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        if accounts.get_opt("default").await?.is_none() {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("default".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let accounts: Api<ServiceAccount> =
                Api::namespaced(self.accounts_client.clone(), namespace);
            created(accounts.create(&PostParams::default(), &sa).await)
                .context("cannot create the default ServiceAccount")?;
        }
        let Some(ca) = &self.ca_pem else {
            return Ok(());
        };
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let data: BTreeMap<String, String> = [("ca.crt".to_string(), ca.clone())].into();
        let writer: Api<ConfigMap> = Api::namespaced(self.publisher_client.clone(), namespace);
        match maps.get_opt(ROOT_CA).await? {
            Some(cm) if cm.data.as_ref() == Some(&data) => {}
            Some(mut cm) => {
                cm.data = Some(data);
                writer
                    .replace(ROOT_CA, &PostParams::default(), &cm)
                    .await
                    .context("cannot update the root CA ConfigMap")?;
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA.into()),
                        annotations: Some(
                            [(
                                "kubernetes.io/description".to_string(),
                                DESCRIPTION.to_string(),
                            )]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                created(writer.create(&PostParams::default(), &cm).await)
                    .context("cannot create the root CA ConfigMap")?;
            }
        }
        Ok(())
    }
}

/// A create that lost a race with another creator (or with namespace deletion) is not an error.
fn created<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(409) => Ok(()),
        // Not a refusal by RBAC, which must not pass unseen.
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("is being terminated") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
