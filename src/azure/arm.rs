//! The Azure Resource Manager client: plain reqwest + serde.
//!
//! Every call carries a bearer token (cached until shortly before it
//! expires). Throttling (429), server errors, timeouts, connection errors and
//! "another operation is in progress" conflicts are retried with exponential
//! backoff and jitter, always honouring `Retry-After`, within a per-run
//! deadline. Errors keep Azure's code and message; a 403 names the action
//! that was missing. 201/202 answers are polled through
//! `Azure-AsyncOperation` or `Location`, defensively: the writes tagsync
//! makes are synchronous today.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use super::ratelimit::{Kind, RateLimiter, RateLimits};
use crate::http::{backoff, check_url_allowed, describe, parse_retry_after, user_agent};

/// Settings of the ARM client.
#[derive(Debug, Clone)]
pub struct ArmSettings {
    pub resource_manager: String,
    pub scope: String,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    /// The whole run must finish within this.
    pub deadline: Duration,
    /// Resource Manager's throttling buckets, which the client keeps too.
    pub limits: RateLimits,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    #[error("{method} {path}: HTTP {status} {code}: {message}{hint}")]
    Api {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
        hint: String,
    },
    #[error("{method} {path}: {detail} (after {attempts} attempts)")]
    Transport {
        method: String,
        path: String,
        detail: String,
        attempts: u32,
    },
    #[error("{method} {path}: the run's deadline passed; {detail}")]
    Deadline {
        method: String,
        path: String,
        detail: String,
    },
    #[error("cannot get an Azure token: {0}")]
    Auth(String),
    #[error("{0}")]
    Invalid(String),
}

/// How adapters reach Resource Manager: one call, answered with the
/// resource's JSON (a long-running write already polled to its end). The
/// [`ArmClient`] is the real one; tests put an in-memory resource behind it.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// `GET`, `PUT` or `PATCH` of `path` (`/subscriptions/...`); `body` for
    /// the writes. `action` is the permission the call needs (named in 403s).
    async fn send(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Value, ArmError>;
}

impl dyn Transport + '_ {
    pub async fn get(
        &self,
        path: &str,
        api_version: &str,
        action: &str,
    ) -> Result<Value, ArmError> {
        self.send(Method::GET, path, api_version, None, action)
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
        action: &str,
    ) -> Result<Value, ArmError> {
        self.send(Method::PUT, path, api_version, Some(body), action)
            .await
    }

    pub async fn patch(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
        action: &str,
    ) -> Result<Value, ArmError> {
        self.send(Method::PATCH, path, api_version, Some(body), action)
            .await
    }
}

#[async_trait::async_trait]
impl Transport for ArmClient {
    async fn send(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Value, ArmError> {
        match body {
            None if method == Method::GET => self.get(path, api_version, action).await,
            body => self.call(method, path, api_version, body, action).await,
        }
    }
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// The Resource Manager client of one run.
#[derive(Clone)]
pub struct ArmClient {
    http: reqwest::Client,
    settings: Arc<ArmSettings>,
    credential: Arc<dyn TokenCredential>,
    /// The run's token, or the error getting it: one failed attempt fails
    /// every target of the run at once instead of each waiting its turn.
    token: Arc<Mutex<Option<Result<CachedToken, String>>>>,
    deadline: Instant,
    limiter: Arc<RateLimiter>,
}

impl ArmClient {
    pub fn new(
        settings: ArmSettings,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, ArmError> {
        check_url_allowed(&settings.resource_manager)
            .map_err(|e| ArmError::Invalid(format!("[azure] resource_manager: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent())
            .redirect(crate::http::no_downgrade())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ArmError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            limiter: super::ratelimit::shared(&settings.resource_manager, settings.limits),
            deadline: Instant::now() + settings.deadline,
            settings: Arc::new(settings),
            credential,
            token: Arc::new(Mutex::new(None)),
        })
    }

    async fn bearer(&self) -> Result<String, ArmError> {
        let mut cached = self.token.lock().await;
        match cached.as_ref() {
            Some(Ok(t)) if Instant::now() < t.refresh_at => return Ok(t.token.clone()),
            Some(Err(e)) => return Err(ArmError::Auth(e.clone())),
            _ => {}
        }
        let scope = self.settings.scope.as_str();
        // azure_core retries token requests on its own for minutes; the run
        // has a deadline, so a dead identity endpoint must fail in bounded time.
        let limit = self.settings.timeout.saturating_mul(2);
        let token_result =
            tokio::time::timeout(limit, self.credential.get_token(&[scope], None)).await;
        let ok = matches!(token_result, Ok(Ok(_)));
        crate::metrics::metrics()
            .arm_requests
            .with_label_values(&["token", "none", if ok { "ok" } else { "error" }])
            .inc();
        let token = match token_result {
            Ok(Ok(token)) => token,
            Ok(Err(e)) => {
                *cached = Some(Err(e.to_string()));
                return Err(ArmError::Auth(e.to_string()));
            }
            Err(_) => {
                let e = format!(
                    "no token within {}s; check that the identity endpoint or authority host is reachable",
                    limit.as_secs()
                );
                *cached = Some(Err(e.clone()));
                return Err(ArmError::Auth(e));
            }
        };
        // Refresh five minutes before expiry (or halfway for short tokens).
        let left = (token.expires_on - time::OffsetDateTime::now_utc()).unsigned_abs();
        let margin = Duration::from_secs(300).min(left / 2);
        let value = token.token.secret().to_owned();
        *cached = Some(Ok(CachedToken {
            token: value.clone(),
            refresh_at: Instant::now() + left.saturating_sub(margin),
        }));
        Ok(value)
    }

    /// GET a resource (`path` starts with `/subscriptions/...`).
    pub async fn get(
        &self,
        path: &str,
        api_version: &str,
        action: &str,
    ) -> Result<Value, ArmError> {
        let full = format!("{path}?api-version={api_version}");
        self.request(Method::GET, &full, None, action)
            .await
            .map(|(_, v)| v)
    }

    /// GET an absolute URL on the Resource Manager host (`nextLink`).
    pub async fn get_url(&self, url: &str, action: &str) -> Result<Value, ArmError> {
        let path = on_resource_manager(&self.settings.resource_manager, url)?;
        self.request(Method::GET, &path, None, action)
            .await
            .map(|(_, v)| v)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Value, ArmError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = format!("{path}{sep}api-version={api_version}");
        let (headers, value) = self.request(method.clone(), &full, body, action).await?;
        if headers.status_pending {
            return self
                .poll(&method, path, api_version, &headers, action)
                .await;
        }
        Ok(value)
    }

    /// Follows a long-running operation to its end, then returns the
    /// resource (from the final poll, or a fresh GET).
    async fn poll(
        &self,
        method: &Method,
        path: &str,
        api_version: &str,
        first: &Answer,
        action: &str,
    ) -> Result<Value, ArmError> {
        let base = &self.settings.resource_manager;
        let mut wait = first.retry_after.unwrap_or(Duration::from_secs(1));
        loop {
            // The write was accepted; whether it completes is not known
            // before the deadline. The next run's read settles it.
            self.fits_deadline(wait, method.as_str(), path, || {
                format!(
                    "the long-running operation was still running (next poll {}s away); its outcome is unknown until the next run reads the resource",
                    wait.as_secs()
                )
            })?;
            tokio::time::sleep(wait).await;
            if let Some(url) = &first.async_operation {
                let p = on_resource_manager(base, url)?;
                let (answer, status) = self.request(Method::GET, &p, None, action).await?;
                wait = answer.retry_after.unwrap_or(wait);
                match status["status"].as_str().unwrap_or_default() {
                    "Succeeded" => {
                        return self.get(path, api_version, action).await;
                    }
                    "Failed" | "Canceled" => {
                        let (code, message) = error_fields(&status);
                        return Err(ArmError::Api {
                            method: method.to_string(),
                            path: path.to_owned(),
                            status: 200,
                            code: if code.is_empty() {
                                "OperationFailed".into()
                            } else {
                                code
                            },
                            message,
                            hint: String::new(),
                        });
                    }
                    _ => continue,
                }
            } else if let Some(url) = &first.location {
                let p = on_resource_manager(base, url)?;
                let (answer, value) = self.request(Method::GET, &p, None, action).await?;
                if !answer.status_pending {
                    return if value.is_null() {
                        self.get(path, api_version, action).await
                    } else {
                        Ok(value)
                    };
                }
                wait = answer.retry_after.unwrap_or(wait);
            } else {
                return self.get(path, api_version, action).await;
            }
        }
    }

    /// Fails with `detail` when waiting `wait` from now would end past the
    /// run's deadline: no wait, attempt or poll of the client outlives it.
    fn fits_deadline(
        &self,
        wait: Duration,
        method: &str,
        path: &str,
        detail: impl FnOnce() -> String,
    ) -> Result<(), ArmError> {
        if Instant::now()
            .checked_add(wait)
            .is_none_or(|at| at >= self.deadline)
        {
            return Err(ArmError::Deadline {
                method: method.to_owned(),
                path: path.to_owned(),
                detail: detail(),
            });
        }
        Ok(())
    }

    /// One logical request with retries. Returns the answer's headers of
    /// interest and its JSON body (null when empty).
    async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<(Answer, Value), ArmError> {
        let url = format!(
            "{}{}",
            self.settings.resource_manager.trim_end_matches('/'),
            path_and_query
        );
        let shown_path = path_and_query
            .split('?')
            .next()
            .unwrap_or(path_and_query)
            .to_owned();
        let attempts = self.settings.retries + 1;
        let mut last = String::new();
        for attempt in 1..=attempts {
            self.fits_deadline(Duration::ZERO, method.as_str(), &shown_path, || {
                last.clone()
            })?;
            let kind = if method == Method::GET {
                Kind::Read
            } else {
                Kind::Write
            };
            let token = self.bearer().await?;
            // After the token, so requests that queued behind its fetch
            // do not all leave at once when it arrives.
            self.wait_for_rate_limit(kind, &method, &shown_path).await?;
            // No attempt outlives the run's deadline.
            let left = self.deadline.saturating_duration_since(Instant::now());
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(
                    self.settings
                        .timeout
                        .min(left)
                        .max(Duration::from_millis(1)),
                )
                .header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let label = match kind {
                Kind::Read => "read",
                Kind::Write => "write",
            };
            let count = |status: Option<u16>, outcome: &str| {
                crate::metrics::metrics()
                    .arm_requests
                    .with_label_values(&[label, crate::metrics::status_class(status), outcome])
                    .inc();
            };
            let (retry_after, detail) = match req.send().await {
                Err(e) => {
                    count(None, "retry");
                    (None, describe(&e))
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        crate::metrics::metrics().arm_throttled.inc();
                    }
                    let answer = Answer::from_headers(resp.headers(), status);
                    let throttled = (status == StatusCode::TOO_MANY_REQUESTS)
                        .then(|| answer.retry_after.unwrap_or(Duration::from_secs(1)));
                    self.limiter.observe(kind, resp.headers(), throttled);
                    let bytes = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            last = format!("reading the response: {}", describe(&e));
                            self.wait_before_retry(
                                attempt,
                                attempts,
                                None,
                                &method,
                                &shown_path,
                                &last,
                            )
                            .await?;
                            continue;
                        }
                    };
                    let value: Value = if bytes.is_empty() {
                        Value::Null
                    } else {
                        match serde_json::from_slice(&bytes) {
                            Ok(v) => v,
                            Err(_) if !status.is_success() => {
                                Value::String(String::from_utf8_lossy(&bytes).into_owned())
                            }
                            Err(e) => {
                                return Err(ArmError::Invalid(format!(
                                    "{method} {shown_path}: the response is not JSON ({e})"
                                )));
                            }
                        }
                    };
                    if status.is_success() {
                        count(Some(status.as_u16()), "ok");
                        return Ok((answer, value));
                    }
                    let (code, message) = error_fields(&value);
                    let again = retryable(status, &code, &message);
                    count(Some(status.as_u16()), if again { "retry" } else { "error" });
                    if again {
                        (
                            answer.retry_after,
                            format!("HTTP {} {code}: {message}", status.as_u16()),
                        )
                    } else {
                        return Err(ArmError::Api {
                            method: method.to_string(),
                            path: shown_path,
                            status: status.as_u16(),
                            hint: hint(status, action, &code, &message),
                            code,
                            message,
                        });
                    }
                }
            };
            last = detail;
            self.wait_before_retry(attempt, attempts, retry_after, &method, &shown_path, &last)
                .await?;
        }
        Err(ArmError::Transport {
            method: method.to_string(),
            path: shown_path,
            detail: last,
            attempts,
        })
    }

    /// Waits for a token of Resource Manager's bucket for `kind`, unless
    /// the wait would pass the run's deadline.
    async fn wait_for_rate_limit(
        &self,
        kind: Kind,
        method: &Method,
        path: &str,
    ) -> Result<(), ArmError> {
        let wait = self.limiter.reserve(kind);
        if wait.is_zero() {
            return Ok(());
        }
        self.fits_deadline(wait, method.as_str(), path, || {
            format!(
                "Resource Manager's request rate allows this request only in {}s; raise [azure] deadline or run fewer targets at a time",
                wait.as_secs()
            )
        })?;
        crate::metrics::metrics()
            .arm_rate_limit_wait
            .inc_by(wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn wait_before_retry(
        &self,
        attempt: u32,
        attempts: u32,
        retry_after: Option<Duration>,
        method: &Method,
        path: &str,
        last: &str,
    ) -> Result<(), ArmError> {
        if attempt >= attempts {
            return Ok(());
        }
        let wait = retry_after.unwrap_or_else(|| backoff(self.settings.retry_backoff, attempt));
        self.fits_deadline(wait, method.as_str(), path, || {
            format!(
                "the next retry ({}s away) falls after it; last error: {last}",
                wait.as_secs()
            )
        })?;
        crate::metrics::metrics().arm_retries.inc();
        tracing::warn!(%method, path, attempt, wait_ms = wait.as_millis() as u64, error = last, "Azure request failed, retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// The path and query of an absolute URL Azure handed back (an operation to
/// poll, a next page), if it is on the Resource Manager host: the same
/// scheme and host, with or without the default port
/// (`https://management.azure.com:443/...`, as Event Grid writes it). Any
/// other host is refused: the bearer token must not go there.
fn on_resource_manager(base: &str, url: &str) -> Result<String, ArmError> {
    let refuse = |why: &str| {
        ArmError::Invalid(format!(
            "refusing to follow `{}` from Azure: {why}",
            crate::http::redact(url)
        ))
    };
    let base =
        reqwest::Url::parse(base).map_err(|_| refuse("the Resource Manager URL is not a URL"))?;
    let link = reqwest::Url::parse(url).map_err(|_| refuse("it is not an absolute URL"))?;
    if link.scheme() != base.scheme()
        || !link
            .host_str()
            .zip(base.host_str())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        || link.port_or_known_default() != base.port_or_known_default()
    {
        return Err(refuse("it is not on the Resource Manager host"));
    }
    Ok(match link.query() {
        Some(q) => format!("{}?{q}", link.path()),
        None => link.path().to_owned(),
    })
}

/// What tagsync reads from an answer's headers.
#[derive(Debug, Default)]
struct Answer {
    status_pending: bool,
    retry_after: Option<Duration>,
    async_operation: Option<String>,
    location: Option<String>,
}

impl Answer {
    fn from_headers(h: &HeaderMap, status: StatusCode) -> Self {
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self {
            status_pending: status == StatusCode::CREATED || status == StatusCode::ACCEPTED,
            retry_after: h
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc())),
            async_operation: get("azure-asyncoperation"),
            location: get("location"),
        }
    }
}

/// Azure's error code and message, from `{"error": {...}}` or the flat
/// `{"code", "message"}` some older APIs send.
fn error_fields(v: &Value) -> (String, String) {
    let e = if v.get("error").is_some_and(Value::is_object) {
        &v["error"]
    } else {
        v
    };
    let code = e["code"].as_str().unwrap_or_default().to_owned();
    let mut message = e["message"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| v.as_str().map(|s| s.chars().take(300).collect()))
        .map(|m: String| crate::http::redact_text(&m))
        .unwrap_or_default();
    if let Some(target) = e["target"].as_str() {
        message.push_str(&format!(" (target {target})"));
    }
    (code, message)
}

fn retryable(status: StatusCode, code: &str, message: &str) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
        || (status == StatusCode::CONFLICT
            && (code == "StorageAccountOperationInProgress"
                || message.contains("40901")
                || message.contains("conflicting operation")))
}

/// What to do about an error, appended to Azure's own code and message.
fn hint(status: StatusCode, action: &str, code: &str, message: &str) -> String {
    match status.as_u16() {
        // A write that carries VNet rules is also authorized against each
        // subnet (FACTS 3): Azure's message names the action and the scope.
        403 if code == "LinkedAuthorizationFailed" => ". The rule set carries virtual network rules, which Azure also authorizes against each subnet: \
             grant `Microsoft.Network/virtualNetworks/subnets/joinViaServiceEndpoint/action` on the subnet named above (README, \"Least privilege\")".into(),
        400 if message.contains("resourceAccessRules") => ". A resource access rule of this account is no longer valid (its resource was probably deleted), \
             and Azure refuses every update of the account until it is fixed: remove it from networkAcls.resourceAccessRules \
             (portal, or `az storage account network-rule remove --resource-id ...`), then run again".into(),
        403 => format!(
            ". tagsync needs the permission `{action}` on this resource; assign the least-privilege custom role \
             \"tagsync operator\" (README, \"Least privilege\") at the resource's scope"
        ),
        401 => ". The token was rejected: check the identity's tenant and [azure] cloud".into(),
        404 => ". Check the target's resource_id (subscription, resource group, name)".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_urls_are_followed_only_on_the_resource_manager_host() {
        let base = "https://management.azure.com";
        for url in [
            "https://management.azure.com/subscriptions/s/operationsStatus/1?api-version=2025-02-15",
            "https://management.azure.com:443/subscriptions/s/operationsStatus/1?api-version=2025-02-15",
            "https://MANAGEMENT.azure.com/subscriptions/s/operationsStatus/1?api-version=2025-02-15",
        ] {
            assert_eq!(
                on_resource_manager(base, url).expect(url),
                "/subscriptions/s/operationsStatus/1?api-version=2025-02-15"
            );
        }
        for url in [
            "https://evil.example.com/subscriptions/s?x=1",
            "http://management.azure.com/subscriptions/s",
            "https://management.azure.com:8443/subscriptions/s",
            "/subscriptions/s/operationsStatus/1",
        ] {
            assert!(on_resource_manager(base, url).is_err(), "{url}");
        }
        assert_eq!(
            on_resource_manager(
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/operations/2"
            )
            .expect("loopback"),
            "/operations/2"
        );
    }

    #[test]
    fn both_error_shapes_are_read() {
        let nested = serde_json::json!({"error": {"code": "BadRequest", "message": "The provided ip address mask does not follow the CIDR notation.", "target": "ipMask"}});
        assert_eq!(
            error_fields(&nested),
            (
                "BadRequest".into(),
                "The provided ip address mask does not follow the CIDR notation. (target ipMask)"
                    .into()
            )
        );
        let flat = serde_json::json!({"code": "Conflict", "message": "busy"});
        assert_eq!(error_fields(&flat), ("Conflict".into(), "busy".into()));
    }

    #[test]
    fn conflicts_in_progress_are_retried_other_client_errors_not() {
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS, "", ""));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE, "", ""));
        assert!(retryable(
            StatusCode::CONFLICT,
            "StorageAccountOperationInProgress",
            ""
        ));
        assert!(retryable(
            StatusCode::CONFLICT,
            "Conflict",
            "SubCode=40901. Another conflicting operation is in progress."
        ));
        assert!(!retryable(StatusCode::CONFLICT, "Conflict", "exists"));
        assert!(!retryable(
            StatusCode::BAD_REQUEST,
            "InvalidValuesForRequestParameters",
            ""
        ));
        assert!(!retryable(StatusCode::FORBIDDEN, "AuthorizationFailed", ""));
    }
}
