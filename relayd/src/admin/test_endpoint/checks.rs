//! The chat checks that need no stream: a tiny chat, and a call forcing a function that must
//! come back as a tool call.

use bytes::Bytes;
use serde_json::{Value, json};

use super::checker::{Checker, Failure, Stage};
use super::hints::{snippet, tool_parser_hint, truncate};

/// The function the tool-call check forces.
const TOOL_NAME: &str = "get_weather";

impl Checker<'_> {
    /// A tiny non-streaming chat.
    pub(super) async fn chat(&self) -> Result<String, Failure> {
        let body = json!({
            "model": self.account.settings.deployment_name,
            "messages": [{"role": "user", "content": "Reply with the single word: pong"}],
            "max_tokens": 16,
            "temperature": 0,
            "stream": false,
        });
        let answer = self.post_json(Stage::Chat, &body).await?;
        let choice = answer
            .get("choices")
            .and_then(|c| c.get(0))
            .filter(|c| c.get("message").is_some())
            .ok_or_else(|| {
                Failure::new(
                    format!(
                        "the answer has no choices[0].message: {}",
                        self.scrub(&snippet(answer.to_string().as_bytes()))
                    ),
                    Some("the server is not OpenAI-compatible at this URL".to_owned()),
                )
            })?;
        let message = &choice["message"];
        let content = message["content"].as_str().unwrap_or_default().trim();
        let finish = choice["finish_reason"].as_str().unwrap_or("none");
        let tokens = answer["usage"]["completion_tokens"]
            .as_u64()
            .map(|n| format!(", {n} tokens"))
            .unwrap_or_default();
        let said = if content.is_empty() {
            if message.get("reasoning_content").is_some() || message.get("reasoning").is_some() {
                "answered with reasoning only".to_owned()
            } else {
                "answered with empty content".to_owned()
            }
        } else {
            format!("answered {:?}", truncate(content, 60))
        };
        Ok(format!("{said} (finish_reason {finish}{tokens})"))
    }

    /// A chat forcing the `get_weather` function: it must come back as a tool call.
    pub(super) async fn tool_call(&self) -> Result<String, Failure> {
        let body = json!({
            "model": self.account.settings.deployment_name,
            "messages": [{"role": "user", "content": "What is the weather in Paris right now? Use the get_weather tool."}],
            "tools": [{
                "type": "function",
                "function": {
                    "name": TOOL_NAME,
                    "description": "Get the current weather in a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "description": "City name"}},
                        "required": ["city"],
                    },
                },
            }],
            "tool_choice": {"type": "function", "function": {"name": TOOL_NAME}},
            "max_tokens": 128,
            "temperature": 0,
            "stream": false,
        });
        let answer = self.post_json(Stage::Tool, &body).await?;
        let message = &answer["choices"][0]["message"];
        let Some(call) = message["tool_calls"].as_array().and_then(|c| c.first()) else {
            let content = message["content"].as_str().unwrap_or_default().trim();
            let detail = if content.is_empty() {
                "no tool_calls in the answer".to_owned()
            } else {
                format!(
                    "no tool_calls; the model answered with text: {:?}",
                    self.scrub(&truncate(content, 80))
                )
            };
            return Err(Failure::new(detail, Some(tool_parser_hint())));
        };
        let name = call["function"]["name"].as_str().unwrap_or_default();
        let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
        match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(_)) => Ok(format!("{name}({})", self.scrub(&truncate(arguments, 80)))),
            _ => Err(Failure::new(
                format!(
                    "{name} came back, but its arguments are not a JSON object: {:?}",
                    self.scrub(&truncate(arguments, 80))
                ),
                Some(format!(
                    "the tool-call parser does not fit the model: {}",
                    tool_parser_hint()
                )),
            )),
        }
    }

    /// POSTs a non-streaming chat and parses the JSON answer.
    async fn post_json(&self, stage: Stage, body: &Value) -> Result<Value, Failure> {
        let response = self
            .upstreams
            .chat(self.account, Bytes::from(body.to_string()))
            .await
            .map_err(|e| self.failure(stage, &e))?;
        let bytes = response.bytes().await.map_err(|e| {
            Failure::new(
                format!("the answer broke off: {}", self.scrub(&e.to_string())),
                Some("see the server's log".to_owned()),
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|_| {
            Failure::new(
                format!("HTTP 200 but not JSON: {}", self.scrub(&snippet(&bytes))),
                Some(self.v1_hint().unwrap_or_else(|| {
                    "the endpoint should be an OpenAI-compatible API base URL".to_owned()
                })),
            )
        })
    }
}
