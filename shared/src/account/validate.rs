//! Validation of what users write: [`AccountInput::validate`] checks every field (reporting every
//! problem, not just the first) and applies the defaults, one check per field group.

use super::{
    AccountId, AccountInput, AccountKind, AccountSecrets, AccountSettings, AnthropicMode,
    DEFAULT_API_VERSION, DEFAULT_CONCURRENCY, DEFAULT_PRIORITY, MAX_API_KEY_BYTES,
    MAX_API_VERSION_CHARS, MAX_CONCURRENCY, MAX_DEPLOYMENT_CHARS, MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS, MIN_CONTEXT_WINDOW, default_supported_models, normalise_endpoint,
    validate_endpoint, validate_models, validate_proxy,
};
use crate::error::FieldError;

impl AccountInput {
    /// Validates every field and applies defaults. Every problem is reported, not just the first.
    pub fn validate(self) -> Result<(AccountSettings, AccountSecrets), Vec<FieldError>> {
        let mut errors = FieldErrors::default();

        let name = self.name.trim().to_owned();
        errors.check("name", validate_name(&name));
        let endpoint = errors.check("endpoint", validate_endpoint(&self.endpoint));
        let deployment_name = self.deployment_name.trim().to_owned();
        errors.check("deploymentName", check_deployment_name(&deployment_name));
        let api_key = self.api_key.filter(|k| !k.is_empty());
        errors.check("apiKey", api_key.as_deref().map_or(Ok(()), check_api_key));
        let supported_models = match self.supported_models {
            None => default_supported_models(),
            Some(list) => errors
                .check("supportedModels", validate_models(list))
                .unwrap_or_default(),
        };
        let priority = errors
            .check("priority", priority(self.priority))
            .unwrap_or(DEFAULT_PRIORITY);
        let concurrency = errors
            .check("concurrency", concurrency(self.concurrency))
            .unwrap_or(DEFAULT_CONCURRENCY);
        let proxy = self.proxy.filter(|p| !p.trim().is_empty());
        if let Some(p) = &proxy {
            errors.check("proxy", validate_proxy(p));
        }
        let api_version = self
            .api_version
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        errors.check("apiVersion", check_api_version(&api_version));
        let description = self.description.filter(|d| !d.is_empty());
        errors.check(
            "description",
            description.as_deref().map_or(Ok(()), check_description),
        );
        let max_output_tokens = errors
            .check("maxOutputTokens", max_output_tokens(self.max_output_tokens))
            .flatten();
        let context_window = errors
            .check("contextWindow", context_window(self.context_window))
            .flatten();
        let anthropic_mode = self.anthropic_mode.unwrap_or_default();
        if self.kind == Some(AccountKind::Anthropic) && anthropic_mode == AnthropicMode::Translate {
            errors.check::<()>(
                "anthropicMode",
                Err("an account of kind anthropic speaks only the Messages API; it cannot be translated to".to_owned()),
            );
        }

        let Some(endpoint) = endpoint.filter(|_| errors.0.is_empty()) else {
            return Err(errors.0);
        };
        let kind = self.kind.unwrap_or_else(|| AccountKind::infer(&endpoint));
        let settings = AccountSettings {
            name,
            kind,
            endpoint: normalise_endpoint(&endpoint),
            deployment_name,
            api_version,
            supported_models,
            priority,
            concurrency,
            enabled: self.enabled.unwrap_or(true),
            description,
            max_output_tokens,
            thinking: self.thinking.unwrap_or_default(),
            use_max_completion_tokens: self.use_max_completion_tokens,
            send_reasoning_content: self.send_reasoning_content.unwrap_or(false),
            upstream_auth: self.upstream_auth,
            context_window,
            anthropic_mode,
        };
        Ok((settings, AccountSecrets { api_key, proxy }))
    }
}

/// The problems found so far, each naming its field.
#[derive(Default)]
struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// The value of a check that passed; a check that failed is recorded against `field`.
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| {
                self.0.push(FieldError {
                    row: None,
                    name: None,
                    field: Some(field.to_owned()),
                    message,
                });
            })
            .ok()
    }
}

/// Checks an account name: non-empty, at most [`MAX_NAME_CHARS`] characters, no control
/// characters, and not shaped like an account id (so "get by id or name" is never ambiguous).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if AccountId::looks_like_id(name) {
        return Err(format!(
            "{name:?} looks like an account id; choose another name"
        ));
    }
    Ok(())
}

/// `deploymentName` (already trimmed): non-empty, bounded, no control characters.
fn check_deployment_name(deployment_name: &str) -> Result<(), String> {
    if deployment_name.is_empty() {
        Err("must not be empty".to_owned())
    } else if deployment_name.chars().count() > MAX_DEPLOYMENT_CHARS {
        Err(format!("must be at most {MAX_DEPLOYMENT_CHARS} characters"))
    } else if deployment_name.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

/// A non-empty `apiKey`: bounded, no control characters.
fn check_api_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_API_KEY_BYTES {
        Err(format!("must be at most {MAX_API_KEY_BYTES} bytes"))
    } else if key.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

/// `priority`: 1–100, [`DEFAULT_PRIORITY`] when absent.
fn priority(priority: Option<i64>) -> Result<u8, String> {
    match priority {
        None => Ok(DEFAULT_PRIORITY),
        Some(p) if (1..=100).contains(&p) => Ok(u8::try_from(p).unwrap_or(DEFAULT_PRIORITY)),
        Some(p) => Err(format!("must be between 1 and 100, got {p}")),
    }
}

/// `concurrency`: 1–[`MAX_CONCURRENCY`], [`DEFAULT_CONCURRENCY`] when absent.
fn concurrency(concurrency: Option<i64>) -> Result<u32, String> {
    match concurrency {
        None => Ok(DEFAULT_CONCURRENCY),
        Some(c) if c >= 1 && c <= i64::from(MAX_CONCURRENCY) => {
            Ok(u32::try_from(c).unwrap_or(DEFAULT_CONCURRENCY))
        }
        Some(c) => Err(format!("must be between 1 and {MAX_CONCURRENCY}, got {c}")),
    }
}

/// `apiVersion` (already trimmed): non-empty, bounded, no control characters.
fn check_api_version(api_version: &str) -> Result<(), String> {
    if api_version.is_empty() {
        Err("must not be empty".to_owned())
    } else if api_version.chars().count() > MAX_API_VERSION_CHARS {
        Err(format!(
            "must be at most {MAX_API_VERSION_CHARS} characters"
        ))
    } else if api_version.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

/// A non-empty `description`: bounded. Line breaks and tabs are fair in free text; other control
/// characters only ever act on the terminal or log viewer that shows them.
fn check_description(description: &str) -> Result<(), String> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        Err(format!(
            "must be at most {MAX_DESCRIPTION_CHARS} characters"
        ))
    } else if description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        Err("must not contain control characters other than line breaks and tabs".to_owned())
    } else {
        Ok(())
    }
}

/// `maxOutputTokens`: a positive `u32` when given.
fn max_output_tokens(max_output_tokens: Option<i64>) -> Result<Option<u32>, String> {
    match max_output_tokens {
        None => Ok(None),
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(u32::try_from(n).ok()),
        Some(n) => Err(format!("must be a positive number of tokens, got {n}")),
    }
}

/// `contextWindow`: between [`MIN_CONTEXT_WINDOW`] and `u32::MAX` tokens when given.
fn context_window(context_window: Option<i64>) -> Result<Option<u32>, String> {
    match context_window {
        None => Ok(None),
        Some(n) if (i64::from(MIN_CONTEXT_WINDOW)..=i64::from(u32::MAX)).contains(&n) => {
            Ok(u32::try_from(n).ok())
        }
        Some(n) => Err(format!(
            "must be a number of tokens from {MIN_CONTEXT_WINDOW}, got {n}"
        )),
    }
}
