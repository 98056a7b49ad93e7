//! Small HTTP helpers for tests: an admin client that returns status + JSON, so tests assert on
//! both.

use serde_json::Value;

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Parsed JSON body (`Value::Null` when the body is empty or not JSON).
    pub json: Value,
    /// Raw body text.
    pub text: String,
}

/// Sends a request and collects the reply.
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        json,
        text,
    }
}

/// Admin API client bound to one relayd and token.
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Admin {
    /// A client for `base` (e.g. `http://127.0.0.1:1234`) with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// A request to `/admin/v1{path}` carrying the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        send(self.request(reqwest::Method::PATCH, path).json(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Reply {
        send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Creates an account and returns its JSON, panicking unless the answer is 201.
    pub async fn create_account(&self, body: &Value) -> Value {
        let reply = self.post("/accounts", body).await;
        assert_eq!(reply.status, 201, "create account: {}", reply.text);
        reply.json
    }

    /// Creates a relay key and returns its secret.
    pub async fn create_key(&self, body: &Value) -> String {
        let reply = self.post("/keys", body).await;
        assert_eq!(reply.status, 201, "create key: {}", reply.text);
        reply.json["secret"].as_str().expect("secret").to_owned()
    }
}

/// Asserts an admin error body with `code`, returning its message.
pub fn admin_error(reply: &Reply, status: u16, code: &str) -> String {
    assert_eq!(reply.status, status, "status of {}", reply.text);
    assert_eq!(reply.json["error"]["code"], code, "code in {}", reply.text);
    let message = reply.json["error"]["message"]
        .as_str()
        .expect("error.message is a string");
    assert!(!message.is_empty());
    message.to_owned()
}
