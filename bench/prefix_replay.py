#!/usr/bin/env python3
"""prefix_replay.py - the automatic prompt cache's hit rate on a replayed request log.

A small generator writes a request log shaped like chat traffic behind a few shared system
prompts: --systems system prompts of --system-tokens tokens each (picked with a Zipf-like skew,
so one is popular and the others less so), each request being a system prompt, then one of
--users user histories (a prefix that grows as the user comes back), then a fresh question of
--question tokens. Token ids only, so any model works (no tokenizer needed).

The log is replayed against a running statesoupd started with --prefix-cache-budget (and
maybe --prefix-cache-every): one /v1/generate per line, max_tokens 1, requests one at a time.
The hit rate, the share of prompt tokens resumed (usage.cached_tokens) and the misses by cause
are read from the answers and from /metrics (the counters' differences over the replay).

usage: bench/prefix_replay.py [--url http://127.0.0.1:8080] [--requests 200] [--seed 1]
                              [--systems 4] [--system-tokens 600] [--users 12] [--question 40]
                              [--write-log FILE] [--log FILE] [--json FILE]
--write-log FILE writes the generated log (one JSON request body per line) and exits;
--log FILE replays a log instead of generating one. Only the Python standard library is used.
"""
import argparse
import json
import random
import re
import sys
import time

from daemon_http import request


def call(url, method, path, body=None):
    return request(url, method, path, body, "prefix_replay.py")


def counters(url):
    """The statesoup_prefix_* samples of /metrics, by their full name (labels included)."""
    text = call(url, "GET", "/metrics").decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(statesoup_prefix_[a-z_]+(?:\{[^}]*\})?) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def generate_log(a, vocab):
    rnd = random.Random(a.seed)
    tok = lambda n: [rnd.randrange(1, vocab) for _ in range(n)]
    systems = [tok(a.system_tokens) for _ in range(a.systems)]
    weights = [1.0 / (k + 1) for k in range(a.systems)]  # Zipf-like: system 0 is the popular one
    users = [{"system": rnd.choices(range(a.systems), weights)[0], "history": []}
             for _ in range(a.users)]
    log = []
    for _ in range(a.requests):
        u = rnd.choice(users)
        question = tok(a.question)
        log.append({"prompt": systems[u["system"]] + u["history"] + question, "max_tokens": 1,
                    "temperature": 0})
        u["history"] = u["history"] + question + tok(8)  # the question and an answer stay
    return log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", type=int, default=4)
    ap.add_argument("--system-tokens", type=int, default=600)
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--question", type=int, default=40)
    ap.add_argument("--vocab", type=int, default=0, help="token ids below this (default: the model's)")
    ap.add_argument("--write-log")
    ap.add_argument("--log")
    ap.add_argument("--json")
    a = ap.parse_args()

    if a.log:
        with open(a.log) as f:
            log = [json.loads(line) for line in f if line.strip()]
    else:
        vocab = a.vocab or json.loads(call(a.url, "GET", "/v1/models"))["data"][0]["vocab_size"]
        log = generate_log(a, vocab)
    if a.write_log:
        with open(a.write_log, "w") as f:
            for body in log:
                f.write(json.dumps(body) + "\n")
        return

    before = counters(a.url)
    prompt_tokens = cached = hits = 0
    t0 = time.monotonic()
    for body in log:
        usage = json.loads(call(a.url, "POST", "/v1/generate", body))["usage"]
        prompt_tokens += usage["prompt_tokens"]
        cached += usage.get("cached_tokens", 0)
        hits += usage.get("cached_tokens", 0) > 0
    dt = time.monotonic() - t0
    after = counters(a.url)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    misses = {re.search(r'cause="([a-z_]+)"', k).group(1): v for k, v in delta.items()
              if k.startswith("statesoup_prefix_misses_total")}
    res = {"requests": len(log), "hits": hits, "hit_rate": hits / len(log) if log else 0,
           "prompt_tokens": prompt_tokens, "cached_tokens": cached,
           "cached_share": cached / prompt_tokens if prompt_tokens else 0,
           "lookups": delta.get("statesoup_prefix_lookups_total", 0), "misses": misses,
           "seconds": dt}
    print(f"{len(log)} requests in {dt:.1f} s: {hits} hits ({100 * res['hit_rate']:.1f} %), "
          f"{cached} of {prompt_tokens} prompt tokens resumed ({100 * res['cached_share']:.1f} %)")
    print("misses by cause: " + ", ".join(f"{k} {v}" for k, v in sorted(misses.items())))
    if res["lookups"] != len(log):
        print(f"note: the daemon counted {res['lookups']} lookups (is reuse on? start it with "
              "--prefix-cache-budget)", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
