//! Endpoint and proxy URLs: parsing and checking them, the stored form of an endpoint, the
//! link-local address policy, and redaction of proxy passwords for display.

use super::{AccountSecrets, AccountSettings, MAX_URL_BYTES};
use crate::error::FieldError;

/// Parses an endpoint base URL: `http` or `https`, with a host, no query or fragment, at most
/// [`MAX_URL_BYTES`] long.
pub fn validate_endpoint(raw: &str) -> Result<url::Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if raw.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{raw:?} must start with http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} must be a base URL without query or fragment (relayd adds the path and api-version itself)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use apiKey".to_owned());
    }
    Ok(url)
}

/// Parses a proxy URL: `http`, `https`, `socks5` or `socks5h`, with a host, at most
/// [`MAX_URL_BYTES`] long.
pub fn validate_proxy(raw: &str) -> Result<url::Url, String> {
    if raw.trim().len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("{} is not a valid URL: {e}", redact_url(raw)))?;
    if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
        return Err(format!(
            "scheme must be http, https, socks5 or socks5h, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(url)
}

/// The endpoint as stored: the parsed URL without a trailing slash, so `…/v1` and `…/v1/` are one
/// endpoint and path joining never doubles a slash.
pub fn normalise_endpoint(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Whether `url`'s host is a literal link-local or cloud-metadata address: IPv4 169.254.0.0/16
/// (AWS, GCP and Azure instance metadata at 169.254.169.254, ECS task credentials at
/// 169.254.170.2), IPv6 link-local fe80::/10, AWS's IPv6 metadata address fd00:ec2::254, and
/// those IPv4 addresses written as IPv4-mapped or -compatible IPv6 (`[::ffff:169.254.169.254]`).
///
/// Only literal addresses can be told without resolving the name; the URL parser has already
/// normalised the other spellings of an IPv4 address (`2852039166`, `0xa9.0xfe.0xa9.0xfe`,
/// a trailing dot) to the dotted form.
pub fn is_link_local_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => {
            const AWS_METADATA_V6: std::net::Ipv6Addr =
                std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip == AWS_METADATA_V6
                || ip.to_ipv4().is_some_and(|v4| v4.is_link_local())
        }
        Some(url::Host::Domain(_)) | None => false,
    }
}

/// The refusals for an account whose `endpoint` or `proxy` is at a link-local or metadata
/// address ([`is_link_local_host`]), unless the deployment allows them (relayd's
/// `allow_link_local_endpoints`): a relay that an admin can point anywhere must not become a way
/// to read the host's cloud credentials. Only addresses being set are checked: pass the values
/// stored before (`previous`) so that an existing account can still be edited in other ways.
pub fn link_local_errors(
    settings: &AccountSettings,
    secrets: &AccountSecrets,
    previous: Option<(&AccountSettings, &AccountSecrets)>,
) -> Vec<FieldError> {
    let refuse = |field: &str, what: &str| FieldError {
        row: None,
        name: None,
        field: Some(field.to_owned()),
        message: format!(
            "{what} is a link-local or cloud-metadata address (169.254.0.0/16, fe80::/10, \
             fd00:ec2::254); relayd refuses those unless `allow_link_local_endpoints = true`"
        ),
    };
    let mut errors = Vec::new();
    let endpoint_is_new = previous.is_none_or(|(s, _)| s.endpoint != settings.endpoint);
    if endpoint_is_new
        && url::Url::parse(&settings.endpoint).is_ok_and(|url| is_link_local_host(&url))
    {
        errors.push(refuse("endpoint", "the endpoint's host"));
    }
    let proxy_is_new = previous.is_none_or(|(_, p)| p.proxy != secrets.proxy);
    if proxy_is_new
        && let Some(proxy) = &secrets.proxy
        && url::Url::parse(proxy.trim()).is_ok_and(|url| is_link_local_host(&url))
    {
        errors.push(refuse("proxy", "the proxy's host"));
    }
    errors
}

/// A URL with its password replaced by `****`, for display and logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // set_password only fails for URLs that cannot have credentials, which this one has.
                let _ = url.set_password(Some("****"));
            }
            url.to_string()
        }
        Err(_) => "[unparseable URL]".to_owned(),
    }
}
