//! Tests of account validation, address policy, model patterns, secrets and patches.

use super::*;

fn input() -> AccountInput {
    AccountInput {
        name: "qwen".into(),
        endpoint: "http://127.0.0.1:8000/v1/".into(),
        deployment_name: "qwen3".into(),
        ..AccountInput::default()
    }
}

#[test]
fn defaults_are_applied() {
    let (s, secrets) = input().validate().unwrap();
    assert_eq!(s.priority, 50);
    assert_eq!(s.concurrency, 50);
    assert_eq!(s.supported_models.len(), 14);
    assert_eq!(s.endpoint, "http://127.0.0.1:8000/v1");
    assert_eq!(s.kind, AccountKind::Openai);
    assert_eq!(s.api_version, "2024-10-21");
    assert!(s.enabled);
    assert_eq!(secrets, AccountSecrets::default());
}

#[test]
fn azure_host_infers_azure_kind() {
    let mut i = input();
    i.endpoint = "https://res.openai.azure.com".into();
    assert_eq!(i.validate().unwrap().0.kind, AccountKind::Azure);
}

#[test]
fn every_bad_field_is_reported() {
    let mut i = input();
    i.endpoint = "ftp://x".into();
    i.priority = Some(0);
    i.concurrency = Some(-1);
    i.supported_models = Some(vec![]);
    let errs = i.validate().unwrap_err();
    let fields: Vec<_> = errs.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        ["endpoint", "supportedModels", "priority", "concurrency"]
    );
}

#[test]
fn control_characters_are_refused_naming_the_field() {
    let mut i = input();
    i.name = "evil\u{1b}[2J".into();
    i.deployment_name = "qwen\u{7}".into();
    i.api_version = Some("2024\u{7}-10-21".into());
    i.description = Some("title\u{1b}]0;x\u{7}".into());
    let errs = i.validate().unwrap_err();
    let fields: Vec<_> = errs.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        ["name", "deploymentName", "apiVersion", "description"]
    );
    assert!(
        errs.iter()
            .all(|e| e.message.contains("control characters"))
    );
    let mut i = input();
    i.description = Some("two\nlines\tand a tab".into());
    assert!(i.validate().is_ok());
}

#[test]
fn lengths_are_bounded_naming_the_field() {
    let long = |n: usize| "a".repeat(n);
    let mut i = input();
    i.name = long(MAX_NAME_CHARS + 1);
    i.endpoint = format!("http://h/{}", long(MAX_URL_BYTES));
    i.deployment_name = long(MAX_DEPLOYMENT_CHARS + 1);
    i.api_key = Some(long(MAX_API_KEY_BYTES + 1));
    i.api_version = Some(long(MAX_API_VERSION_CHARS + 1));
    i.proxy = Some(format!("http://p/{}", long(MAX_URL_BYTES)));
    i.description = Some(long(MAX_DESCRIPTION_CHARS + 1));
    let errs = i.validate().unwrap_err();
    let fields: Vec<_> = errs.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "endpoint",
            "deploymentName",
            "apiKey",
            "proxy",
            "apiVersion",
            "description"
        ]
    );
    assert!(
        errs.iter().all(|e| e.message.contains("at most")),
        "{errs:?}"
    );

    let mut i = input();
    i.supported_models = Some((0..=MAX_MODELS).map(|n| format!("m{n}")).collect());
    let errs = i.validate().unwrap_err();
    assert_eq!(errs[0].field.as_deref(), Some("supportedModels"));
    assert!(errs[0].message.contains("at most"), "{errs:?}");
    let mut i = input();
    i.supported_models = Some(vec![long(MAX_MODEL_CHARS + 1)]);
    let errs = i.validate().unwrap_err();
    assert_eq!(errs[0].field.as_deref(), Some("supportedModels"));

    // Exactly at every limit is fine.
    let mut i = input();
    i.name = long(MAX_NAME_CHARS);
    let endpoint = "http://h/";
    i.endpoint = format!("{endpoint}{}", long(MAX_URL_BYTES - endpoint.len()));
    i.deployment_name = long(MAX_DEPLOYMENT_CHARS);
    i.api_key = Some(long(MAX_API_KEY_BYTES));
    i.api_version = Some(long(MAX_API_VERSION_CHARS));
    i.description = Some(long(MAX_DESCRIPTION_CHARS));
    i.supported_models = Some(
        (0..MAX_MODELS)
            .map(|n| format!("{n}{}", long(MAX_MODEL_CHARS - n.to_string().len())))
            .collect(),
    );
    assert!(i.validate().is_ok());
}

#[test]
fn link_local_and_metadata_hosts_are_recognised() {
    let link_local = [
        "http://169.254.169.254/v1",
        "http://169.254.170.2",
        "http://169.254.0.1:8000/v1",
        "http://169.254.169.254./v1",
        "http://2852039166/v1",
        "http://0xa9.0xfe.0xa9.0xfe/v1",
        "http://[fe80::1]:8000/v1",
        "http://[febf::1]/v1",
        "http://[fd00:ec2::254]/latest",
        "http://[::ffff:169.254.169.254]/v1",
        "socks5://[::ffff:a9fe:a9fe]:1080",
    ];
    for raw in link_local {
        assert!(is_link_local_host(&url::Url::parse(raw).unwrap()), "{raw}");
    }
    let ordinary = [
        "http://127.0.0.1:8000/v1",
        "http://198.51.100.5:8000/v1",
        "http://169.253.255.255/v1",
        "http://169.255.0.1/v1",
        "http://[fec0::1]/v1",
        "http://[fd00:ec2::253]/v1",
        "http://[::1]:8000/v1",
        "https://res.openai.azure.com",
        "http://metadata.google.internal/v1",
    ];
    for raw in ordinary {
        assert!(!is_link_local_host(&url::Url::parse(raw).unwrap()), "{raw}");
    }
}

#[test]
fn link_local_errors_name_the_field_and_spare_unchanged_values() {
    let (settings, secrets) = AccountInput {
        endpoint: "http://169.254.169.254/v1".into(),
        proxy: Some("http://[fe80::1]:3128".into()),
        ..input()
    }
    .validate()
    .unwrap();
    let errors = link_local_errors(&settings, &secrets, None);
    let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(fields, ["endpoint", "proxy"]);
    assert!(errors[0].message.contains("allow_link_local_endpoints"));
    // Stored like this already (before the rule existed): other edits stay possible.
    let mut renamed = settings.clone();
    renamed.name = "renamed".into();
    assert!(link_local_errors(&renamed, &secrets, Some((&settings, &secrets))).is_empty());
    let (ordinary, plain) = input().validate().unwrap();
    assert!(link_local_errors(&ordinary, &plain, None).is_empty());
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let err = serde_json::from_str::<AccountInput>(
        r#"{"name":"a","endpoint":"http://h","deploymentName":"d","colour":"red"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn azure_endpoint_alias_is_accepted() {
    let i: AccountInput =
        serde_json::from_str(r#"{"name":"a","azureEndpoint":"http://h/v1","deploymentName":"d"}"#)
            .unwrap();
    assert_eq!(i.endpoint, "http://h/v1");
}

#[test]
fn patterns_match() {
    assert!(model_matches("claude-*opus*", "claude-opus-4-8"));
    assert!(model_matches("claude-*opus*", "claude-3-opus-20240229"));
    assert!(!model_matches("claude-*opus*", "claude-sonnet-4-5"));
    assert!(model_matches("*", "anything"));
    assert!(model_matches("gpt-4o", "gpt-4o"));
    assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
    assert!(model_matches("gpt-*-mini", "gpt-4o-mini"));
    assert!(!model_matches("a*b*b", "ab"));
}

#[test]
fn secret_info_hides_short_keys() {
    assert_eq!(SecretInfo::describe(Some("sk-1")).last4, None);
    assert_eq!(
        SecretInfo::describe(Some("sk-abcdefgh1234"))
            .last4
            .as_deref(),
        Some("1234")
    );
}

#[test]
fn patch_null_clears_and_absent_keeps() {
    let (s, secrets) = AccountInput {
        api_key: Some("sk-secret-value".into()),
        description: Some("d".into()),
        ..input()
    }
    .validate()
    .unwrap();
    let patch: AccountPatch = serde_json::from_str(r#"{"apiKey":null,"priority":7}"#).unwrap();
    let (s2, sec2) = patch.apply(&s, &secrets).unwrap();
    assert_eq!(sec2.api_key, None);
    assert_eq!(s2.priority, 7);
    assert_eq!(s2.description.as_deref(), Some("d"));
}

#[test]
fn redact_hides_password() {
    assert_eq!(
        redact_url("socks5://u:pw@127.0.0.1:1080"),
        "socks5://u:****@127.0.0.1:1080"
    );
}
