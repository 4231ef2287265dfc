#!/usr/bin/env python3
"""Writes the seed corpora of the wire codec fuzz targets (corpus/wire_*/)
from the codecs' own unit tests: every raw string literal R"(...)" of
tests/wire/<codec>_test.cpp that is a JSON object or array (request bodies,
upstream answers, stream chunks) becomes one seed, and the chunks of each
test, joined in order as an SSE stream (`event: TYPE` from the chunk's
"type" where it has one, then `data: ...`), become one more. The mock
upstreams of tests/e2e produce the same shapes. Deterministic.

    python3 tests/fuzz/make_wire_seeds.py
"""
import hashlib
import json
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CODECS = {
    "wire_openai": ["tests/wire/openai_test.cpp"],
    "wire_anthropic": ["tests/wire/anthropic_test.cpp"],
    "wire_gemini": ["tests/wire/gemini_test.cpp"],
    "wire_responses": ["tests/wire/responses_test.cpp", "tests/wire/responses_upstream_test.cpp"],
}
RAW = re.compile(r'R"\((.*?)\)"', re.S)
TEST = re.compile(r"^TEST(?:_F)?\(", re.M)


def json_literals(text):
    out = []
    for m in RAW.finditer(text):
        s = m.group(1)
        try:
            json.loads(s)
        except ValueError:
            continue
        out.append(s)
    return out


def sse(chunks):
    frames = []
    for c in chunks:
        v = json.loads(c)
        line = "data: " + json.dumps(v, separators=(",", ":"), ensure_ascii=False)
        if isinstance(v, dict) and isinstance(v.get("type"), str):
            line = "event: " + v["type"] + "\n" + line
        frames.append(line + "\n\n")
    return "".join(frames)


def main():
    for target, files in CODECS.items():
        out_dir = os.path.join(ROOT, "tests", "fuzz", "corpus", target)
        os.makedirs(out_dir, exist_ok=True)
        seeds = set()
        for rel in files:
            text = open(os.path.join(ROOT, rel), encoding="utf-8").read()
            for s in json_literals(text):
                seeds.add(s)
            for body in TEST.split(text):
                chunks = json_literals(body)
                if len(chunks) >= 2:
                    seeds.add(sse(chunks))
        for s in sorted(seeds):
            data = s.encode()
            if len(data) > 16384:
                continue
            name = hashlib.sha1(data).hexdigest()[:16]
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(data)
        print(target, len(os.listdir(out_dir)))


if __name__ == "__main__":
    main()
