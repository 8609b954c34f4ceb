//! `kcluster registry create|ls|delete`, and the part of `kcluster create --registry` /
//! `--registry-use` that makes the registry and ties a new cluster to it.

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::cluster::config::{ClusterConfig, Mirror};
use crate::cluster::docker::Docker;
use crate::cluster::image;
use crate::registry::docker::{self as registry_docker, DEFAULT_NAME, RegistryInfo};

use super::Progress;

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Create a local registry (`docker push localhost:5001/app:dev`), or start the one there.
    Create {
        /// Container name, also its name on cluster networks.
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// Host port on 127.0.0.1 (default 5001; when taken, the next free one is used and printed).
        #[arg(long)]
        port: Option<u16>,
        /// Docker volume for the images (default <name>-data). One that exists is used as it
        /// is and kept by `registry delete`, e.g. a size-limited one: `docker volume create
        /// --opt type=tmpfs --opt device=tmpfs --opt o=size=2g NAME`.
        #[arg(long, value_name = "NAME")]
        volume: Option<String>,
        /// Serve DELETE of manifests and blobs.
        #[arg(long)]
        enable_delete: bool,
    },
    /// List the registries: name, host address, state, clusters using it.
    #[command(alias = "list")]
    Ls,
    /// Delete a registry and its volume (the images in it go too).
    Delete {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
}

pub async fn run(command: RegistryCommand, progress: &Progress) -> Result<()> {
    match command {
        RegistryCommand::Create {
            name,
            port,
            volume,
            enable_delete,
        } => {
            let options = registry_docker::Options {
                port,
                volume,
                enable_delete,
            };
            let docker = Docker::connect().await?;
            let registry = ensure(&docker, &name, &options, progress).await?;
            println!(
                "Registry {} is on {} (push: docker push {}/app:dev)",
                registry.name,
                registry.host(),
                registry.host()
            );
            Ok(())
        }
        RegistryCommand::Ls => {
            let docker = Docker::connect().await?;
            let list = registry_docker::list(&docker).await?;
            println!("{:<24} {:<16} {:<10} CLUSTERS", "NAME", "HOST", "STATE");
            for r in list {
                let clusters: Vec<&str> = r
                    .networks
                    .iter()
                    .map(|n| n.trim_start_matches("kcluster-"))
                    .collect();
                println!(
                    "{:<24} {:<16} {:<10} {}",
                    r.name,
                    r.host(),
                    r.state,
                    if clusters.is_empty() {
                        "-".to_string()
                    } else {
                        clusters.join(",")
                    }
                );
            }
            Ok(())
        }
        RegistryCommand::Delete { name } => {
            registry_docker::validate_name(&name)?;
            let docker = Docker::connect().await?;
            let step = progress.step(format!("Deleting registry {name}"));
            let removed = registry_docker::remove(&docker, &name).await?;
            step.done();
            if !removed {
                bail!("there is no registry named {name:?} (see `kcluster registry ls`)");
            }
            Ok(())
        }
    }
}

/// Creates (or starts) the registry, building the node image it runs from this binary.
pub async fn ensure(
    docker: &Docker,
    name: &str,
    options: &registry_docker::Options,
    progress: &Progress,
) -> Result<RegistryInfo> {
    registry_docker::validate_name(name)?;
    if let Some(volume) = &options.volume {
        registry_docker::validate_volume(volume)?;
    }
    let binary = image::own_binary()?;
    let tag = image::tag_for(&binary)?;
    let step = progress.step(format!("Ensuring registry {name}"));
    image::ensure(docker, &binary, &tag).await?;
    let ensured = registry_docker::ensure(docker, name, options, &tag).await?;
    step.done();
    if let Some(wanted) = ensured.moved_from {
        // Printed even with --quiet: the port is what the user pushes to.
        eprintln!(
            "port {wanted} on 127.0.0.1 is taken: registry {name} is on port {} instead",
            ensured.registry.host_port
        );
    }
    Ok(ensured.registry)
}

/// What `kcluster create` asked for.
pub struct Wanted {
    pub name: String,
    /// Create it when missing (`--registry`) or insist it exists (`--registry-use`).
    pub create: bool,
}

/// Before any node exists: makes or finds the registry and adds its mirror to the config, so
/// every node maps `localhost:<port>` to it.
pub async fn prepare(
    docker: &Docker,
    wanted: &Wanted,
    config: &mut ClusterConfig,
    progress: &Progress,
) -> Result<RegistryInfo> {
    let registry = if wanted.create {
        ensure(
            docker,
            &wanted.name,
            &registry_docker::Options::default(),
            progress,
        )
        .await?
    } else {
        registry_docker::validate_name(&wanted.name)?;
        let found = registry_docker::find(docker, &wanted.name).await?.with_context(|| {
            format!(
                "there is no registry named {:?}: create it with `kcluster registry create --name {}` (or use --registry)",
                wanted.name, wanted.name
            )
        })?;
        if found.state != "running" {
            docker
                .api()
                .start_container(&found.name, None)
                .await
                .with_context(|| format!("cannot start the registry {}", found.name))?;
        }
        found
    };
    let endpoint = format!("http://{}", registry.cluster_host());
    for host in [registry.host(), format!("127.0.0.1:{}", registry.host_port)] {
        config.registries.mirrors.entry(host).or_insert(Mirror {
            endpoints: vec![endpoint.clone()],
        });
    }
    Ok(registry)
}

/// `kcluster image load --to-registry [NAME]`: pushes images from the host's Docker into the
/// registry as `localhost:<port>/<repository>:<tag>`, so every node (and every node added
/// later) pulls them from there by that name.
pub async fn load_to_registry(images: &[String], name: &str, progress: &Progress) -> Result<()> {
    use futures::StreamExt;
    registry_docker::validate_name(name)?;
    let docker = Docker::connect().await?;
    let registry = registry_docker::find(&docker, name).await?.with_context(|| {
        format!("there is no registry named {name:?}: create it with `kcluster registry create --name {name}`")
    })?;
    // Every name is checked before anything is pushed.
    let mut targets = Vec::new();
    for image in images {
        match docker.api().inspect_image(image).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => bail!(
                "the host's Docker engine has no image {image:?}: build it (docker build -t {image} …) or pull it (docker pull {image}) first"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot inspect the image {image}")),
        }
        let reference = crate::runtime::images::reference::Reference::parse(image)
            .with_context(|| format!("{image:?} is not an image name"))?;
        let tag = match (&reference.tag, &reference.digest) {
            (Some(tag), _) => tag.clone(),
            (None, None) => "latest".to_string(),
            (None, Some(_)) => {
                bail!("{image:?} names a digest and no tag; push it with a tag (e.g. {image}:dev)")
            }
        };
        targets.push((
            image,
            format!("{}/{}", registry.host(), reference.repository),
            tag,
        ));
    }
    for (image, repository, tag) in targets {
        let target = format!("{repository}:{tag}");
        let step = progress.step(format!("Pushing {image} to {target}"));
        docker
            .api()
            .tag_image(
                image,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::new()
                        .repo(&repository)
                        .tag(&tag)
                        .build(),
                ),
            )
            .await
            .with_context(|| format!("cannot tag {image} as {target}"))?;
        let mut stream = docker.api().push_image(
            &repository,
            Some(
                bollard::query_parameters::PushImageOptionsBuilder::new()
                    .tag(&tag)
                    .build(),
            ),
            None,
        );
        while let Some(item) = stream.next().await {
            item.with_context(|| {
                format!(
                    "cannot push {target} (is the registry {name} running? `kcluster registry ls`)"
                )
            })?;
        }
        step.done();
        println!("{image} -> {target}");
    }
    Ok(())
}
