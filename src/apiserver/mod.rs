//! The Kubernetes API server: TLS with client-certificate authentication, discovery, and the REST
//! verbs over the store for every resource in `resources::RESOURCES`.

mod admission;
mod apply;
mod authentication;
pub mod authz;
mod certificates;
mod connect;
mod crd;
mod defaults;
mod delete;
mod discovery;
mod fieldmanager;
mod handlers;
pub mod kinds;
mod metrics;
mod object;
mod openapi;
mod openapi_v2;
mod pagination;
pub(crate) mod params;
mod protobuf;
mod request;
mod resources;
mod reviews;
pub(crate) mod schema;
pub(crate) mod selector;
pub mod serviceaccount;
mod status;
mod subresources;
mod table;
pub mod tls;
mod watch;
mod webhooks;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::pki::ClientIdentity;
use crate::store::Store;
use handlers::Query;
use request::Verb;
use status::ApiError;

pub use discovery::{arch as arch_label, git_version};
pub use object::now_rfc3339;

type Body = BoxBody<Bytes, Infallible>;

pub struct ApiServer {
    store: Store,
    /// host:port clients are told to use in legacy discovery.
    advertise: String,
    /// The range ClusterIPs come from.
    service_subnet: String,
    /// How to reach node agents (kubelet API) for logs, exec, attach, port-forward and node proxy.
    kubelet_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// Signs and verifies service account tokens; without it no token is issued or accepted.
    service_account_signer: std::sync::OnceLock<Arc<serviceaccount::Signer>>,
    /// The admission webhooks in force, kept current from the store once serving starts.
    webhooks: Arc<webhooks::Registry>,
    /// RBAC over the stored roles and bindings, consulted on every authenticated request.
    authz: Arc<authz::Authorizer>,
}

impl ApiServer {
    pub fn new(store: Store, advertise: String) -> Arc<Self> {
        Self::with_service_subnet(store, advertise, kinds::service::DEFAULT_SERVICE_SUBNET)
    }

    pub fn with_service_subnet(store: Store, advertise: String, service_subnet: &str) -> Arc<Self> {
        Arc::new(ApiServer {
            authz: authz::Authorizer::new(store.clone()),
            store,
            advertise,
            service_subnet: service_subnet.to_string(),
            kubelet_tls: std::sync::OnceLock::new(),
            service_account_signer: std::sync::OnceLock::new(),
            webhooks: webhooks::Registry::new(),
        })
    }

    /// Credentials for talking to node agents; set once, before serving.
    pub fn set_kubelet_client(&self, config: rustls::ClientConfig) {
        let _ = self.kubelet_tls.set(Arc::new(config));
    }

    /// The key that signs service account tokens (PEM, PKCS#8 P-256); set once, before serving.
    /// `serviceaccount::jwt::load_or_create_key` keeps one beside the server's other state.
    pub fn set_service_account_key(&self, pem: &str) -> Result<()> {
        let signer = serviceaccount::Signer::from_pem(pem)?;
        let _ = self.service_account_signer.set(Arc::new(signer));
        Ok(())
    }

    /// Creates what every cluster has before anyone asks: the system namespaces.
    pub async fn bootstrap(&self) -> Result<()> {
        // As early as the server can: the documents build while the store is prepared.
        openapi::warm_in_background();
        let def = resources::find("", "v1", "namespaces").context("namespaces are not served")?;
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if self.store.get(&def.key(None, name))?.is_some() {
                continue;
            }
            let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": name, "uid": object::new_uid(), "creationTimestamp": object::now_rfc3339()}});
            fieldmanager::created_by(def, None, &mut ns, "kube-apiserver");
            defaults::on_create(def, &mut ns);
            match self
                .store
                .create(
                    &def.key(None, name),
                    object::to_stored(&ns).map_err(|e| anyhow::anyhow!(e.message))?,
                )
                .await
            {
                Ok(_) | Err(crate::store::StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e).context("cannot create the system namespaces"),
            }
        }
        kinds::bootstrap(&self.store, &self.advertise, &self.service_subnet).await?;
        // Custom resources are served before the first request, then kept current.
        crd::controller::reconcile(&self.store).await?;
        tokio::spawn(crd::controller::run(self.store.clone()));
        // The default roles exist, with their aggregated rules, before the first request.
        authz::bootstrap::reconcile(&self.store).await?;
        authz::aggregation::reconcile(&self.store).await?;
        tokio::spawn(authz::aggregation::run(self.store.clone()));
        Ok(())
    }

    /// Serves HTTPS on `listener` until the task is dropped.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: rustls::ServerConfig,
    ) -> Result<()> {
        // For servers that skip `bootstrap`; a no-op when it already started the warm-up.
        openapi::warm_in_background();
        tokio::spawn(self.webhooks.clone().run(self.store.clone()));
        tokio::spawn(self.authz.clone().watch());
        info!(addr = %listener.local_addr()?, "API server listening");
        tls::accept_loop(listener, tls, move |conn: tls::Accepted| {
            let server = self.clone();
            async move {
                let peer = conn.peer;
                let identity = conn.identity.map(Arc::new);
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    let identity = identity.clone();
                    async move {
                        Ok::<_, Infallible>(server.handle(req, identity.as_deref(), peer).await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(conn.stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await
                {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        })
        .await;
        Ok(())
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        identity: Option<&ClientIdentity>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let uri = req.uri().clone();
        // A verified client certificate wins; otherwise a bearer token must prove who is asking.
        let from_token;
        let identity = match (identity, bearer_token(&req)) {
            (Some(identity), _) => Some(identity),
            (None, Some(token)) => match self.authenticate_token(token) {
                Ok(who) => {
                    from_token = who;
                    Some(&from_token)
                }
                Err(why) => {
                    debug!(%peer, %method, %uri, reason = %why, "bearer token rejected");
                    let e = ApiError::unauthorized();
                    return encoded_json_response(e.code, e.encode_status().into());
                }
            },
            (None, None) => None,
        };
        // Kubernetes puts every authenticated user in system:authenticated.
        let identity = identity.map(authentication::authenticated);
        let identity = identity.as_ref();
        let credentials = identity.map(|i| authentication::Credentials {
            identity: i.clone(),
            token: bearer_token(&req)
                .filter(|_| i.user.starts_with("system:serviceaccount:"))
                .map(str::to_string),
            signer: self.service_account_signer.get().cloned(),
        });
        let routed = authentication::serve_as(credentials, self.route(req, identity)).await;
        let response = match routed {
            Ok(r) => r,
            Err(e) => encoded_json_response(e.code, e.encode_status().into()),
        };
        debug!(%peer, user = identity.map(|i| i.user.as_str()).unwrap_or("anonymous"), %method, %uri,
               status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        response
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        identity: Option<&ClientIdentity>,
    ) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let query = Query::parse(req.uri().query());
        let accept = header_str(&req, header::ACCEPT);
        let get = req.method() == Method::GET;

        // Anonymous requests may ask only what Kubernetes lets them ask.
        match path.as_str() {
            "/version" | "/version/" if get => {
                return Ok(json_response(200, &discovery::version()));
            }
            // A server whose store cannot answer is alive but neither healthy nor ready, as
            // kube-apiserver's etcd check makes it; load balancers take it out of rotation.
            "/healthz" | "/readyz" | "/healthz/etcd" | "/readyz/etcd" if get => {
                return Ok(match self.store.check_health().await {
                    Ok(()) => text_response(200, "ok"),
                    Err(e) => {
                        tracing::warn!(error = %e, "health check: the store does not answer");
                        let check = path.trim_start_matches('/').split('/').next();
                        text_response(
                            500,
                            if check == Some("readyz") {
                                "[-]etcd failed: reason withheld\nreadyz check failed\n"
                            } else {
                                "[-]etcd failed: reason withheld\nhealthz check failed\n"
                            },
                        )
                    }
                });
            }
            "/livez" if get => return Ok(text_response(200, "ok")),
            p if get
                && (p.starts_with("/healthz/")
                    || p.starts_with("/livez/")
                    || p.starts_with("/readyz/")) =>
            {
                return Ok(text_response(200, "ok"));
            }
            _ => {}
        }
        let Some(identity) = identity else {
            return Err(ApiError::unauthorized());
        };
        let user = authz::impersonation::impersonate(
            &self.authz,
            req.headers(),
            authz::User::authenticated(identity),
        )?;
        self.authz.check(&authz::Attributes::of_request(
            &user,
            req.method(),
            &path,
            req.uri().query().unwrap_or_default(),
        ))?;
        if let Some((plural, namespace)) = authz::reviews::target(&path) {
            if req.method() != Method::POST {
                return Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({} {path})",
                    req.method()
                )));
            }
            let content_type = header_str(&req, header::CONTENT_TYPE);
            let body = handlers::decode(&content_type, &read_body(req).await?)?;
            let answer =
                authz::reviews::answer(&self.authz, plural, namespace.as_deref(), &user, body)?;
            return Ok(json_response(201, &answer));
        }
        if let Some(kind) = authentication::owns(&path) {
            return authz::REQUESTER.scope(user, self.review(kind, req)).await;
        }

        if get
            && let Some(doc) =
                self.discovery(&path, &accept, &header_str(&req, header::IF_NONE_MATCH))
        {
            return Ok(doc);
        }
        if get && path.starts_with("/openapi/") {
            return match openapi::serve(&path, req.uri().query(), req.headers()) {
                Some(response) => Ok(response.map(full)),
                None => Err(ApiError::path_not_found(&path)),
            };
        }
        if metrics::owns(&path) {
            let kubelet_tls = self.kubelet_tls.get();
            return metrics::serve(
                &self.store,
                kubelet_tls,
                req.method(),
                &path,
                &query,
                &accept,
            )
            .await
            .map(|doc| json_response(200, &doc));
        }
        let target = request::parse(req.method(), &path, query.flag("watch"))?;
        if matches!(
            target.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward" | "proxy")
        ) {
            let mut warnings = Vec::new();
            if target.subresource.as_deref() != Some("log") {
                let proxy_path = path.split_once("/proxy").map(|(_, rest)| rest.to_string());
                let (admitted, said) = webhooks::admit_connect(
                    &self.store,
                    self.webhooks.clone(),
                    Some(user.identity()),
                    &target,
                    req.uri().query(),
                    proxy_path.as_deref(),
                )
                .await;
                warnings = said;
                if let Err(e) = admitted {
                    let mut response = encoded_json_response(e.code, e.encode_status().into());
                    add_warnings(&mut response, warnings);
                    return Ok(response);
                }
            }
            let mut response =
                match connect::handle(&self.store, self.kubelet_tls.get(), &target, &path, req)
                    .await
                {
                    Ok(response) => response,
                    Err(e) => encoded_json_response(e.code, e.encode_status().into()),
                };
            add_warnings(&mut response, warnings);
            return Ok(response);
        }
        let content_type = header_str(&req, header::CONTENT_TYPE);
        let user_agent = header_str(&req, header::USER_AGENT);
        let table = accept.contains("as=Table");
        if target.verb == Verb::Watch {
            let include = match query.get("includeObject") {
                Some("None") => table::IncludeObject::None,
                Some("Object") => table::IncludeObject::Object,
                _ => table::IncludeObject::Metadata,
            };
            let params = watch::WatchParams::from_query(&query, &target, table, include)?;
            let rx = kinds::convert::watch(self.store.clone(), &target, params)?;
            return Ok(stream_response(rx));
        }
        let body = read_body(req).await?;
        if (
            target.def.group,
            target.def.plural,
            target.subresource.as_deref(),
        ) == ("", "serviceaccounts", Some("token"))
        {
            return self.token_request(&target, &content_type, &body);
        }
        let writes_rbac = target.def.group == authz::rbac::GROUP
            && !matches!(target.verb, Verb::Get | Verb::List | Verb::Watch);
        let admission = webhooks::Request::new(
            self.webhooks.clone(),
            Some(user.identity()),
            target.def,
            target.subresource.clone(),
            query.dry_run(),
            query.get("fieldManager").map(str::to_string),
        );
        let served = authz::REQUESTER
            .scope(
                user,
                webhooks::scope(
                    admission.clone(),
                    kinds::convert::dispatch(handlers::Request {
                        store: &self.store,
                        target: &target,
                        query: &query,
                        accept: &accept,
                        content_type: &content_type,
                        user_agent: &user_agent,
                        body,
                    }),
                ),
            )
            .await;
        if writes_rbac {
            // The next request must see the change, not wait for the watch.
            self.authz.invalidate();
        }
        let reply = match served {
            Ok(reply) => reply,
            Err(e) => {
                let mut response = encoded_json_response(e.code, e.encode_status().into());
                add_warnings(&mut response, admission.take_warnings());
                return Ok(response);
            }
        };
        let mut warnings = admission.take_warnings();
        warnings.extend(reply.warnings);
        if let Some(deprecation) = target.def.custom.and_then(|c| c.deprecation.as_ref()) {
            warnings.insert(0, deprecation.clone());
        }
        let mut response = match reply.encoded {
            Some(bytes) => encoded_json_response(reply.code, bytes),
            None => json_response(reply.code, &reply.body),
        };
        add_warnings(&mut response, warnings);
        Ok(response)
    }

    /// SelfSubjectReview and TokenReview: answered at once, never stored.
    async fn review(&self, kind: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        authentication::check_method(kind, req.method())?;
        let content_type = header_str(&req, header::CONTENT_TYPE);
        let body = read_body(req).await?;
        let review = if kind == "TokenReview" {
            let signer = self.service_account_signer.get().map(|s| &**s);
            authentication::token_review(&self.store, signer, &content_type, &body)?
        } else {
            let user = authentication::requester()
                .ok_or_else(|| ApiError::internal("the request has no user"))?;
            authentication::self_subject_review(&user, &content_type, &body)?
        };
        Ok(json_response(201, &review))
    }

    fn authenticate_token(&self, token: &str) -> Result<ClientIdentity, String> {
        let signer = self
            .service_account_signer
            .get()
            .ok_or("this server has no service-account key")?;
        serviceaccount::authenticate(&self.store, signer, token)
    }

    /// POST serviceaccounts/<name>/token.
    fn token_request(
        &self,
        target: &request::ResourceRequest,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        if target.verb != Verb::Create {
            return Err(ApiError::method_not_allowed(format!(
                "{:?} is not supported on serviceaccounts/token",
                target.verb
            )));
        }
        let signer = self.service_account_signer.get().ok_or_else(|| {
            ApiError::internal("this API server has no service-account key to sign tokens with")
        })?;
        let request = handlers::decode(content_type, body)?;
        let reply = serviceaccount::token_request(
            &self.store,
            signer,
            target.namespace.as_deref().unwrap_or("default"),
            target.name.as_deref().unwrap_or_default(),
            &request,
        )?;
        Ok(json_response(201, &reply))
    }

    fn discovery(&self, path: &str, accept: &str, if_none_match: &str) -> Option<Response<Body>> {
        let path = path.trim_end_matches('/');
        let aggregated = discovery::wants_aggregated(accept);
        let doc = match path {
            "/api" if aggregated => {
                return Some(aggregated_response(
                    discovery::aggregated(true),
                    if_none_match,
                ));
            }
            "/apis" if aggregated => {
                return Some(aggregated_response(
                    discovery::aggregated(false),
                    if_none_match,
                ));
            }
            "/api" => discovery::legacy_api_versions(&self.advertise),
            "/apis" => discovery::legacy_group_list(),
            _ => {
                let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                match segments.as_slice() {
                    ["api", version] => discovery::legacy_resource_list("", version)?,
                    ["apis", group] => discovery::legacy_group(group)?,
                    ["apis", group, version] => discovery::legacy_resource_list(group, version)?,
                    _ => return None,
                }
            }
        };
        Some(json_response(200, &doc))
    }
}

/// `Warning: 299 - "…"` headers, which kubectl prints.
fn add_warnings(response: &mut Response<Body>, warnings: Vec<String>) {
    for warning in warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
}

fn bearer_token(req: &Request<Incoming>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), handlers::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::request_entity_too_large(format!(
                "the request body is larger than the {} byte limit",
                handlers::MAX_BODY_BYTES
            )))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    encoded_json_response(code, serde_json::to_vec(body).unwrap_or_default().into())
}

fn encoded_json_response(code: u16, bytes: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// Aggregated discovery carries an ETag (the document's hash) and answers a matching
/// If-None-Match with 304, as kube-apiserver does: clients' HTTP caches revalidate on every
/// use, so a new CustomResourceDefinition is seen at once, without a stale cache to wait out.
fn aggregated_response(body: Value, if_none_match: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let etag = format!("\"{}\"", discovery::etag(&bytes));
    let matched = if_none_match == etag;
    let mut response = if matched {
        Response::builder()
            .status(304)
            .body(full(Bytes::new()))
            .unwrap_or_else(|_| Response::new(full("")))
    } else {
        encoded_json_response(200, bytes.into())
    };
    let headers = response.headers_mut();
    if !matched {
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
        );
    }
    if let Ok(value) = header::HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::VARY, header::HeaderValue::from_static("Accept"));
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public"),
    );
    response
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(text))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(full("")))
}
