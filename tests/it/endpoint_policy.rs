//! Link-local and cloud-metadata addresses as account endpoints or proxies: refused by default
//! on every way an address gets in (create, update, import, test-endpoint), accepted with
//! `allow_link_local_endpoints = true`. No test sends anything there: the refusals come before
//! any traffic, and creating an account contacts nobody.

use relayd_tests::app::TestApp;
use relayd_tests::http::admin_error;
use serde_json::{Value, json};

const METADATA: &str = "http://169.254.169.254/v1";

fn account(name: &str, endpoint: &str) -> Value {
    json!({"name": name, "endpoint": endpoint, "deploymentName": "d"})
}

#[track_caller]
fn assert_refused(reply: &relayd_tests::http::Reply, field: &str) {
    let message = admin_error(reply, 400, "invalid_request");
    assert!(message.contains("link-local"), "{message}");
    assert_eq!(
        reply.json["error"]["details"][0]["field"], field,
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn link_local_endpoints_and_proxies_are_refused_by_default() {
    let app = TestApp::start().await;
    let admin = app.admin();

    assert_refused(
        &admin.post("/accounts", &account("meta", METADATA)).await,
        "endpoint",
    );
    let ipv6 = admin
        .post("/accounts", &account("v6", "http://[fd00:ec2::254]/v1"))
        .await;
    assert_refused(&ipv6, "endpoint");
    let mut via_proxy = account("proxied", "http://127.0.0.1:9/v1");
    via_proxy["proxy"] = json!("http://169.254.169.254:3128");
    assert_refused(&admin.post("/accounts", &via_proxy).await, "proxy");

    admin
        .create_account(&account("ordinary", "http://127.0.0.1:9/v1"))
        .await;
    let patched = admin
        .patch(
            "/accounts/ordinary",
            &json!({"endpoint": "http://[fe80::1]:8000/v1"}),
        )
        .await;
    assert_refused(&patched, "endpoint");

    let import = admin
        .post(
            "/import",
            &json!([
                account("fine", "http://127.0.0.1:9/v1"),
                account("meta", METADATA)
            ]),
        )
        .await;
    assert_refused(&import, "endpoint");
    assert_eq!(import.json["error"]["details"][0]["row"], 1);
    assert_eq!(import.json["error"]["details"][0]["name"], "meta");

    let tested = admin
        .post(
            "/test-endpoint",
            &json!({"endpoint": METADATA, "deploymentName": "d"}),
        )
        .await;
    assert_refused(&tested, "endpoint");

    // Nothing of the refused requests was saved; the ordinary account is unchanged.
    let names: Vec<String> = app
        .state
        .accounts
        .snapshot()
        .accounts
        .iter()
        .map(|a| a.settings.name.clone())
        .collect();
    assert_eq!(names, ["ordinary"]);
    assert_eq!(
        admin.get("/accounts/ordinary").await.json["endpoint"],
        "http://127.0.0.1:9/v1"
    );
}

#[tokio::test]
async fn the_config_switch_allows_them() {
    let app = TestApp::start_with(|c| c.allow_link_local_endpoints = true).await;
    let created = app.admin().create_account(&account("meta", METADATA)).await;
    assert_eq!(created["endpoint"], METADATA);
}
