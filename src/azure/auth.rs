//! Entra ID credentials, from `azure_identity` 1.x, chosen by configuration.
//!
//! `auto` picks, in order, the credential that works on each kind of host:
//! workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set (AKS), a client
//! secret when its variables are set, the App Service / Container Apps
//! managed identity when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set,
//! the Azure CLI when `az` is on `PATH` (a workstation), and otherwise the
//! managed identity of the instance metadata service (VMs, scale sets, AKS
//! nodes): azure_identity's managed identity falls back to IMDS when no
//! variable names another source. The choice and why are logged; the secret
//! never is. Secrets come from the environment or a file,
//! never from the configuration file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    Auto,
    WorkloadIdentity,
    ManagedIdentity,
    ClientSecret,
    AzureCli,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Auto => "auto",
            AuthMethod::WorkloadIdentity => "workload-identity",
            AuthMethod::ManagedIdentity => "managed-identity",
            AuthMethod::ClientSecret => "client-secret",
            AuthMethod::AzureCli => "azure-cli",
        }
    }
}

/// What the credential needs besides the environment.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub method: AuthMethod,
    pub authority_host: String,
    /// Client id of a user-assigned managed identity, or of the app for
    /// client secret / workload identity when the variable is not set.
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    /// A file holding the client secret (a mounted Kubernetes Secret).
    pub client_secret_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("authentication ({method}): {message}")]
pub struct AuthError {
    pub method: &'static str,
    pub message: String,
}

/// Resolves `auto` against the environment and what is on `PATH`; returns
/// the method and why it was chosen.
pub fn choose(
    method: AuthMethod,
    env: &dyn Fn(&str) -> Option<String>,
    on_path: &dyn Fn(&str) -> bool,
    settings: &AuthSettings,
) -> (AuthMethod, &'static str) {
    if method != AuthMethod::Auto {
        return (method, "configured in [azure] auth");
    }
    if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        (
            AuthMethod::WorkloadIdentity,
            "AZURE_FEDERATED_TOKEN_FILE is set (AKS workload identity)",
        )
    } else if env("AZURE_CLIENT_SECRET").is_some() || settings.client_secret_file.is_some() {
        (
            AuthMethod::ClientSecret,
            "a client secret is set (AZURE_CLIENT_SECRET or [azure] client_secret_file)",
        )
    } else if env("IDENTITY_ENDPOINT").is_some() && env("IDENTITY_HEADER").is_some() {
        (
            AuthMethod::ManagedIdentity,
            "IDENTITY_ENDPOINT and IDENTITY_HEADER are set (App Service, Container Apps)",
        )
    } else if on_path("az") {
        (
            AuthMethod::AzureCli,
            "the Azure CLI `az` is on PATH (a workstation)",
        )
    } else {
        (
            AuthMethod::ManagedIdentity,
            "no identity variable is set and `az` is not on PATH: the instance metadata service (VMs, scale sets, AKS nodes)",
        )
    }
}

/// Whether an executable of this name is in one of `PATH`'s directories.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// Builds the credential. Returns it with the method actually used.
pub fn credential(
    settings: &AuthSettings,
) -> Result<(Arc<dyn TokenCredential>, AuthMethod), AuthError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (method, why) = choose(settings.method, &env, &on_path, settings);
    let err = |message: String| AuthError {
        method: method.as_str(),
        message,
    };
    let mut custom = CustomConfiguration::default();
    custom.authority_host =
        env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| settings.authority_host.clone());
    let client_options = ClientOptions {
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        ..ClientOptions::default()
    };
    let cred: Arc<dyn TokenCredential> = match method {
        AuthMethod::WorkloadIdentity => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: settings
                    .client_id
                    .clone()
                    .or_else(|| env("AZURE_CLIENT_ID")),
                tenant_id: settings
                    .tenant_id
                    .clone()
                    .or_else(|| env("AZURE_TENANT_ID")),
                token_file_path: env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            };
            WorkloadIdentityCredential::new(Some(options)).map_err(|e| {
                err(format!(
                    "{e}; on AKS, label the pod azure.workload.identity/use=\"true\" and annotate its service account with azure.workload.identity/client-id"
                ))
            })?
        }
        AuthMethod::ClientSecret => {
            let tenant = settings
                .tenant_id
                .clone()
                .or_else(|| env("AZURE_TENANT_ID"))
                .ok_or_else(|| err("set AZURE_TENANT_ID (or [azure] tenant_id)".into()))?;
            let client = settings
                .client_id
                .clone()
                .or_else(|| env("AZURE_CLIENT_ID"))
                .ok_or_else(|| err("set AZURE_CLIENT_ID (or [azure] client_id)".into()))?;
            let secret = match &settings.client_secret_file {
                Some(path) => read_secret_file(path).map_err(err)?,
                None => env("AZURE_CLIENT_SECRET").ok_or_else(|| {
                    err("set AZURE_CLIENT_SECRET or [azure] client_secret_file".into())
                })?,
            };
            let options = ClientSecretCredentialOptions { client_options };
            ClientSecretCredential::new(&tenant, client, Secret::new(secret), Some(options))
                // azure_identity's messages name the tenant or client id, never the secret.
                .map_err(|e| err(e.to_string()))?
        }
        AuthMethod::ManagedIdentity => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
                client_options,
            };
            ManagedIdentityCredential::new(Some(options)).map_err(|e| err(e.to_string()))?
        }
        AuthMethod::AzureCli => AzureCliCredential::new(None).map_err(|e| err(e.to_string()))?,
        AuthMethod::Auto => return Err(err("unresolved auto".into())),
    };
    tracing::info!(method = method.as_str(), why, "authenticating to Azure");
    Ok((cred, method))
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read client_secret_file {}: {e}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        return Err(format!("client_secret_file {} is empty", path.display()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_gives_each_host_the_credential_that_works_there() {
        let s = AuthSettings::default();
        let pick = |vars: &[&str], az: bool| {
            let vars: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
            choose(
                AuthMethod::Auto,
                &|k| vars.iter().any(|v| v == k).then(|| "x".to_owned()),
                &|name| az && name == "az",
                &s,
            )
            .0
        };
        assert_eq!(
            pick(&["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_SECRET"], true),
            AuthMethod::WorkloadIdentity
        );
        assert_eq!(
            pick(&["AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT"], true),
            AuthMethod::ClientSecret
        );
        assert_eq!(
            pick(&["IDENTITY_ENDPOINT", "IDENTITY_HEADER"], true),
            AuthMethod::ManagedIdentity
        );
        // A workstation with the CLI.
        assert_eq!(pick(&[], true), AuthMethod::AzureCli);
        // A VM, a scale set or an AKS node: IMDS, not "az not found".
        assert_eq!(pick(&[], false), AuthMethod::ManagedIdentity);
        // MSI_ENDPOINT (Cloud Shell, Azure ML) is no source azure_identity
        // supports: it decides nothing.
        assert_eq!(pick(&["MSI_ENDPOINT"], true), AuthMethod::AzureCli);
        assert_eq!(pick(&["MSI_ENDPOINT"], false), AuthMethod::ManagedIdentity);
        assert_eq!(
            choose(AuthMethod::AzureCli, &|_| Some("x".into()), &|_| false, &s).0,
            AuthMethod::AzureCli
        );
    }
}
