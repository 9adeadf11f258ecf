//! Building the Kubernetes client: an explicit API server URL (the lab: plain HTTP over the
//! underlay), else a kubeconfig file, else the pod's ServiceAccount when running as a pod, else
//! $KUBECONFIG / ~/.kube/config (see `sarasa_cluster::client_config`).

use std::path::Path;

use crate::config::AgentConfig;
use crate::error::{Error, Result};

pub async fn client(config: &AgentConfig) -> Result<kube::Client> {
    let kc = match (&config.apiserver, &config.kubeconfig) {
        (Some(url), _) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| Error::Config(format!("--apiserver {url:?}: {e}")))?;
            sarasa_cluster::client_config::for_url(uri)
        }
        (None, Some(path)) => from_file(path).await?,
        (None, None) => sarasa_cluster::client_config::infer()
            .await
            .map_err(Error::KubeConfig)?,
    };
    kube::Client::try_from(kc).map_err(|e| Error::kube("build client", e))
}

async fn from_file(path: &Path) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::KubeConfig(format!("{}: {e}", path.display())))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::KubeConfig(format!("{}: {e}", path.display())))
}
