//! Controllers that run in the server node's process as ordinary API clients, the way
//! kube-controller-manager does, and the scheduler beside them. They share one informer per
//! kind (pods, nodes, ReplicaSets, Deployments, Services, Endpoints, EndpointSlices); each
//! writes, events included, as its own service account (see `credentials`).

pub mod clusterdns;
pub mod credentials;
mod cron;
mod cronjob;
pub mod csrsigning;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslicemirroring;
mod garbagecollector;
mod history;
mod hpa;
mod job;
pub mod localpath;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod podcontrol;
mod podfailurepolicy;
mod replicaset;
mod resourcequota;
pub mod runtime;
mod serviceaccounts;
mod statefulset;
mod tainteviction;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, ResourceQuota, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use runtime::Informer;
use runtime::events::EventSink;

/// `ca_pem` is the cluster CA every namespace's `kube-root-ca.crt` ConfigMap publishes;
/// `pod_subnet`, when given, is split into a pod CIDR per Node (kube-controller-manager's
/// `--allocate-node-cidrs --cluster-cidr`). The scheduler shares the controllers' informers
/// but writes (bindings, pod status, claims, preemptions, events) with `scheduler_client`, its
/// own identity.
/// Informers use `clients.root()`; each controller writes its objects and its events with the
/// client of its own service account.
pub async fn run(
    clients: std::sync::Arc<credentials::ControllerClients>,
    scheduler_client: kube::Client,
    ca_pem: Option<String>,
    pod_subnet: Option<crate::cluster::cidr::Ipv4Cidr>,
) -> Result<()> {
    let client = clients.root();
    let as_account = async |account: &str| clients.client(account).await;
    let node_controller = as_account("node-controller").await?;
    let pods = Informer::<Pod>::new(client.clone());
    let nodes = Informer::<Node>::new(client.clone());
    let sets = Informer::<ReplicaSet>::new(client.clone());
    let rcs = Informer::<ReplicationController>::new(client.clone());
    let daemonsets = Informer::<DaemonSet>::new(client.clone());
    let revisions = Informer::<ControllerRevision>::new(client.clone());
    let statefulsets = Informer::<StatefulSet>::new(client.clone());
    let quotas = Informer::<ResourceQuota>::new(client.clone());
    let deployments = Informer::<Deployment>::new(client.clone());
    let namespaces = Informer::<Namespace>::new(client.clone());
    let budgets = Informer::<PodDisruptionBudget>::new(client.clone());
    let services = Informer::<Service>::new(client.clone());
    let slices = Informer::<EndpointSlice>::new(client.clone());
    let endpoints_informer = Informer::<Endpoints>::new(client.clone());
    let jobs = Informer::<Job>::new(client.clone());
    let cronjobs = Informer::<CronJob>::new(client.clone());
    let claims = Informer::<PersistentVolumeClaim>::new(client.clone());
    let volumes = Informer::<PersistentVolume>::new(client.clone());
    let autoscalers = Informer::<HorizontalPodAutoscaler>::new(client.clone());

    // Handlers are registered before the informers start, so no change goes unseen.
    let replicaset_controller = as_account("replicaset-controller").await?;
    let replicasets = replicaset::ReplicaSetController::new(
        replicaset_controller.clone(),
        sets.clone(),
        pods.clone(),
        EventSink::start(replicaset_controller).recorder("replicaset-controller"),
    );
    let replication_controller = as_account("replication-controller").await?;
    let replication_manager = replicaset::ReplicationManager::new(
        replication_controller.clone(),
        rcs.clone(),
        pods.clone(),
        EventSink::start(replication_controller).recorder("replication-controller"),
    );
    let daemon_set_controller = as_account("daemon-set-controller").await?;
    let daemonset_controller = daemonset::DaemonSetController::new(
        daemon_set_controller.clone(),
        daemonsets.clone(),
        pods.clone(),
        nodes.clone(),
        revisions.clone(),
        EventSink::start(daemon_set_controller).recorder("daemonset-controller"),
    );
    let statefulset_controller = as_account("statefulset-controller").await?;
    let statefulset_controller = statefulset::StatefulSetController::new(
        statefulset_controller.clone(),
        statefulsets.clone(),
        pods.clone(),
        revisions.clone(),
        EventSink::start(statefulset_controller).recorder("statefulset-controller"),
    );
    let quota_controller = resourcequota::ResourceQuotaController::new(
        as_account("resourcequota-controller").await?,
        quotas.clone(),
        pods.clone(),
    );
    let deployment_controller = as_account("deployment-controller").await?;
    let deployment_controller = deployment::DeploymentController::new(
        deployment_controller.clone(),
        deployments.clone(),
        sets.clone(),
        pods.clone(),
        EventSink::start(deployment_controller).recorder("deployment-controller"),
    );
    let scheduler_events = EventSink::start(scheduler_client.clone());
    let scheduler = crate::scheduler::Scheduler::new(
        scheduler_client,
        pods.clone(),
        nodes.clone(),
        namespaces.clone(),
        claims.clone(),
        volumes.clone(),
        scheduler_events.recorder("default-scheduler"),
    );

    let taint_eviction = tainteviction::TaintEvictionController::new(
        node_controller.clone(),
        pods.clone(),
        nodes.clone(),
        EventSink::start(node_controller.clone()).recorder("taint-eviction-controller"),
    );
    let disruption_controller = as_account("disruption-controller").await?;
    let disruption = disruption::DisruptionController::new(
        disruption_controller.clone(),
        budgets.clone(),
        pods.clone(),
        sets.clone(),
        deployments.clone(),
        EventSink::start(disruption_controller).recorder("controllermanager"),
    );
    let endpoints = endpoints::EndpointsController::new(
        as_account("endpoint-controller").await?,
        as_account("endpointslice-controller").await?,
        services.clone(),
        pods.clone(),
        nodes.clone(),
        slices.clone(),
    );
    let endpointslicemirroring_controller = as_account("endpointslicemirroring-controller").await?;
    let mirroring = endpointslicemirroring::EndpointSliceMirroringController::new(
        endpointslicemirroring_controller.clone(),
        endpoints_informer.clone(),
        services.clone(),
        slices.clone(),
        EventSink::start(endpointslicemirroring_controller)
            .recorder("endpoint-slice-mirroring-controller"),
    );
    let namespace_defaults = serviceaccounts::NamespaceDefaults::new(
        client.clone(),
        as_account("service-account-controller").await?,
        as_account("root-ca-cert-publisher").await?,
        namespaces.clone(),
        ca_pem,
    );
    let job_controller = as_account("job-controller").await?;
    let job_controller = job::JobController::new(
        job_controller.clone(),
        as_account("ttl-after-finished-controller").await?,
        jobs.clone(),
        pods.clone(),
        EventSink::start(job_controller).recorder("job-controller"),
    );
    let cronjob_controller = as_account("cronjob-controller").await?;
    let cronjob_controller = cronjob::CronJobController::new(
        cronjob_controller.clone(),
        cronjobs.clone(),
        jobs.clone(),
        EventSink::start(cronjob_controller).recorder("cronjob-controller"),
    );
    let local_path =
        as_account(crate::apiserver::authz::controller_roles::LOCAL_PATH_ACCOUNT).await?;
    let provisioner = localpath::LocalPathProvisioner::new(
        local_path.clone(),
        claims.clone(),
        volumes.clone(),
        EventSink::start(local_path).recorder("kcluster.io/local-path"),
    );
    let horizontal_pod_autoscaler = as_account("horizontal-pod-autoscaler").await?;
    let autoscaler_controller = hpa::HpaController::new(
        horizontal_pod_autoscaler.clone(),
        autoscalers.clone(),
        pods.clone(),
        EventSink::start(horizontal_pod_autoscaler).recorder("horizontal-pod-autoscaler"),
        hpa::Options::default(),
    );
    let garbage_collector =
        garbagecollector::GarbageCollector::new(as_account("generic-garbage-collector").await?);
    let node_ipam = pod_subnet.map(|subnet| {
        nodeipam::NodeIpamController::new(
            node_controller.clone(),
            nodes.clone(),
            subnet,
            EventSink::start(node_controller.clone()).recorder("node-ipam-controller"),
        )
    });

    let namespace_controller = as_account("namespace-controller").await?;
    tokio::spawn(pods.run());
    tokio::spawn(nodes.run());
    tokio::spawn(sets.run());
    tokio::spawn(rcs.run());
    tokio::spawn(daemonsets.run());
    tokio::spawn(revisions.run());
    tokio::spawn(statefulsets.run());
    tokio::spawn(quotas.run());
    tokio::spawn(deployments.run());
    tokio::spawn(namespaces.run());
    tokio::spawn(budgets.run());
    tokio::spawn(services.run());
    tokio::spawn(slices.run());
    tokio::spawn(endpoints_informer.run());
    tokio::spawn(jobs.run());
    tokio::spawn(cronjobs.run());
    tokio::spawn(claims.run());
    tokio::spawn(volumes.run());
    tokio::spawn(autoscalers.run());

    tokio::try_join!(
        nodelifecycle::run(
            client.clone(),
            node_controller,
            nodelifecycle::Options::default()
        ),
        namespace::run(namespace_controller),
        replicasets.run(),
        replication_manager.run(),
        daemonset_controller.run(),
        statefulset_controller.run(),
        quota_controller.run(),
        deployment_controller.run(),
        scheduler.run(),
        garbage_collector.run(),
        taint_eviction.run(),
        disruption.run(),
        endpoints.run(),
        mirroring.run(),
        namespace_defaults.run(),
        job_controller.run(),
        cronjob_controller.run(),
        async move {
            match node_ipam {
                Some(c) => c.run().await,
                None => Ok(()),
            }
        },
        provisioner.run(),
        autoscaler_controller.run(),
    )?;
    Ok(())
}
