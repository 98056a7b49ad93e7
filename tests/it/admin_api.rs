//! The admin API over a real socket: every endpoint's success path and at least one bad input,
//! asserting the status code and the error body.

use relayd_tests::app::TestApp;
use relayd_tests::http::{admin_error, send};
use serde_json::{Value, json};

fn qwen() -> Value {
    json!({
        "name": "qwen-a",
        "endpoint": "http://127.0.0.1:9/v1",
        "deploymentName": "qwen3-32b",
        "apiKey": "sk-admin-test-SECRET-9876",
        "supportedModels": ["claude-sonnet-4-5-20250929", "gpt-4o"],
        "priority": 10
    })
}

#[tokio::test]
async fn account_lifecycle() {
    let app = TestApp::start().await;
    let admin = app.admin();

    let created = admin.create_account(&qwen()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("acc_"));
    assert_eq!(created["name"], "qwen-a");
    assert_eq!(created["kind"], "openai");
    assert_eq!(created["priority"], 10);
    assert_eq!(created["concurrency"], 50);
    assert_eq!(created["apiKey"], json!({"set": true, "last4": "9876"}));

    let by_id = admin.get(&format!("/accounts/{id}")).await;
    assert_eq!(by_id.status, 200);
    let by_name = admin.get("/accounts/qwen-a").await;
    assert_eq!(by_name.status, 200);
    assert_eq!(by_id.json, by_name.json);

    let list = admin.get("/accounts").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json["accounts"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains("SECRET"), "key leaked: {}", list.text);

    let patched = admin
        .patch(
            &format!("/accounts/{id}"),
            &json!({"priority": 3, "apiKey": null}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["priority"], 3);
    assert_eq!(patched.json["apiKey"], json!({"set": false}));
    assert_eq!(patched.json["deploymentName"], "qwen3-32b");

    let disabled = admin.post("/accounts/qwen-a/disable", &json!({})).await;
    assert_eq!(disabled.status, 200);
    assert_eq!(disabled.json["enabled"], false);
    let enabled = admin
        .post(&format!("/accounts/{id}/enable"), &json!({}))
        .await;
    assert_eq!(enabled.json["enabled"], true);

    let deleted = admin.delete(&format!("/accounts/{id}")).await;
    assert_eq!(deleted.status, 204);
    let gone = admin.get(&format!("/accounts/{id}")).await;
    admin_error(&gone, 404, "not_found");
    let gone = admin.delete("/accounts/qwen-a").await;
    admin_error(&gone, 404, "not_found");
}

#[tokio::test]
async fn account_create_rejects_bad_input_naming_the_field() {
    let app = TestApp::start().await;
    let admin = app.admin();

    let mut missing = qwen();
    missing.as_object_mut().unwrap().remove("deploymentName");
    let msg = admin_error(
        &admin.post("/accounts", &missing).await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("deploymentName"), "{msg}");

    let mut unknown = qwen();
    unknown["colour"] = json!("red");
    let msg = admin_error(
        &admin.post("/accounts", &unknown).await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("colour"), "{msg}");

    let mut wrong_type = qwen();
    wrong_type["priority"] = json!("high");
    let msg = admin_error(
        &admin.post("/accounts", &wrong_type).await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("priority"), "{msg}");

    let mut bad_url = qwen();
    bad_url["endpoint"] = json!("ftp://127.0.0.1/v1");
    let reply = admin.post("/accounts", &bad_url).await;
    let msg = admin_error(&reply, 400, "invalid_request");
    assert!(msg.contains("endpoint"), "{msg}");
    assert_eq!(reply.json["error"]["details"][0]["field"], "endpoint");

    admin.create_account(&qwen()).await;
    let msg = admin_error(&admin.post("/accounts", &qwen()).await, 409, "conflict");
    assert!(msg.contains("qwen-a"), "{msg}");

    let malformed = send(
        admin
            .request(reqwest::Method::POST, "/accounts")
            .header("content-type", "application/json")
            .body("{\"name\": "),
    )
    .await;
    let msg = admin_error(&malformed, 400, "invalid_request");
    assert!(msg.contains("malformed JSON"), "{msg}");

    let not_json = send(
        admin
            .request(reqwest::Method::POST, "/accounts")
            .header("content-type", "text/plain")
            .body("name=x"),
    )
    .await;
    admin_error(&not_json, 415, "unsupported_media_type");
}

#[tokio::test]
async fn oversized_body_is_413_in_admin_shape() {
    let app = TestApp::start_with(|c| c.max_body_bytes = 4096).await;
    let mut big = qwen();
    big["description"] = json!("x".repeat(10_000));
    let reply = app.admin().post("/accounts", &big).await;
    admin_error(&reply, 413, "payload_too_large");
}

#[tokio::test]
async fn account_update_errors() {
    let app = TestApp::start().await;
    let admin = app.admin();
    admin_error(
        &admin.patch("/accounts/nope", &json!({"priority": 1})).await,
        404,
        "not_found",
    );
    admin_error(
        &admin.post("/accounts/nope/enable", &json!({})).await,
        404,
        "not_found",
    );
    admin.create_account(&qwen()).await;
    let msg = admin_error(
        &admin
            .patch("/accounts/qwen-a", &json!({"priority": 101}))
            .await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("priority"), "{msg}");
    let msg = admin_error(
        &admin.patch("/accounts/qwen-a", &json!({})).await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("empty update"), "{msg}");
    let mut other = qwen();
    other["name"] = json!("qwen-b");
    admin.create_account(&other).await;
    admin_error(
        &admin
            .patch("/accounts/qwen-b", &json!({"name": "qwen-a"}))
            .await,
        409,
        "conflict",
    );
}

fn users_file() -> Value {
    serde_json::from_str(include_str!("../../examples/custom-models.json")).unwrap()
}

#[tokio::test]
async fn import_is_validated_whole_idempotent_and_dry_runnable() {
    let app = TestApp::start().await;
    let admin = app.admin();
    let file = users_file();

    let dry = admin.post("/import?dry_run=true", &file).await;
    assert_eq!(dry.status, 200, "{}", dry.text);
    assert_eq!(dry.json["dryRun"], true);
    assert_eq!(dry.json["summary"]["created"], 3);
    let list = admin.get("/accounts").await;
    assert_eq!(list.json["accounts"], json!([]), "dry run wrote something");

    let first = admin.post("/import", &file).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.json["summary"],
        json!({"created": 3, "updated": 0, "unchanged": 0, "failed": 0})
    );
    let rows = first.json["rows"].as_array().unwrap();
    assert_eq!(rows[0]["name"], "Qwen3-VL-235B");
    assert_eq!(rows[0]["result"], "created");

    let again = admin.post("/import", &file).await;
    assert_eq!(again.json["summary"]["unchanged"], 3, "{}", again.text);

    let mut changed = file.clone();
    changed[1]["priority"] = json!(5);
    let third = admin.post("/import", &changed).await;
    assert_eq!(third.json["summary"]["updated"], 1);
    assert_eq!(third.json["rows"][1]["result"], "updated");
    assert_eq!(third.json["rows"][1]["detail"], "changed: priority");

    let mut bad = file.clone();
    bad[0]["deploymentName"] = json!("changed-but-must-not-be-written");
    bad[2]["concurrency"] = json!("lots");
    let reply = admin.post("/import", &bad).await;
    admin_error(&reply, 400, "invalid_request");
    let detail = &reply.json["error"]["details"][0];
    assert_eq!(detail["row"], 2);
    assert_eq!(detail["name"], "GLM-4.6-FP8");
    assert_eq!(detail["field"], "concurrency");
    let row0 = admin.get("/accounts/Qwen3-VL-235B").await;
    assert_eq!(
        row0.json["deploymentName"],
        "qwen3-vl-235b-a22b-instruct-fp8"
    );

    let reply = admin.post("/import?dry_run=maybe", &file).await;
    admin_error(&reply, 400, "invalid_request");
    let reply = admin.post("/import", &json!({"name": "x"})).await;
    admin_error(&reply, 400, "invalid_request");
}

#[tokio::test]
async fn routing_table_lists_models_in_routing_order() {
    let app = TestApp::start().await;
    let admin = app.admin();
    assert_eq!(admin.post("/import", &users_file()).await.status, 200);
    let mut backup = qwen();
    backup["name"] = json!("backup");
    backup["priority"] = json!(90);
    admin.create_account(&backup).await;

    let table = admin.get("/models").await;
    assert_eq!(table.status, 200);
    let models = table.json["models"].as_array().unwrap();
    let route = |name: &str| {
        models
            .iter()
            .find(|m| m["model"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {models:?}"))
    };
    let gpt4o: Vec<&str> = route("gpt-4o")["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(gpt4o, ["Qwen3-32B", "backup"]);
    assert_eq!(route("gpt-4-turbo")["accounts"][0]["name"], "GLM-4.6-FP8");
    assert_eq!(route("gpt-4-turbo")["accounts"][0]["state"], "ok");

    let reply = send(admin.request(reqwest::Method::PUT, "/models")).await;
    admin_error(&reply, 405, "method_not_allowed");
}

#[tokio::test]
async fn relay_keys_lifecycle_and_errors() {
    let app = TestApp::start().await;
    let admin = app.admin();

    let created = admin
        .post(
            "/keys",
            &json!({"name": "alice", "allowedModels": ["claude-*"], "limits": {"requestsPerMinute": 60}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rk_"));
    let id = created.json["key"]["id"].as_str().unwrap().to_owned();

    let list = admin.get("/keys").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json["keys"][0]["name"], "alice");
    assert!(!list.text.contains(&secret), "secret listed");
    let one = admin.get(&format!("/keys/{id}")).await;
    assert_eq!(one.json["limits"]["requestsPerMinute"], 60);
    assert!(!one.text.contains(&secret));

    let updated = admin
        .patch(
            &format!("/keys/{id}"),
            &json!({"name": "alice2", "enabled": false}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json["name"], "alice2");
    assert_eq!(updated.json["enabled"], false);

    let revoked = admin.post(&format!("/keys/{id}/revoke"), &json!({})).await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.json["revokedAt"].is_i64());

    let msg = admin_error(
        &admin.post("/keys", &json!({"name": " "})).await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("name"), "{msg}");
    let msg = admin_error(
        &admin
            .post(
                "/keys",
                &json!({"name": "x", "limits": {"requestsPerMinute": -1}}),
            )
            .await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("limits.requestsPerMinute"), "{msg}");
    admin_error(
        &admin.get("/keys/key_0000000000000000").await,
        404,
        "not_found",
    );
    admin_error(
        &admin
            .patch("/keys/key_0000000000000000", &json!({"enabled": true}))
            .await,
        404,
        "not_found",
    );
    admin_error(&admin.delete("/keys/nope").await, 404, "not_found");
}

#[tokio::test]
async fn status_reports_store_and_counts() {
    let app = TestApp::start().await;
    let admin = app.admin();
    admin.create_account(&qwen()).await;
    admin.create_key(&json!({"name": "k"})).await;
    let status = admin.get("/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json["store"], "embedded");
    assert_eq!(status.json["accounts"]["total"], 1);
    assert_eq!(status.json["accounts"]["up"], 1);
    assert_eq!(status.json["activeKeys"], 1);
    assert_eq!(status.json["version"], env!("CARGO_PKG_VERSION"));
    let reply = send(admin.request(reqwest::Method::DELETE, "/status")).await;
    admin_error(&reply, 405, "method_not_allowed");
}

#[tokio::test]
async fn admin_routes_require_the_token() {
    let app = TestApp::start().await;
    let client = reqwest::Client::new();
    let none = send(client.get(app.url("/admin/v1/accounts"))).await;
    let msg = admin_error(&none, 401, "unauthenticated");
    assert!(msg.contains("admin token"), "{msg}");
    let wrong = send(
        client
            .get(app.url("/admin/v1/accounts"))
            .bearer_auth("adm_wrong"),
    )
    .await;
    admin_error(&wrong, 401, "unauthenticated");
    let unknown = send(
        client
            .get(app.url("/admin/v1/nothing-here"))
            .bearer_auth(&app.admin_token),
    )
    .await;
    admin_error(&unknown, 404, "not_found");
}
