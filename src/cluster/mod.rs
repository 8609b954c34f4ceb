//! Clusters as Docker objects: the config file, the Docker provider, the node image and the
//! user's kubeconfig.

pub mod cidr;
pub mod config;
pub mod docker;
pub mod image;
pub mod kubeconfig;
