#!/usr/bin/env python3
"""Assembles the fuzz targets' seed corpora from real inputs, into OUT/<target>/.

    Fuzz/make-seeds.py OUT [CORPUS]

CORPUS is the recorded provider traffic (default ../shared/corpus next to the repository);
the repository's own cassettes, configs and test YAML are always used. Seeds are named by
content hash, so running it again adds nothing twice. Needs PyYAML (python3-yaml).
"""
import hashlib
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SEED = 256 * 1024  # keep in step with scripts/fuzz's -max_len for the YAML targets


def write(out, target, data):
    if isinstance(data, str):
        data = data.encode()
    if not data or len(data) > MAX_SEED:
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


def main():
    out = sys.argv[1]
    corpus = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(ROOT), "shared/corpus")
    json_seen = 0
    for path in cassette_files(corpus):
        text = open(path, encoding="utf-8").read()
        write(out, "cassette", text)
        for interaction in (yaml.safe_load(text) or {}).get("interactions") or []:
            body = (interaction.get("request") or {}).get("body") or ""
            if body:
                write(out, "chat-request", body)
                write(out, "json", body)
            response = (interaction.get("response") or {}).get("body") or ""
            if "data:" in response:
                # Byte 0 seeds the read splits, byte 1 the small size limit (see FuzzSSE).
                write(out, "sse", bytes([len(response) % 256, 200]) + response.encode())
                for line in response.splitlines():
                    if line.startswith("data: {") and json_seen < 3000:
                        write(out, "json", line[6:])
                        json_seen += 1
            elif response:
                write(out, "json", response)
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
    for target in sorted(os.listdir(out)):
        print(f"{target}: {len(os.listdir(os.path.join(out, target)))} seeds")


if __name__ == "__main__":
    main()
