#!/usr/bin/env python3
"""quality.py - what a weight format costs in model quality, measured through a running statesoupd.

Two measurements, each against one daemon (run it once per format and compare):

  perplexity  of text files (default: the project's docs/*.md, which the demo model never saw),
              scored in chunks of --chunk tokens from the zero state;
  state soup  the table of models/demo-mamba1/README.md: --tasks dictionary tasks of 8 pairs
              split into halves A and B; the Query block scored from the zero state, A, B, the
              soup 0.5 A + 0.5 B, the sum A + B, the whole dictionary in one pass, a soup of this
              task's and another task's whole states, and the other task alone. Mean loss (nats)
              on the query's value tokens and key tokens.

usage: bench/quality.py [--url http://127.0.0.1:8080] [--tasks 300] [--seed 1] [--json FILE]
                        [--words models/demo-mamba1/words.txt] [--text FILE ...]
Only the Python standard library is used. The daemon's catalog gets states named quality-*
(deleted again at the end).
"""
import argparse
import glob
import json
import math
import os
import random
import sys

from daemon_http import request


def call(url, method, path, body=None):
    text = request(url, method, path, body, "quality.py")
    return json.loads(text) if text else None


def tokenize(url, text):
    return call(url, "POST", "/v1/tokenize", {"text": text})["tokens"]


def perplexity(url, files, chunk):
    """Mean negative log-likelihood per token over chunks of the files' tokens, from zero."""
    nll, n = 0.0, 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            ids = tokenize(url, fh.read())
        for i in range(0, len(ids) - 1, chunk):
            part = ids[i:i + chunk]
            if len(part) < 2:
                continue
            r = call(url, "POST", "/v1/score", {"continuation": part})
            nll -= r["logprob_sum"]
            n += r["n_scored"]
    return nll / n, n


def make_task(rng, words):
    w = rng.sample(words, 16)
    return list(zip(w[:8], w[8:]))


def dictionary(pairs):
    return "Dictionary:\n" + "".join(f"{k} = {v}\n" for k, v in pairs)


def query(url, rng, pairs):
    """The Query block's token ids and which of them are value / key tokens."""
    order = pairs[:]
    rng.shuffle(order)
    ids, values, keys = tokenize(url, "\nQuery:\n"), [], []
    for k, v in order:
        kt = tokenize(url, k)
        keys += range(len(ids), len(ids) + len(kt))
        ids += kt + tokenize(url, " =")
        vt = tokenize(url, " " + v)
        values += range(len(ids), len(ids) + len(vt))
        ids += vt + tokenize(url, "\n")
    text = "\nQuery:\n" + "".join(f"{k} = {v}\n" for k, v in order)
    if tokenize(url, text) != ids:
        raise SystemExit("quality.py: the query does not tokenize piece by piece as a whole")
    return ids, values, keys


CONDITIONS = ["zero", "A", "B", "0.5A+0.5B", "A+B", "one pass", "0.5 this+0.5 other", "other"]


def start_of(cond, t, other):
    a, b, w, o = f"quality-{t}-a", f"quality-{t}-b", f"quality-{t}-w", f"quality-{other}-w"
    return {
        "zero": {},
        "A": {"state": a},
        "B": {"state": b},
        "0.5A+0.5B": {"merge": [{"state": a, "weight": 0.5}, {"state": b, "weight": 0.5}]},
        "A+B": {"merge": [{"state": a, "weight": 1.0}, {"state": b, "weight": 1.0}]},
        "one pass": {"state": w},
        "0.5 this+0.5 other": {"merge": [{"state": w, "weight": 0.5},
                                         {"state": o, "weight": 0.5}]},
        "other": {"state": o},
    }[cond]


def soup_table(url, words, n_tasks, seed):
    rng = random.Random(seed)
    tasks = [make_task(rng, words) for _ in range(n_tasks)]
    for t, pairs in enumerate(tasks):
        for suffix, part in (("a", pairs[:4]), ("b", pairs[4:]), ("w", pairs)):
            call(url, "POST", "/v1/states", {"name": f"quality-{t}-{suffix}",
                                             "prompt": dictionary(part)})
    sums = {c: [0.0, 0, 0.0, 0] for c in CONDITIONS}
    for t, pairs in enumerate(tasks):
        ids, values, keys = query(url, rng, pairs)
        other = (t + 1) % n_tasks
        for c in CONDITIONS:
            body = dict(start_of(c, t, other), continuation=ids)
            lps = call(url, "POST", "/v1/score", body)["token_logprobs"]
            s = sums[c]
            for i in values:
                s[0] -= lps[i]
                s[1] += 1
            for i in keys:
                if lps[i] is not None:
                    s[2] -= lps[i]
                    s[3] += 1
    for t in range(n_tasks):
        for suffix in "abw":
            call(url, "DELETE", f"/v1/states/quality-{t}-{suffix}")
    return {c: {"value_loss": s[0] / s[1], "key_loss": s[2] / s[3]} for c, s in sums.items()}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--words", default=os.path.join(root, "models/demo-mamba1/words.txt"))
    ap.add_argument("--text", nargs="*", default=sorted(glob.glob(os.path.join(root, "docs/*.md"))))
    ap.add_argument("--json")
    a = ap.parse_args()
    model = call(a.url, "GET", "/v1/models")["data"][0]
    with open(a.words) as fh:
        words = [w.strip() for w in fh if w.strip()]
    nll, n = perplexity(a.url, a.text, a.chunk)
    table = soup_table(a.url, words, a.tasks, a.seed)
    print(f"model {model['id']}, weights {model.get('weights', 'stored')}")
    print(f"text: {n} tokens of {len(a.text)} files, {nll:.4f} nats/token, "
          f"perplexity {math.exp(nll):.2f}")
    print(f"state soup, {a.tasks} tasks: mean loss (nats)")
    print("| start state | " + " | ".join(CONDITIONS) + " |")
    print("| --- |" + " --- |" * len(CONDITIONS))
    for key, label in (("value_loss", "value loss"), ("key_loss", "key loss")):
        print(f"| {label} | " + " | ".join(f"{table[c][key]:.3f}" for c in CONDITIONS) + " |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"model": model["id"], "weights": model.get("weights", "stored"),
                       "text_tokens": n, "text_nll": nll, "text_perplexity": math.exp(nll),
                       "soup": table}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
