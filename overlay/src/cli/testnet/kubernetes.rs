//! genconfig's Kubernetes output: one ConfigMap with every configuration file (`NAME.toml` and
//! `authorities.toml`) and one Secret with every identity (`NAME.key`), for the manifests in
//! `deploy/kubernetes/` (each pod reads the files named after it).

use std::fmt::Write;

use anyhow::{Context, Result};
use base64::Engine;
use zeroize::Zeroizing;

use super::genconfig::Process;

/// The namespace the manifests use.
pub(crate) const NAMESPACE: &str = "p2pmix";

/// `config.yaml`: the ConfigMap `p2pmix-config` and the Secret `p2pmix-keys`.
pub(crate) fn config(files: &[(String, String)], processes: &[Process]) -> Result<String> {
    let mut y = String::from(
        "# Written by p2pmix testnet genconfig: every configuration (ConfigMap) and identity \
         (Secret)\n# of the network, for the manifests in deploy/kubernetes/.\n",
    );
    let _ = write!(
        y,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p2pmix-config\n  namespace: {NAMESPACE}\ndata:\n"
    );
    for (key, text) in files {
        let _ = writeln!(y, "  {key}: |");
        for line in text.lines() {
            if line.is_empty() {
                y.push('\n');
            } else {
                let _ = writeln!(y, "    {line}");
            }
        }
    }
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: p2pmix-keys\n  namespace: {NAMESPACE}\ntype: Opaque\ndata:\n"
    );
    for p in processes {
        let bytes = Zeroizing::new(
            p.keypair
                .to_protobuf_encoding()
                .context("encoding an identity")?,
        );
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*bytes));
        let _ = writeln!(y, "  {}.key: {}", p.name, encoded.as_str());
    }
    Ok(y)
}
