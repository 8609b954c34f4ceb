//! kube-controller-manager's `--use-service-account-credentials`: the shared informers and the
//! event writer run as `system:kube-controller-manager`, and each controller writes as its own
//! service account `kube-system/<name>`, so the API server authorizes it by Kubernetes'
//! `system:controller:<name>` role and webhooks, policies and audit see which controller acted.
//!
//! The accounts are created through the root client and their tokens come from the
//! TokenRequest API, as kube-controller-manager gets them. Tokens last an hour and are renewed
//! after 48 minutes (80%, where client-go's token source renews), or as soon as their account
//! is found deleted (the account is made again); each is kept in a file that kube-rs re-reads
//! every minute, so a renewed token reaches its client without a new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use super::runtime::api_code;
use crate::apiserver::authz::controller_roles::NAMESPACE;

const TOKEN_SECONDS: i64 = 3600;
const RENEW_AFTER: Duration = Duration::from_secs(TOKEN_SECONDS as u64 * 8 / 10);
/// How often the accounts are looked at: a token dies with its account, so one deleted (or
/// deleted and made again) gets a new account and token within this, plus kube-rs' minute.
const CHECK: Duration = Duration::from_secs(30);

/// The account a token was issued for, and when.
struct Issued {
    uid: String,
    at: Instant,
}

pub struct ControllerClients {
    root: kube::Client,
    host: String,
    port: u16,
    ca_pem: String,
    dir: PathBuf,
    issued: Mutex<BTreeMap<String, Issued>>,
}

impl ControllerClients {
    /// `root` is `system:kube-controller-manager`'s client; tokens go to files in `dir`, and
    /// the controllers' clients reach the API server at `host:port`.
    pub fn new(
        root: kube::Client,
        host: &str,
        port: u16,
        ca_pem: &str,
        dir: &Path,
    ) -> Result<Arc<Self>> {
        create_private_dir(dir)?;
        let this = Arc::new(ControllerClients {
            root,
            host: host.to_string(),
            port,
            ca_pem: ca_pem.to_string(),
            dir: dir.to_path_buf(),
            issued: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(Self::renew(Arc::downgrade(&this)));
        Ok(this)
    }

    /// The informers' and event writer's client.
    pub fn root(&self) -> kube::Client {
        self.root.clone()
    }

    /// A client that authenticates as `system:serviceaccount:kube-system:<account>`.
    pub async fn client(&self, account: &str) -> Result<kube::Client> {
        self.issue(account).await?;
        crate::node::client::connect_with_token_file(
            &self.host,
            self.port,
            &self.ca_pem,
            &self.token_file(account),
        )
        .await
        .with_context(|| format!("cannot build the client of controller {account}"))
    }

    fn token_file(&self, account: &str) -> PathBuf {
        self.dir.join(account)
    }

    /// Creates the account if it is missing and writes a fresh token for it.
    async fn issue(&self, account: &str) -> Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(account.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let current = match accounts.create(&PostParams::default(), &sa).await {
            Ok(created) => {
                info!(account, "controller service account created");
                created
            }
            Err(e) if api_code(&e) == Some(409) => {
                accounts.get(account).await.with_context(|| {
                    format!("cannot read the service account {NAMESPACE}/{account}")
                })?
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create the service account {NAMESPACE}/{account}")
                });
            }
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let granted = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("cannot get a token for {NAMESPACE}/{account}"))?;
        let token = granted
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .with_context(|| {
                format!("the token request for {NAMESPACE}/{account} gave no token")
            })?;
        // In a directory only this process' user may enter.
        crate::runtime::images::write_atomic(&self.token_file(account), token.as_bytes())?;
        if let Ok(mut issued) = self.issued.lock() {
            let uid = current.metadata.uid.unwrap_or_default();
            let at = Instant::now();
            issued.insert(account.to_string(), Issued { uid, at });
        }
        Ok(())
    }

    /// Whether `account`'s token must be replaced: it is old, or the account it was issued
    /// for is gone.
    async fn due(&self, account: &str, uid: &str, at: Instant) -> Result<bool> {
        if at.elapsed() >= RENEW_AFTER {
            return Ok(true);
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let current = accounts
            .get_opt(account)
            .await
            .with_context(|| format!("cannot read the service account {NAMESPACE}/{account}"))?;
        Ok(current.and_then(|sa| sa.metadata.uid).as_deref() != Some(uid))
    }

    async fn renew(this: std::sync::Weak<Self>) {
        loop {
            tokio::time::sleep(CHECK).await;
            let Some(this) = this.upgrade() else { return };
            let issued: Vec<(String, String, Instant)> = match this.issued.lock() {
                Ok(issued) => issued
                    .iter()
                    .map(|(name, i)| (name.clone(), i.uid.clone(), i.at))
                    .collect(),
                Err(_) => return,
            };
            for (account, uid, at) in issued {
                let renewed = match this.due(&account, &uid, at).await {
                    Ok(false) => Ok(()),
                    Ok(true) => this.issue(&account).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = renewed {
                    warn!(
                        account,
                        error = format!("{e:#}"),
                        "cannot renew a controller's token"
                    );
                }
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the token directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}
