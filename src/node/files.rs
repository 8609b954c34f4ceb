//! The files the CLI puts into a node container before starting it.

use anyhow::{Context, Result};

use super::client::Credentials;

pub const NODE_CONFIG_PATH: &str = "/etc/kcluster/node.json";
pub const PKI_DIR: &str = "/etc/kcluster/pki";

pub fn read_pki(name: &str) -> Result<String> {
    let path = format!("{PKI_DIR}/{name}");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))
}

pub fn node_credentials() -> Result<Credentials> {
    Ok(Credentials {
        ca_pem: read_pki("ca.crt")?,
        cert_pem: read_pki("node.crt")?,
        key_pem: read_pki("node.key")?,
    })
}
