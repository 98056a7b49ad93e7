"""Drives relayd with the official `anthropic` SDK and prints a JSON summary on stdout.

Usage: anthropic_client.py create|stream|tools|tools_forced|stream_tools|thinking|count_tokens|models|error
Env: RELAY_BASE_URL (http://127.0.0.1:PORT), RELAY_KEY, RELAY_MODEL,
     RELAY_MAX_TOKENS (create, stream, tools; default 256), RELAY_TIMEOUT (seconds, default 30),
     RELAY_AUTH (api_key: the `api_key=` argument; auth_token: the `auth_token=` argument).
"""

import json
import os
import sys

import anthropic


def client():
    base_url = os.environ["RELAY_BASE_URL"]
    key = os.environ["RELAY_KEY"]
    if os.environ.get("RELAY_AUTH", "api_key") == "auth_token":
        return anthropic.Anthropic(base_url=base_url, auth_token=key, max_retries=0, timeout=TIMEOUT)
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=TIMEOUT)


MODEL = os.environ["RELAY_MODEL"]
# Small models on busy machines: callers may ask for shorter answers and wait longer.
MAX_TOKENS = int(os.environ.get("RELAY_MAX_TOKENS", "256"))
TIMEOUT = float(os.environ.get("RELAY_TIMEOUT", "30"))
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


def create():
    message = client().messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello."}],
    )
    return {
        "id": message.id,
        "type": message.type,
        "role": message.role,
        "model": message.model,
        "text": "".join(b.text for b in message.content if b.type == "text"),
        "stop_reason": message.stop_reason,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }


def stream():
    deltas = []
    events = []
    with client().messages.stream(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": "Count to three."}],
    ) as s:
        for event in s:
            events.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = s.get_final_message()
    return {
        "deltas": deltas,
        "events": events,
        "final_text": "".join(b.text for b in final.content if b.type == "text"),
        "stop_reason": final.stop_reason,
        "input_tokens": final.usage.input_tokens,
        "output_tokens": final.usage.output_tokens,
    }


def tools(forced=False):
    c = client()
    question = {"role": "user", "content": "What is the weather in Paris?"}
    # A small model may not call a tool on its own; `any` makes the server constrain it to one.
    choice = {"tool_choice": {"type": "any"}} if forced else {}
    first = c.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, tools=[WEATHER_TOOL], messages=[question], **choice
    )
    uses = [b for b in first.content if b.type == "tool_use"]
    if not uses:
        return {"error": "no tool_use block", "first": first.model_dump()}
    use = uses[0]
    second = c.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "18 C and sunny"}
                ],
            },
        ],
    )
    return {
        "first_stop_reason": first.stop_reason,
        "tool_id": use.id,
        "tool_name": use.name,
        "tool_input": use.input,
        "second_stop_reason": second.stop_reason,
        "second_text": "".join(b.text for b in second.content if b.type == "text"),
    }


def stream_tools():
    events = []
    with client().messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as s:
        for event in s:
            events.append(event.type)
        final = s.get_final_message()
    return {
        "events": events,
        "blocks": [b.type for b in final.content],
        "text": "".join(b.text for b in final.content if b.type == "text"),
        "tool_inputs": [b.input for b in final.content if b.type == "tool_use"],
        "tool_names": [b.name for b in final.content if b.type == "tool_use"],
        "stop_reason": final.stop_reason,
    }


def thinking():
    with client().messages.stream(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Think, then answer."}],
    ) as s:
        final = s.get_final_message()
    return {
        "blocks": [b.type for b in final.content],
        "thinking": "".join(b.thinking for b in final.content if b.type == "thinking"),
        "text": "".join(b.text for b in final.content if b.type == "text"),
        "stop_reason": final.stop_reason,
    }


def count_tokens():
    counted = client().messages.count_tokens(
        model=MODEL,
        system="Be brief.",
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris? " * 20}],
    )
    return {"input_tokens": counted.input_tokens}


def models():
    page = client().models.list()
    return {"ids": [m.id for m in page.data], "types": sorted({m.type for m in page.data})}


def error():
    try:
        client().messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    except anthropic.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "error_type": (e.body or {}).get("error", {}).get("type"),
            "retry_after": e.response.headers.get("retry-after"),
        }
    return {"class": None}


if __name__ == "__main__":
    scenarios = {
        "create": create,
        "stream": stream,
        "tools": tools,
        "tools_forced": lambda: tools(forced=True),
        "stream_tools": stream_tools,
        "thinking": thinking,
        "count_tokens": count_tokens,
        "models": models,
        "error": error,
    }
    result = scenarios[sys.argv[1]]()
    result["sdk"] = "anthropic " + anthropic.__version__
    print(json.dumps(result))
