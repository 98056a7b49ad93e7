//! What an import row changes in an account, in the import file's vocabulary (the `detail` of an
//! `updated` row).

use shared::account::{AccountSecrets, AccountSettings};

use super::LiveAccount;

/// Names of the fields a row would change, in the import file's vocabulary.
pub(super) fn changed_fields(
    current: &LiveAccount,
    settings: &AccountSettings,
    secrets: &AccountSecrets,
) -> Vec<&'static str> {
    let old = &current.settings;
    let mut changed = Vec::new();
    let mut check = |differs: bool, name: &'static str| {
        if differs {
            changed.push(name);
        }
    };
    check(old.kind != settings.kind, "kind");
    check(old.endpoint != settings.endpoint, "endpoint");
    check(
        old.deployment_name != settings.deployment_name,
        "deploymentName",
    );
    check(old.api_version != settings.api_version, "apiVersion");
    check(
        old.supported_models != settings.supported_models,
        "supportedModels",
    );
    check(old.priority != settings.priority, "priority");
    check(old.concurrency != settings.concurrency, "concurrency");
    check(old.enabled != settings.enabled, "enabled");
    check(old.description != settings.description, "description");
    check(
        old.max_output_tokens != settings.max_output_tokens,
        "maxOutputTokens",
    );
    check(old.thinking != settings.thinking, "thinking");
    check(
        old.use_max_completion_tokens != settings.use_max_completion_tokens,
        "useMaxCompletionTokens",
    );
    check(
        old.send_reasoning_content != settings.send_reasoning_content,
        "sendReasoningContent",
    );
    check(old.upstream_auth != settings.upstream_auth, "upstreamAuth");
    check(
        old.context_window != settings.context_window,
        "contextWindow",
    );
    check(
        old.anthropic_mode != settings.anthropic_mode,
        "anthropicMode",
    );
    check(current.secrets.api_key != secrets.api_key, "apiKey");
    check(current.secrets.proxy != secrets.proxy, "proxy");
    changed
}
