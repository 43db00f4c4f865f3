#!/usr/bin/env python3
"""A moderation hook for chatrelayd's tests (and an example of the protocol).

chatrelayd's `command` hook writes one JSON request per line on standard input,
    {"id": 7, "text": "...", "where": "output.content", "request_id": "req_...", "model": "..."}
and reads one verdict per line, in order, on standard output:
    {"id": 7, "action": "pass" | "flag" | "redact" | "block", "rule": "...", "replacement": "..."}

What this one does depends on the text:
    "forbidden"        block, rule "test-forbidden"
    "rude"             redact: the window with "rude" replaced by "[polite]"
    "iffy"             flag, rule "iffy"
    "openai-flagged"   answers in OpenAI's /v1/moderations shape, flagged for violence
    "slow:SECONDS"     answers after SECONDS (to make the stage's timeout fire)
    "crash"            exits at once, answering nothing
    anything else      pass
Arguments: --no-id answers without ids (chatrelayd then takes answers in order);
--log FILE appends each request's text and this process's pid to FILE.
"""
import json
import os
import re
import sys
import time


def verdict(text):
    if "crash" in text:
        sys.exit(3)
    match = re.search(r"slow:([0-9.]+)", text)
    if match:
        time.sleep(float(match.group(1)))
    if "forbidden" in text:
        return {"action": "block", "rule": "test-forbidden"}
    if "rude" in text:
        return {"action": "redact", "rule": "manners", "replacement": text.replace("rude", "[polite]")}
    if "iffy" in text:
        return {"action": "flag", "rule": "iffy"}
    if "openai-flagged" in text:
        return {"id": "modr-1", "model": "omni-moderation-latest",
                "results": [{"flagged": True, "categories": {"violence": True, "hate": False},
                             "category_scores": {"violence": 0.97, "hate": 0.01}}]}
    return {"action": "pass"}


def main():
    with_ids = "--no-id" not in sys.argv
    log = sys.argv[sys.argv.index("--log") + 1] if "--log" in sys.argv else None
    for line in sys.stdin:
        request = json.loads(line)
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps({"pid": os.getpid(), "text": request["text"], "where": request["where"]}) + "\n")
        answer = verdict(request["text"])
        if with_ids:
            answer["id"] = request["id"]
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
