//! Entra ID credentials, from `azure_identity` 1.x, chosen by configuration.
//!
//! `auto` picks, in order: workload identity when `AZURE_FEDERATED_TOKEN_FILE`
//! is set (AKS), a client secret when its variables are set, managed identity
//! when an identity endpoint is present (`IDENTITY_ENDPOINT` for App Service
//! and Container Apps, `MSI_ENDPOINT`), else the Azure CLI. The choice is
//! logged; the secret never is. Secrets come from the environment or a file,
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

/// Resolves `auto` against the environment.
pub fn choose(
    method: AuthMethod,
    env: &dyn Fn(&str) -> Option<String>,
    settings: &AuthSettings,
) -> AuthMethod {
    if method != AuthMethod::Auto {
        return method;
    }
    if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        AuthMethod::WorkloadIdentity
    } else if env("AZURE_CLIENT_SECRET").is_some() || settings.client_secret_file.is_some() {
        AuthMethod::ClientSecret
    } else if env("IDENTITY_ENDPOINT").is_some() || env("MSI_ENDPOINT").is_some() {
        AuthMethod::ManagedIdentity
    } else {
        AuthMethod::AzureCli
    }
}

/// Builds the credential. Returns it with the method actually used.
pub fn credential(
    settings: &AuthSettings,
) -> Result<(Arc<dyn TokenCredential>, AuthMethod), AuthError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let method = choose(settings.method, &env, settings);
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
    tracing::info!(method = method.as_str(), "authenticating to Azure");
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
    fn auto_prefers_workload_identity_then_secret_then_managed_identity_then_cli() {
        let s = AuthSettings::default();
        let pick = |vars: &[&str]| {
            let vars: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
            choose(
                AuthMethod::Auto,
                &|k| vars.iter().any(|v| v == k).then(|| "x".to_owned()),
                &s,
            )
        };
        assert_eq!(
            pick(&["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_SECRET"]),
            AuthMethod::WorkloadIdentity
        );
        assert_eq!(
            pick(&["AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT"]),
            AuthMethod::ClientSecret
        );
        assert_eq!(pick(&["IDENTITY_ENDPOINT"]), AuthMethod::ManagedIdentity);
        assert_eq!(pick(&["MSI_ENDPOINT"]), AuthMethod::ManagedIdentity);
        assert_eq!(pick(&[]), AuthMethod::AzureCli);
        assert_eq!(
            choose(AuthMethod::AzureCli, &|_| Some("x".into()), &s),
            AuthMethod::AzureCli
        );
    }
}
