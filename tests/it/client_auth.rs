//! Relay-key authentication on the client routes: every accepted header form passes, every
//! invalid form is a 401 in the protocol of the route called; open routes need no key.

use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use serde_json::json;

async fn app_with_account() -> TestApp {
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({
            "name": "a", "endpoint": "http://127.0.0.1:9/v1", "deploymentName": "d",
            "supportedModels": ["claude-sonnet-4-5-20250929", "gpt-4o", "claude-*haiku*"]
        }))
        .await;
    app
}

fn assert_anthropic_401(reply: &Reply) {
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(reply.json["type"], "error", "{}", reply.text);
    assert_eq!(
        reply.json["error"]["type"], "authentication_error",
        "{}",
        reply.text
    );
    assert!(reply.json["error"]["message"].is_string());
}

fn assert_openai_401(reply: &Reply) {
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(
        reply.json["error"]["code"], "invalid_api_key",
        "{}",
        reply.text
    );
    assert!(reply.json["error"]["message"].is_string());
    assert!(reply.json.get("type").is_none());
}

#[tokio::test]
async fn valid_keys_pass_in_every_header_form_and_prefix() {
    let app = app_with_account().await;
    let secret = app.admin().create_key(&json!({"name": "dev"})).await;
    let client = reqwest::Client::new();

    let bearer = send(client.get(app.url("/v1/models")).bearer_auth(&secret)).await;
    assert_eq!(bearer.status, 200, "{}", bearer.text);
    assert_eq!(bearer.json["object"], "list");
    let ids: Vec<&str> = bearer.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude-sonnet-4-5-20250929", "gpt-4o"]);

    let x_api_key = send(
        client
            .get(app.url("/v1/models"))
            .header("x-api-key", &secret)
            .header("anthropic-version", "2023-06-01"),
    )
    .await;
    assert_eq!(x_api_key.status, 200);
    assert_eq!(x_api_key.json["data"][0]["type"], "model");
    assert_eq!(x_api_key.json["has_more"], false);

    let azure_style = send(
        client
            .get(app.url("/openai/v1/models"))
            .header("api-key", &secret),
    )
    .await;
    assert_eq!(azure_style.status, 200);

    for prefix in ["/api", "/claude", "/openai"] {
        let reply = send(
            client
                .get(app.url(&format!("{prefix}/v1/models?beta=true")))
                .bearer_auth(&secret),
        )
        .await;
        assert_eq!(reply.status, 200, "{prefix}: {}", reply.text);
    }
}

#[tokio::test]
async fn invalid_keys_get_401_in_the_callers_shape() {
    let app = app_with_account().await;
    let admin = app.admin();
    let good = admin.create_key(&json!({"name": "good"})).await;
    let revoked = admin.post("/keys", &json!({"name": "revoked"})).await;
    let revoked_secret = revoked.json["secret"].as_str().unwrap().to_owned();
    let revoked_id = revoked.json["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        admin
            .post(&format!("/keys/{revoked_id}/revoke"), &json!({}))
            .await
            .status,
        200
    );
    let disabled = admin
        .create_key(&json!({"name": "disabled", "enabled": false}))
        .await;
    let expired = admin
        .create_key(&json!({"name": "expired", "expiresAt": 1_000}))
        .await;
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });

    let client = reqwest::Client::new();
    let bad_keys = [
        revoked_secret.as_str(),
        disabled.as_str(),
        expired.as_str(),
        tampered.as_str(),
        "sk-ant-api03-not-ours",
        "rk_0123456789abcdef_nosuchkey",
    ];
    for bad in bad_keys {
        let anthropic = send(
            client
                .get(app.url("/v1/models"))
                .header("x-api-key", bad)
                .header("anthropic-version", "2023-06-01"),
        )
        .await;
        assert_anthropic_401(&anthropic);
        let openai = send(client.get(app.url("/openai/v1/models")).bearer_auth(bad)).await;
        assert_openai_401(&openai);
        let azure = send(client.get(app.url("/v1/models")).header("api-key", bad)).await;
        assert_openai_401(&azure);
    }
    let revoked_msg = send(
        client
            .get(app.url("/v1/models"))
            .bearer_auth(&revoked_secret),
    )
    .await;
    assert!(
        revoked_msg.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    let missing = send(
        client
            .get(app.url("/v1/models"))
            .header("anthropic-version", "2023-06-01"),
    )
    .await;
    assert_anthropic_401(&missing);
    let missing = send(client.get(app.url("/v1/models"))).await;
    assert_openai_401(&missing);
    let basic = send(
        client
            .get(app.url("/v1/models"))
            .header("authorization", format!("Basic {good}")),
    )
    .await;
    assert_openai_401(&basic);
    let good_reply = send(client.get(app.url("/v1/models")).bearer_auth(&good)).await;
    assert_eq!(good_reply.status, 200);
}

#[tokio::test]
async fn model_list_respects_the_keys_allowed_models() {
    let app = app_with_account().await;
    let secret = app
        .admin()
        .create_key(&json!({"name": "gpt-only", "allowedModels": ["gpt-*"]}))
        .await;
    let reply = send(
        reqwest::Client::new()
            .get(app.url("/v1/models"))
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(reply.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(reply.json["data"][0]["id"], "gpt-4o");
}

#[tokio::test]
async fn open_routes_need_no_key() {
    let app = TestApp::start().await;
    let client = reqwest::Client::new();
    let head = client.head(app.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(send(client.get(app.url("/healthz"))).await.status, 200);
    assert_eq!(send(client.get(app.url("/readyz"))).await.status, 200);
    let unknown = send(client.get(app.url("/v1/nothing"))).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn a_non_bearer_authorization_does_not_hide_a_valid_api_key() {
    let app = app_with_account().await;
    let secret = app.admin().create_key(&json!({"name": "dev"})).await;
    let client = reqwest::Client::new();
    // A proxy or client library may add its own `Authorization` (Basic, Digest…) next to the
    // relay key in `x-api-key` or `api-key`: only a Bearer token is ours to check.
    for scheme in ["Basic abc", "Digest username=\"u\"", "Bearer", "nonsense"] {
        let anthropic = send(
            client
                .get(app.url("/v1/models"))
                .header("authorization", scheme)
                .header("x-api-key", &secret)
                .header("anthropic-version", "2023-06-01"),
        )
        .await;
        assert_eq!(anthropic.status, 200, "{scheme}: {}", anthropic.text);
        let azure = send(
            client
                .get(app.url("/openai/v1/models"))
                .header("authorization", scheme)
                .header("api-key", &secret),
        )
        .await;
        assert_eq!(azure.status, 200, "{scheme}: {}", azure.text);
    }
    // A Bearer token is still the credential when it is there: a wrong one is not rescued by a
    // right `x-api-key`.
    let wrong_bearer = send(
        client
            .get(app.url("/v1/models"))
            .bearer_auth("rk_0123456789abcdef_nosuchkey")
            .header("x-api-key", &secret)
            .header("anthropic-version", "2023-06-01"),
    )
    .await;
    assert_anthropic_401(&wrong_bearer);
}
