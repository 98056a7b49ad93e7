"""Drives relayd with the official `openai` SDK and prints a JSON summary on stdout.

Usage: openai_client.py create|stream|stream_usage|models|error
Env: RELAY_BASE_URL (http://127.0.0.1:PORT/v1), RELAY_KEY, RELAY_MODEL.
"""

import json
import os
import sys

import openai

MODEL = os.environ["RELAY_MODEL"]


def client():
    return openai.OpenAI(
        base_url=os.environ["RELAY_BASE_URL"],
        api_key=os.environ["RELAY_KEY"],
        max_retries=0,
        timeout=30,
    )


def create():
    completion = client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}]
    )
    return {
        "model": completion.model,
        "text": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
    }


def stream(**extra):
    chunks = client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to three."}],
        stream=True,
        **extra,
    )
    text = []
    finish = None
    empty_choice_chunks = 0
    usage = None
    usage_chunks = 0
    models = set()
    for chunk in chunks:
        models.add(chunk.model)
        if chunk.usage is not None:
            usage_chunks += 1
            usage = chunk.usage.model_dump()
        if not chunk.choices:
            empty_choice_chunks += 1
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            text.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    return {
        "text": "".join(text),
        "finish_reason": finish,
        "empty_choice_chunks": empty_choice_chunks,
        "usage_chunks": usage_chunks,
        "usage": usage,
        "models": sorted(models),
    }


def stream_usage():
    result = stream(stream_options={"include_usage": True})
    return result


def error():
    try:
        client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "body": e.body,
            "retry_after": e.response.headers.get("retry-after"),
        }
    return {"class": None}


def models():
    return {"ids": [m.id for m in client().models.list()]}


if __name__ == "__main__":
    scenarios = {
        "create": create,
        "stream": stream,
        "stream_usage": stream_usage,
        "models": models,
        "error": error,
    }
    result = scenarios[sys.argv[1]]()
    result["sdk"] = "openai " + openai.__version__
    print(json.dumps(result))
