//! A typed, blocking client for relayd's admin API (`/admin/v1/...`), built on the `shared` DTOs
//! so the CLI and the daemon agree on the wire format by construction.
//!
//! Blocking on purpose: relayctl does one request at a time, and an async runtime would only add
//! start-up cost and dependencies.

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::account::{Account, AccountInput, AccountPatch};
use shared::admin::{
    AccountList, CooldownReset, KeyList, RoutingTable, Snapshot, Status, TestEndpointReport,
    TestEndpointRequest,
};
use shared::error::{AdminErrorBody, FieldError};
use shared::import::ImportReport;
use shared::key::{CreateKeyRequest, CreatedKey, RelayKey, UpdateKeyRequest};
use shared::usage::UsageReport;

/// What can go wrong talking to relayd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not a usable base URL.
    #[error("invalid server URL {url:?}: {reason}")]
    BadServerUrl {
        /// What was given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Nothing answered (connection refused, DNS failure, timeout before connecting).
    // The cause is folded into the message rather than chained, so the one-line error
    // does not repeat reqwest's nested wording.
    #[error("cannot reach relayd at {url}: {cause} (is it running?)")]
    Unreachable {
        /// The server base URL.
        url: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        cause: String,
    },
    /// The request failed after connecting (reset, timeout, unreadable body).
    #[error("request to relayd at {url} failed: {cause}")]
    Transport {
        /// The server base URL.
        url: String,
        /// The innermost cause.
        cause: String,
    },
    /// relayd answered with an admin error body.
    #[error("{}", api_error_text(*.status, .code, .message, .details))]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Machine-readable code, e.g. `not_found`.
        code: String,
        /// relayd's message.
        message: String,
        /// Field-level problems (batch import validation).
        details: Vec<FieldError>,
    },
    /// relayd answered something that is not the expected JSON.
    #[error("unexpected answer from relayd (HTTP {status}): {detail}")]
    Unexpected {
        /// HTTP status.
        status: StatusCode,
        /// What could not be parsed, with a snippet of the body.
        detail: String,
    },
}

fn api_error_text(status: StatusCode, code: &str, message: &str, details: &[FieldError]) -> String {
    let mut text = message.to_owned();
    for detail in details {
        text.push_str("; ");
        text.push_str(&detail.to_string());
    }
    text.push_str(&format!(" (HTTP {}, {code})", status.as_u16()));
    text
}

/// The admin API of one relayd, with one admin token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: Url,
    token: String,
    http: Client,
}

impl AdminClient {
    /// A client for `server` (e.g. `http://127.0.0.1:3000`) using `token`.
    pub fn new(server: &str, token: &str) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadServerUrl {
            url: server.to_owned(),
            reason,
        };
        let base = Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(
                "expected http://HOST:PORT or https://HOST:PORT".to_owned()
            ));
        }
        let http = Client::builder()
            .user_agent(concat!("relayctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(root_cause(&e)))?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http,
        })
    }

    /// The server's base URL as given (without a trailing slash).
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `GET /admin/v1/accounts`.
    pub fn list_accounts(&self) -> Result<AccountList, ClientError> {
        self.call(Method::GET, &["accounts"], None::<&()>)
    }

    /// `GET /admin/v1/accounts/{idOrName}`.
    pub fn get_account(&self, id_or_name: &str) -> Result<Account, ClientError> {
        self.call(Method::GET, &["accounts", id_or_name], None::<&()>)
    }

    /// `POST /admin/v1/accounts`.
    pub fn create_account(&self, input: &AccountInput) -> Result<Account, ClientError> {
        self.call(Method::POST, &["accounts"], Some(input))
    }

    /// `PATCH /admin/v1/accounts/{idOrName}`.
    pub fn update_account(
        &self,
        id_or_name: &str,
        patch: &AccountPatch,
    ) -> Result<Account, ClientError> {
        self.call(Method::PATCH, &["accounts", id_or_name], Some(patch))
    }

    /// `POST /admin/v1/accounts/{idOrName}/enable|disable`.
    pub fn set_account_enabled(
        &self,
        id_or_name: &str,
        enabled: bool,
    ) -> Result<Account, ClientError> {
        let action = if enabled { "enable" } else { "disable" };
        self.call(Method::POST, &["accounts", id_or_name, action], None::<&()>)
    }

    /// `POST /admin/v1/accounts/{idOrName}/reset`: ends the account's cooldown.
    pub fn reset_account(&self, id_or_name: &str) -> Result<CooldownReset, ClientError> {
        self.call(
            Method::POST,
            &["accounts", id_or_name, "reset"],
            None::<&()>,
        )
    }

    /// `DELETE /admin/v1/accounts/{idOrName}`.
    pub fn delete_account(&self, id_or_name: &str) -> Result<(), ClientError> {
        let request = self.request(Method::DELETE, &["accounts", id_or_name]);
        let response = self.send(request)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(error_from(response))
        }
    }

    /// `POST /admin/v1/import[?dry_run=true]` with the file's bytes as the body.
    pub fn import(&self, file: Vec<u8>, dry_run: bool) -> Result<ImportReport, ClientError> {
        let mut request = self
            .request(Method::POST, &["import"])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(file);
        if dry_run {
            request = request.query(&[("dry_run", "true")]);
        }
        parse(self.send(request)?)
    }

    /// `GET /admin/v1/models`.
    pub fn routing_table(&self) -> Result<RoutingTable, ClientError> {
        self.call(Method::GET, &["models"], None::<&()>)
    }

    /// `GET /admin/v1/keys`.
    pub fn list_keys(&self) -> Result<KeyList, ClientError> {
        self.call(Method::GET, &["keys"], None::<&()>)
    }

    /// `GET /admin/v1/keys/{id}`.
    pub fn get_key(&self, id: &str) -> Result<RelayKey, ClientError> {
        self.call(Method::GET, &["keys", id], None::<&()>)
    }

    /// `POST /admin/v1/keys`.
    pub fn create_key(&self, request: &CreateKeyRequest) -> Result<CreatedKey, ClientError> {
        self.call(Method::POST, &["keys"], Some(request))
    }

    /// `PATCH /admin/v1/keys/{id}`.
    pub fn update_key(
        &self,
        id: &str,
        request: &UpdateKeyRequest,
    ) -> Result<RelayKey, ClientError> {
        self.call(Method::PATCH, &["keys", id], Some(request))
    }

    /// `POST /admin/v1/keys/{id}/revoke`.
    pub fn revoke_key(&self, id: &str) -> Result<RelayKey, ClientError> {
        self.call(Method::POST, &["keys", id, "revoke"], None::<&()>)
    }

    /// `GET /admin/v1/status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, &["status"], None::<&()>)
    }

    /// `GET /admin/v1/snapshot`, given up after `timeout`: a live view must not hang on a
    /// server that stopped answering.
    pub fn snapshot(&self, timeout: std::time::Duration) -> Result<Snapshot, ClientError> {
        let request = self.request(Method::GET, &["snapshot"]).timeout(timeout);
        parse(self.send(request)?)
    }

    /// `GET /admin/v1/usage?…` with the given query parameters (`since`, `until`, `key`,
    /// `account`, `model`, `group_by`).
    pub fn usage(&self, params: &[(&str, &str)]) -> Result<UsageReport, ClientError> {
        let request = self.request(Method::GET, &["usage"]).query(params);
        parse(self.send(request)?)
    }

    /// `POST /admin/v1/accounts/{idOrName}/probe`: probes the account's upstream now. A probe
    /// bounds each of its requests; the whole is given two minutes.
    pub fn probe_account(&self, id_or_name: &str) -> Result<Account, ClientError> {
        let builder = self
            .request(Method::POST, &["accounts", id_or_name, "probe"])
            .timeout(std::time::Duration::from_secs(120));
        parse(self.send(builder)?)
    }

    /// `POST /admin/v1/test-endpoint`. relayd runs the checks one after another, each bounded by
    /// its own timeout, so the request may take minutes; it is bounded by their sum plus a margin.
    pub fn test_endpoint(
        &self,
        request: &TestEndpointRequest,
    ) -> Result<TestEndpointReport, ClientError> {
        let chat = request.timeout_secs.unwrap_or(60);
        let reach = request.reachability_timeout_secs.unwrap_or(10);
        let limit = std::time::Duration::from_secs(reach + 3 * chat + 30);
        let builder = self
            .request(Method::POST, &["test-endpoint"])
            .json(request)
            .timeout(limit);
        parse(self.send(builder)?)
    }

    fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self.request(method, segments);
        if let Some(body) = body {
            request = request.json(body);
        }
        parse(self.send(request)?)
    }

    /// A request to `/admin/v1/{segments…}`; segments are percent-encoded, so account names
    /// with spaces or slashes address the right record.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `new` rejected cannot-be-a-base URLs, so this branch is always taken.
            path.pop_if_empty().extend(["admin", "v1"]).extend(segments);
        }
        self.http.request(method, url).bearer_auth(&self.token)
    }

    fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        request.send().map_err(|e| {
            let cause = root_cause(&e);
            if e.is_connect() {
                ClientError::Unreachable {
                    url: self.server(),
                    cause,
                }
            } else {
                ClientError::Transport {
                    url: self.server(),
                    cause,
                }
            }
        })
    }
}

/// A success body parsed as `T`, or the admin error body turned into [`ClientError::Api`].
fn parse<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    if !response.status().is_success() {
        return Err(error_from(response));
    }
    let status = response.status();
    let bytes = response.bytes().map_err(|e| ClientError::Unexpected {
        status,
        detail: root_cause(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
        status,
        detail: format!("{e} in {}", snippet(&bytes)),
    })
}

fn error_from(response: Response) -> ClientError {
    let status = response.status();
    let bytes = response.bytes().unwrap_or_default();
    match serde_json::from_slice::<AdminErrorBody>(&bytes) {
        Ok(body) => ClientError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
            details: body.error.details,
        },
        Err(_) => ClientError::Unexpected {
            status,
            detail: snippet(&bytes),
        },
    }
}

/// The first 200 characters of a body, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

/// The innermost error's message: for reqwest that is the OS-level reason ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
