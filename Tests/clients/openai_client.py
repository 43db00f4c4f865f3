"""The official openai Python client, talking to chatrelayd over its Unix socket.

Usage: openai_client.py SOCKET_PATH MODEL
Prints one JSON object: the streamed text, the chunk count, the non-streamed text, the model
list, and what an unknown model raised. Used by the Swift end-to-end tests.
"""
import json
import sys

import httpx
import openai


def main() -> None:
    socket_path, model = sys.argv[1], sys.argv[2]
    http_client = httpx.Client(transport=httpx.HTTPTransport(uds=socket_path))
    client = openai.OpenAI(base_url="http://localhost/v1", api_key="not-needed", http_client=http_client, max_retries=0)
    messages = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Say hi in Portuguese"},
    ]
    result = {}

    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, max_tokens=4000, stream_options={"include_usage": True}
    )
    text, chunks, finish, usage = [], 0, None, None
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
        if chunk.usage:
            usage = chunk.usage.total_tokens
    result["stream_text"] = "".join(text)
    result["stream_chunks"] = chunks
    result["stream_finish"] = finish
    result["stream_total_tokens"] = usage

    completion = client.chat.completions.create(model=model, messages=messages, max_tokens=4000)
    result["text"] = completion.choices[0].message.content
    result["models"] = sorted(m.id for m in client.models.list())

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        result["unknown_model_error"] = None
    except openai.NotFoundError as error:
        result["unknown_model_error"] = {"status": error.status_code, "code": error.code}

    print(json.dumps(result))


if __name__ == "__main__":
    main()
