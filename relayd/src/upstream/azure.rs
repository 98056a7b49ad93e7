//! Azure OpenAI's URL shapes. The classic shape names the deployment in the path and needs an
//! `api-version` query (`{base}/openai/deployments/{deployment}/chat/completions?api-version=…`);
//! the v1 shape (an endpoint ending in `/openai/v1`) takes the deployment as `model`, like any
//! OpenAI server. The requests themselves are [`super::openai`]'s; only the URLs and the
//! `api-key` header (see [`super::auth_header`]) differ.

use shared::account::AccountSettings;

/// The chat-completions URL of an Azure account.
pub(super) fn chat_url(s: &AccountSettings) -> String {
    if is_v1(&s.endpoint) {
        return super::openai::chat_url(&s.endpoint);
    }
    format!(
        "{}/openai/deployments/{}/chat/completions?api-version={}",
        azure_base(&s.endpoint),
        s.deployment_name,
        s.api_version
    )
}

/// The model list of an Azure account.
pub(super) fn models_url(s: &AccountSettings) -> String {
    format!(
        "{}/openai/models?api-version={}",
        azure_base(&s.endpoint),
        s.api_version
    )
}

/// Whether the endpoint is of the v1 shape, which needs no deployment path nor api-version.
fn is_v1(endpoint: &str) -> bool {
    endpoint.ends_with("/openai/v1")
}

/// An Azure endpoint without a trailing `/openai` that users sometimes paste.
fn azure_base(endpoint: &str) -> &str {
    endpoint.strip_suffix("/openai").unwrap_or(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pasted_openai_suffix_is_dropped() {
        assert_eq!(
            azure_base("http://127.0.0.1:9/openai"),
            "http://127.0.0.1:9"
        );
        assert_eq!(azure_base("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }

    #[test]
    fn the_v1_shape_is_recognised() {
        assert!(is_v1("http://127.0.0.1:9/openai/v1"));
        assert!(!is_v1("http://127.0.0.1:9/openai"));
    }
}
