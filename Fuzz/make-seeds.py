#!/usr/bin/env python3
"""Assembles the fuzz targets' seed corpora from real inputs, into OUT/<target>/.

    Fuzz/make-seeds.py OUT [CORPUS]

CORPUS is the recorded provider traffic (default ../shared/corpus next to the repository);
the repository's own cassettes, configs, test YAML and past findings (Fuzz/findings) are
always used. Seeds are named by content hash, so running it again adds nothing twice.
Needs PyYAML (python3-yaml).
"""
import hashlib
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SEED = 256 * 1024  # keep in step with scripts/fuzz's -max_len for the YAML targets
MAX_HTTP_SEED = 64 * 1024  # scripts/fuzz's -max_len for http
MAX_HTTP_CORPUS_SEEDS = 400  # request bodies from the recorded corpus, wrapped in heads
TARGETS = ("sse", "json", "chat-request", "config", "cassette", "http", "upstream-http")  # as in scripts/fuzz


def write(out, target, data):
    if isinstance(data, str):
        data = data.encode()
    if not data or len(data) > (MAX_HTTP_SEED if target == "http" else MAX_SEED):
        return
    folder = os.path.join(out, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def cassette_files(corpus):
    folders = [os.path.join(ROOT, "Tests/Fixtures/cassettes")]
    if corpus and os.path.isdir(corpus):
        folders += [corpus, os.path.join(corpus, "chat")]
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            if name.endswith((".yaml", ".yml")):
                yield os.path.join(folder, name)


QUESTION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Say hi in Portuguese"},
]


def chat_body(model, stream):
    """GatewayEndToEndTests.chatBody: what the tests and the openai client send."""
    return json.dumps(
        {"model": model, "stream": stream, "max_tokens": 4000, "stream_options": {"include_usage": True}, "messages": QUESTION},
        separators=(",", ":"),
    )


def post(body, path="/v1/chat/completions", extra=""):
    """RawUnixClient.post: a POST with Content-Length."""
    data = body.encode() if isinstance(body, str) else body
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def post_chunked(body, pieces=3):
    """The same request with a chunked body, cut into `pieces` chunks."""
    data = body.encode() if isinstance(body, str) else body
    step = max(1, -(-len(data) // pieces))
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i : i + step]), data[i : i + step]) for i in range(0, len(data), step))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + chunks + b"0\r\n\r\n"


def http_seeds(out, request_bodies):
    """Whole client connections for the http target: the requests the test suites and the
    clients send (HostileClientTests, GatewayEndToEndTests, Tests/clients/openai_client.py,
    the README's curl lines), malformed ones, and recorded request bodies wrapped in heads."""
    health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    models = "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n"
    stream = post(chat_body("grok-4-fast", True))
    whole = post(chat_body("grok-4-fast", False))
    fixed = [
        health,
        models,
        "HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" + health,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" + health,
        "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        "GET /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n\r\n",  # 405
        "DELETE /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET /nowhere?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",  # 404
        # HostileClientTests: malformed, slow, oversized.
        "HELLO\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + "a" * 60000 + "\r\n\r\n",
        "\x00\x01\x02\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl",
        'POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200\r\n\r\n{"model":',
        post("x" * 40000),  # over max_request_body (32KiB in the target): 413
        post('{"model":"grok-4-fast","messages":' + "[" * 600 + "]" * 600 + "}"),
        # Bodies that are not chat requests: 400 with a code.
        post("not json"),
        post("[]"),
        post('{"model":"grok-4-fast"}'),
        post('{"messages":[]}'),
        post('{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}'),
        post('{"model":"grok-4-fast","stream":"yes","messages":[{"role":"user","content":"hi"}]}'),
        post(b'{"model":"grok-4-fast","messages":[{"role":"user","content":"\xff\xfe"}]}'),
        # Keep-alive and pipelining: a stream, a whole answer, a health check, another stream.
        stream + whole + health.encode() + stream,
        stream + whole,
        post(chat_body("gpt-4o-mini", True)),
        post(chat_body("gpt-4o-mini", False)),
        post(chat_body("mini", True)),
        post(chat_body("recorded/gpt-4o-mini", False)),
        post(chat_body("grok-4-fast", True), extra="Connection: close\r\n"),
        post(chat_body("grok-4-fast", True), extra="Expect: 100-continue\r\n"),
        post(chat_body("grok-4-fast", False), extra="Authorization: Bearer sk-client\r\n"),
        post_chunked(chat_body("grok-4-fast", True)),
        post_chunked(chat_body("grok-4-fast", False), pieces=1) + health.encode(),
        # A stream whose client hangs up in the middle of the body.
        post(chat_body("grok-4-fast", True))[:-20],
    ]
    for seed in fixed:
        write(out, "http", seed)
    # Recorded request bodies, as a whole request and (every fourth) chunked and pipelined.
    for index, body in enumerate(request_bodies[:MAX_HTTP_CORPUS_SEEDS]):
        write(out, "http", post(body))
        if index % 4 == 0:
            write(out, "http", post_chunked(body) + health.encode())


def upstream_response(body, chunked=True, extra_headers=""):
    """An upstream's HTTP/1.1 response carrying `body`: chunked a block (SSE event) a
    chunk, as providers send streams, or with Content-Length."""
    body = body.encode() if isinstance(body, str) else body
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + extra_headers
    if not chunked:
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    out = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
    for block in re.split(rb"(?<=\n\n)", body):
        if block:
            out += b"%x\r\n" % len(block) + block + b"\r\n"
    return out + b"0\r\n\r\n"


def upstream_http_seeds(out, sse_bodies):
    """Seeds for FuzzUpstreamHTTP: byte 0 seeds the read splits, the rest is what an
    upstream sends on one connection."""
    fixed = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\ndata: to the close\n\n",
        b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5;ext=1\nhello\n0\nTrailer: x\n\n",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    ]
    for seed in fixed:
        write(out, "upstream-http", bytes([len(seed) % 256]) + seed)
    for index, body in enumerate(sse_bodies[:200]):
        response = upstream_response(body[:8000], chunked=index % 5 != 0)
        write(out, "upstream-http", bytes([index % 256]) + response)


def main():
    out = sys.argv[1]
    corpus = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(ROOT), "shared/corpus")
    json_seen = 0
    request_bodies = []
    sse_bodies = []
    for path in cassette_files(corpus):
        text = open(path, encoding="utf-8").read()
        write(out, "cassette", text)
        for interaction in (yaml.safe_load(text) or {}).get("interactions") or []:
            body = (interaction.get("request") or {}).get("body") or ""
            if body:
                write(out, "chat-request", body)
                if body not in request_bodies:
                    request_bodies.append(body)
                write(out, "json", body)
            response = (interaction.get("response") or {}).get("body") or ""
            if "data:" in response:
                # Byte 0 seeds the read splits, byte 1 the small size limit (see FuzzSSE).
                write(out, "sse", bytes([len(response) % 256, 200]) + response.encode())
                sse_bodies.append(response)
                previous = None
                for line in response.splitlines():
                    if line.startswith("data: {") and json_seen < 3000:
                        write(out, "json", line[6:])
                        json_seen += 1
                        # Two consecutive chunks, one a line (see FuzzJSON).
                        if previous is not None:
                            write(out, "json", previous + "\n" + line[6:])
                        previous = line[6:]
            elif response:
                write(out, "json", response)
    http_seeds(out, request_bodies)
    upstream_http_seeds(out, sse_bodies)
    # Configs: the shipped ones and the YAML the tests feed the loader.
    for name in ("etc/chatrelayd.yaml", "etc/chatrelayd.local.yaml"):
        write(out, "config", open(os.path.join(ROOT, name), encoding="utf-8").read())
    tests = os.path.join(ROOT, "Tests/RelayGatewayTests")
    for name in sorted(os.listdir(tests)):
        if not name.endswith(".swift"):
            continue
        source = open(os.path.join(tests, name), encoding="utf-8").read()
        for block in re.findall(r'"""\n(.*?)\n\s*"""', source, re.S):
            if re.search(r"^\s*(upstreams|models|pipeline|socket|policy|callers):", block, re.M):
                # Swift's multi-line strings drop the closing quotes' indentation.
                lines = block.split("\n")
                indent = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
                write(out, "config", "\n".join(l[indent:] for l in lines) + "\n")
    # Past findings (Fuzz/findings/TARGET-what.ext), so every run tries them again first.
    findings = os.path.join(ROOT, "Fuzz/findings")
    for name in sorted(os.listdir(findings)):
        target = next((t for t in TARGETS if name.startswith(t + "-")), None)
        if target:
            write(out, target, open(os.path.join(findings, name), "rb").read())
    for target in sorted(os.listdir(out)):
        print(f"{target}: {len(os.listdir(os.path.join(out, target)))} seeds")


if __name__ == "__main__":
    main()
