#!/usr/bin/env python3
"""test_console.py - the operators' console (web/, served by statesoupd at /) in a real browser.

Starts statesoupd on the demo model (loopback, a temporary data folder) and headless Chromium
through chromedriver, driven over WebDriver's HTTP protocol with the standard library only, and
checks what the page shows against what the API answers, asked here directly:
  - the static files: content types, a strict Content-Security-Policy, nosniff, no key needed;
  - the catalog table lists exactly what GET /v1/states lists (ids, names, tags, tokens, parents),
    the tag and name-prefix filters, cursor paging forward and back, sorting by a column;
  - user strings render as text: metadata holding HTML and a state path holding HTML show the
    literal characters, create no element and open no alert;
  - the state page: a merge's parents and weights (table and graph), a parent's children, the
    per-layer norms equal GET .../stats, export, delete with confirmation;
  - the similarity heatmap's numbers equal POST /v1/states/similarity's (whole and a layer);
  - the playground's output (streamed and not) and log-probabilities equal POST /v1/generate's
    with the same settings, its score equals /v1/score's, "save this merge" stores that merge;
  - the health page's model card and figures equal /v1/models and /metrics;
  - keyboard: Tab reaches the navigation and the catalog's controls;
  - with --api-keys the page asks for a key, keeps it in sessionStorage only (no cookie, no
    localStorage, not in the URL) and lists the states with it; a read key sees no delete or
    save buttons, and the API refuses its delete (403).
Screenshots of each page go to BUILD/tests/console-screenshots/ (1280x800 and phone width).

Exit 77 (skipped) when SS_SKIP_BROWSER=1 or chromium / chromedriver are not installed
(deploy/install-deps.sh installs both, so CI runs it).
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SRC = os.environ.get("SS_SOURCE_ROOT", os.getcwd())
BUILD = os.environ.get("SS_BUILD_ROOT", os.path.join(SRC, "build"))
MODEL = os.path.join(SRC, "models", "demo-mamba1")
SHOTS = os.path.join(BUILD, "tests", "console-screenshots")
WAIT_S = 60  # the longest a condition may take to become true (ASan builds are slow)

failures = 0


def check(cond, what):
    global failures
    if cond:
        print("ok   " + what)
    else:
        failures += 1
        print("FAIL " + what, file=sys.stderr)
    return cond


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- HTTP ------------------------------------------------------------------------------------

def http(method, url, body=None, headers=None, raw=False):
    """(status, headers, parsed JSON body or bytes when raw)."""
    data = None
    h = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            payload = r.read()
            status, hdrs = r.status, r.headers
    except urllib.error.HTTPError as e:
        payload, status, hdrs = e.read(), e.code, e.headers
    if raw:
        return status, hdrs, payload
    return status, hdrs, json.loads(payload) if payload else None


# ---- the daemon ------------------------------------------------------------------------------

class Daemon:
    def __init__(self, data, *extra):
        exe = os.path.join(BUILD, "statesoupd")
        self.p = subprocess.Popen(
            [exe, "--model", MODEL, "--data", data, "--listen", "127.0.0.1:0",
             "--compute-threads", "2", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        ready = threading.Event()

        def drain():
            for line in self.p.stderr:
                self.log.append(line)
                if "listening on http://127.0.0.1:" in line:
                    self.port = int(line.split("listening on http://127.0.0.1:")[1].split()[0]
                                    .strip("/"))
                if line.startswith("statesoupd: ready"):
                    ready.set()
            ready.set()

        self.t = threading.Thread(target=drain, daemon=True)
        self.t.start()
        ready.wait(180)
        if self.p.poll() is not None or not self.port:
            raise RuntimeError("statesoupd did not start:\n" + "".join(self.log))
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.p.terminate()
        rc = self.p.wait(120)
        self.t.join(10)
        check(rc == 0, "statesoupd exits 0 after SIGTERM (rc %s)" % rc)
        if rc != 0:
            sys.stderr.write("".join(self.log[-40:]))


# ---- WebDriver -------------------------------------------------------------------------------

class NoSuchAlert(Exception):
    pass


class Browser:
    """The few WebDriver commands the test needs (W3C protocol over HTTP)."""

    def __init__(self, tmp):
        """tmp: the test's temporary folder. Chromium's profile and its scratch folders go
        there (TMPDIR), so they are removed with it instead of piling up in /tmp."""
        self.port = free_port()
        profile = os.path.join(tmp, "chromium")
        os.makedirs(profile, exist_ok=True)
        self.driver = subprocess.Popen(
            [shutil.which("chromedriver"), "--port=%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, TMPDIR=profile))
        self.base = "http://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + WAIT_S
        while True:  # until chromedriver accepts connections
            try:
                st, _, j = http("GET", self.base + "/status")
                if st == 200 and j["value"].get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": shutil.which("chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--no-first-run", "--disable-extensions",
                         "--user-data-dir=" + os.path.join(profile, "profile")],
            }}}}
        st, _, j = http("POST", self.base + "/session", caps)
        if st != 200:
            raise RuntimeError("no WebDriver session: %s" % j)
        self.sid = j["value"]["sessionId"]

    def cmd(self, method, path, body=None):
        st, _, j = http(method, "%s/session/%s%s" % (self.base, self.sid, path), body)
        if st != 200:
            err = (j or {}).get("value", {})
            if err.get("error") == "no such alert":
                raise NoSuchAlert()
            raise RuntimeError("WebDriver %s %s: %s %s" % (method, path, st, err))
        return j["value"]

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def rendered(self):
        """The console's count of completed page renders (body[data-rendered])."""
        return int(self.js("return +(document.body && document.body.dataset.rendered || 0)"))

    def load(self, url):
        """Open url as a fresh document (about:blank first: a URL that differs only in its
        fragment would otherwise be a same-document navigation) and wait for its page."""
        self.get("about:blank")
        self.get(url)
        self.wait("return +(document.body.dataset.rendered || 0) >= 1", what="page of " + url)

    def after(self, action, what="the next page"):
        """Run action (a click that navigates) and wait until the page it leads to is done."""
        old = self.rendered()
        action()
        self.wait("return +(document.body.dataset.rendered || 0) > arguments[0]", old, what=what)

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script, *args, what="condition"):
        """Poll a script until it returns a truthy value; that value."""
        deadline = time.monotonic() + WAIT_S
        while True:
            v = self.js(script, *args)
            if v:
                return v
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for " + what)
            time.sleep(0.05)

    def find(self, css):
        v = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return list(v.values())[0]

    def click(self, css):
        self.cmd("POST", "/element/%s/click" % self.find(css), {})

    def type(self, css, text, clear=True):
        e = self.find(css)
        if clear:
            self.cmd("POST", "/element/%s/clear" % e, {})
        self.cmd("POST", "/element/%s/value" % e, {"text": text})

    def alert_text(self):
        try:
            return self.cmd("GET", "/alert/text")
        except NoSuchAlert:
            return None

    def size(self, w, h):
        self.cmd("POST", "/window/rect", {"width": w, "height": h})

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        png = base64.b64decode(self.cmd("GET", "/screenshot"))
        with open(os.path.join(SHOTS, name + ".png"), "wb") as f:
            f.write(png)

    def quit(self):
        try:
            http("DELETE", "%s/session/%s" % (self.base, self.sid))
        finally:
            self.driver.terminate()
            self.driver.wait(30)


# ---- page readers ----------------------------------------------------------------------------

# The catalog table as the page shows it: [{id, cells: [text of each cell]}] once loaded.
TABLE_JS = """
const t = document.querySelector('#catalog');
if (!t || document.getElementById('status').textContent) return null;
return [...t.tBodies[0].rows].map(tr => ({id: tr.dataset.id,
                                          cells: [...tr.cells].map(td => td.textContent)}));
"""


def wait_table(b, what):
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = b.js(TABLE_JS)
        if rows is not None:
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the table: " + what)
        time.sleep(0.05)


def goto_catalog(b, base, hashpart):
    b.load(base + "/" + hashpart)
    return wait_table(b, hashpart)


def expect_rows(rows, states, what):
    """The table's rows equal the API's records, in order: id, name, tags, tokens, parents."""
    want = [{"id": s["id"], "name": s["name"] if s["name"] is not None else "(unnamed)",
             "tags": "".join(s["tags"]), "tokens": str(s["n_tokens"]),
             "dtype": s["dtype"], "created": s["created_at"],
             "parents": str(len(s["parents"]))} for s in states]
    got = [{"id": r["id"], "name": r["cells"][0], "tags": r["cells"][2], "tokens": r["cells"][3],
            "dtype": r["cells"][5], "created": r["cells"][6], "parents": r["cells"][7]}
           for r in rows]
    ids_ok = [r["cells"][1] for r in rows] == [s["id"] for s in states]
    ok = check(got == want and ids_ok, what + " (%d rows)" % len(want))
    if not ok:
        print("  page:", got[:3], "\n  api: ", want[:3], file=sys.stderr)


def api_list(base, headers=None, **q):
    qs = urllib.parse.urlencode({k: v for k, v in q.items() if v is not None})
    st, _, j = http("GET", base + "/v1/states?" + qs, headers=headers)
    assert st == 200, j
    return j


# ---- the checks ------------------------------------------------------------------------------

XSS = "<img src=x onerror=alert(1)>"


def seed(base):
    """States to look at: 14 from short prompts in two tag groups, two merges."""
    made = []
    words = ["case", "for", "next", "word", "light", "river", "stone"]
    for i in range(14):
        group = "group-a" if i % 2 == 0 else "group-b"
        body = {"name": "%s-%02d" % ("alpha" if i < 7 else "beta", i),
                "prompt": "Dictionary:\n%s = %s\n" % (words[i % 7], words[(i * 3) % 7]) * (1 + i % 3),
                "tags": [group, "seed"],
                "metadata": {"i": i, "note": XSS, XSS: "<script>alert(2)</script>"}}
        st, _, j = http("POST", base + "/v1/states", body)
        assert st == 201, j
        made.append(j)
    st, _, m = http("POST", base + "/v1/states/merge", {
        "sources": [{"state": "alpha-00", "weight": 0.25}, {"state": "beta-07", "weight": 0.75}],
        "name": "soup-1", "tags": ["soup"], "metadata": {"html": XSS}})
    assert st == 201, m
    made.append(m)
    return made


def check_static(base):
    st, h, body = http("GET", base + "/", raw=True)
    check(st == 200 and h["Content-Type"].startswith("text/html"), "GET / is the page (text/html)")
    csp = h.get("Content-Security-Policy", "")
    check("script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
          and "frame-ancestors 'none'" in csp, "GET / has a strict CSP: " + csp)
    check(h.get("X-Content-Type-Options") == "nosniff", "GET / has X-Content-Type-Options: nosniff")
    check(b"<script src=\"/ui/console.js\"" in body and b"<script>" not in body
          and b"style=" not in body, "the page has no inline script or style")
    st, h, body = http("GET", base + "/ui/console.js", raw=True)
    with open(os.path.join(SRC, "web", "console.js"), "rb") as f:
        check(st == 200 and h["Content-Type"].startswith("text/javascript") and body == f.read(),
              "/ui/console.js is web/console.js, as text/javascript")
    st, h, body = http("GET", base + "/ui/console.css", raw=True)
    check(st == 200 and h["Content-Type"].startswith("text/css"), "/ui/console.css is text/css")
    st, _, j = http("GET", base + "/ui/nothing.js")
    check(st == 404 and j["error"]["code"] == "not_found", "/ui/nothing.js: 404 not_found (JSON)")
    st, _, j = http("GET", base + "/ui/..%2Fconsole.js")
    check(st == 404, "/ui/..%2Fconsole.js: 404 (files are looked up by name only)")


def check_catalog(b, base):
    everything = api_list(base, limit=50)
    check(len(everything["data"]) == 15 and everything["next_cursor"] is None,
          "the API lists the 15 seeded states")
    rows = goto_catalog(b, base, "#/catalog")
    expect_rows(rows, everything["data"], "catalog: the table lists what GET /v1/states lists")
    b.shot("catalog-1280x800")

    # filters through the form, as a user does
    b.type("#f-tag", "group-a")
    b.after(lambda: b.click("#f-apply"), "tag filter")
    rows = wait_table(b, "tag filter")
    expect_rows(rows, api_list(base, tag="group-a", limit=50)["data"],
                "catalog: tag filter equals GET /v1/states?tag=group-a")
    b.type("#f-tag", "")
    b.type("#f-prefix", "beta")
    b.after(lambda: b.click("#f-apply"), "prefix filter")
    rows = wait_table(b, "prefix filter")
    expect_rows(rows, api_list(base, prefix="beta", limit=50)["data"],
                "catalog: name prefix filter equals GET /v1/states?prefix=beta")

    # cursor paging, 4 per page: forward through every page, then back to the first
    p1 = api_list(base, limit=4)
    p2 = api_list(base, limit=4, cursor=p1["next_cursor"])
    p3 = api_list(base, limit=4, cursor=p2["next_cursor"])
    rows = goto_catalog(b, base, "#/catalog?limit=4")
    expect_rows(rows, p1["data"], "paging: page 1 equals the API's first page of 4")
    b.after(lambda: b.click("#next"), "page 2")
    rows = wait_table(b, "page 2")
    expect_rows(rows, p2["data"], "paging: Older -> the API's page after next_cursor")
    b.after(lambda: b.click("#next"), "page 3")
    rows = wait_table(b, "page 3")
    expect_rows(rows, p3["data"], "paging: Older again -> page 3")
    b.after(lambda: b.click("#prev"), "back to page 2")
    rows = wait_table(b, "back to page 2")
    expect_rows(rows, p2["data"], "paging: Newer goes back to page 2")
    b.after(lambda: b.click("#prev"), "back to page 1")
    rows = wait_table(b, "back to page 1")
    expect_rows(rows, p1["data"], "paging: Newer again goes back to page 1")
    check(b.js("return document.getElementById('prev').disabled") is True,
          "paging: Newer is disabled on the first page")

    # sorting by tokens (then by name descending) orders the page as sorting the API's page does
    goto_catalog(b, base, "#/catalog?limit=50")
    b.after(lambda: b.click("th button[data-sort='tokens']"), "sort")
    rows = wait_table(b, "sorted")
    want = sorted(everything["data"], key=lambda s: s["n_tokens"])  # stable, like Array.sort
    expect_rows(rows, want, "sorting: Tokens ascending equals the API's page sorted by n_tokens")
    b.after(lambda: b.click("th button[data-sort='name']"), "sort name")
    b.after(lambda: b.click("th button[data-sort='name']"), "sort name desc")
    rows = wait_table(b, "sorted desc")
    names = [r["cells"][0] for r in rows]
    check(names == sorted(names, reverse=True) and len(names) == 15,
          "sorting: Name twice sorts descending")
    b.size(390, 844)
    goto_catalog(b, base, "#/catalog?limit=10")
    b.shot("catalog-phone")
    b.size(1280, 800)


def check_xss(b, base):
    st, _, j = http("POST", base + "/v1/states", {"name": XSS, "prompt": "x"})
    check(st == 422, "the API refuses the name %s (422): names are [A-Za-z0-9._:/-]" % XSS)
    st, _, s = http("GET", base + "/v1/states/alpha-00")
    b.load(base + "/#/state/alpha-00")
    meta = b.wait("const m = document.getElementById('metadata'); return m && m.textContent",
                  what="metadata")
    check(json.loads(meta) == s["metadata"], "state page: the metadata shown equals the record's")
    check(XSS in meta and "<script>alert(2)</script>" in meta,
          "state page: HTML in metadata is shown as its literal characters")
    check(b.js("return document.querySelectorAll('main img, main script').length") == 0,
          "state page: the metadata created no element")
    b.shot("state-xss")
    # the path itself holds HTML: the API's 404 message echoes it, shown as text
    b.load(base + "/#/state/" + urllib.parse.quote(XSS))
    err = b.wait("const e = document.querySelector('main .error'); return e && e.textContent",
                 what="error for an HTML name")
    check(XSS in err, "state page: a 404 message holding HTML is shown as text")
    b.load(base + "/#/" + urllib.parse.quote(XSS))
    txt = b.wait("const m = document.querySelector('main p'); return m && m.textContent",
                 what="unknown page")
    check(XSS in txt, "an unknown page holding HTML is named as text")
    check(b.js("return document.querySelectorAll('img, main script').length") == 0,
          "no page created an element from HTML in the data or the URL")
    check(b.alert_text() is None, "no alert was opened")


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))


def check_state_page(b, base):
    soup = http("GET", base + "/v1/states/soup-1")[2]
    a0 = http("GET", base + "/v1/states/alpha-00")[2]
    b7 = http("GET", base + "/v1/states/beta-07")[2]
    b.load(base + "/#/state/soup-1")
    b.wait("return document.querySelector('#stats #norms')", what="state page")
    parents = b.js("return [...document.querySelectorAll('#parents tbody tr')].map(tr =>"
                   " [tr.dataset.id, tr.cells[0].textContent, tr.cells[2].textContent])")
    want = [[p["id"], {a0["id"]: "alpha-00", b7["id"]: "beta-07"}[p["id"]], str(p["weight"])]
            for p in soup["parents"]]
    check(parents == want, "lineage: the merge's parents and weights (%s)" % parents)
    edges = sorted(b.js("return [...document.querySelectorAll('#lineage-graph .edge-weight')]"
                        ".map(t => t.textContent)"))
    check(edges == ["0.25", "0.75"], "lineage graph: an edge per parent, labelled with its weight")
    nodes = b.js("return [...document.querySelectorAll('#lineage-graph .node text:first-of-type')]"
                 ".map(t => t.textContent)")
    check({"soup-1", "alpha-00", "beta-07"} <= set(nodes), "lineage graph: the state and its parents")
    stats = http("GET", base + "/v1/states/soup-1/stats")[2]
    shown = b.js("return [...document.querySelectorAll('#norms tbody tr')].map(tr =>"
                 " [...tr.cells].slice(1).map(td => td.dataset.v))")
    ok = len(shown) == len(stats["layers"]) and all(
        close(s[0], l["conv_norm"]) and close(s[1], l["ssm_norm"]) and close(s[2], l["norm"])
        for s, l in zip(shown, stats["layers"]))
    check(ok, "state page: per-layer norms equal GET /v1/states/soup-1/stats (%d layers)"
          % len(shown))
    check(b.js("return document.querySelectorAll('#norms-chart rect').length") >=
          2 * len(stats["layers"]), "state page: the norms chart has a bar per layer and part")
    b.shot("state-1280x800")
    b.size(390, 844)
    b.load(base + "/#/state/soup-1")
    b.wait("return document.querySelector('#stats #norms')", what="state page (phone)")
    b.shot("state-phone")
    b.size(1280, 800)
    # a parent's page lists its child with the weight
    b.load(base + "/#/state/alpha-00")
    kids = b.wait("const t = document.querySelector('#lineage'); return t && t.querySelector('h3 + *')"
                  " && [...document.querySelectorAll('#children tbody tr')].map(tr =>"
                  " [tr.dataset.id, tr.cells[1].textContent, tr.cells[3].textContent])",
                  what="children table")
    check(kids == [[soup["id"], "1", "0.25"]], "lineage: alpha-00's children: soup-1, weight 0.25 (%s)" % kids)
    # export: the file the page fetches is the API's
    b.js("window.__got = null; const f = window.fetch; window.fetch = (u, o) => f(u, o).then(r => {"
         " if (String(u).endsWith('/data')) r.clone().arrayBuffer().then(x => { window.__got = x.byteLength; });"
         " return r; });")
    b.click("#export")
    n = b.wait("return window.__got", what="export")
    st, _, data = http("GET", base + "/v1/states/alpha-00/data", raw=True)
    check(n == len(data), "export: the page downloads GET .../data (%d bytes)" % n)


def check_similarity(b, base):
    names = ["alpha-00", "beta-07", "soup-1", "alpha-02"]
    want = http("POST", base + "/v1/states/similarity", {"states": names, "per_layer": True})[2]
    b.load(base + "/#/similarity?states=" + ",".join(names))
    cells = b.wait("const c = document.querySelectorAll('#heatmap .cell'); return c.length &&"
                   " [...c].map(g => [+g.dataset.i, +g.dataset.j, g.dataset.v])", what="heatmap")
    ok = len(cells) == 16 and all(close(v, want["similarity"][i][j], 1e-12) for i, j, v in cells)
    check(ok, "similarity: the heatmap's 16 numbers equal POST /v1/states/similarity's")
    b.shot("similarity-1280x800")
    b.after(lambda: b.js("const s = document.getElementById('sim-layer'); s.value = '2';"
                         " s.dispatchEvent(new Event('change'))"), "layer 2")
    cells = b.wait("const c = document.querySelectorAll('#heatmap .cell'); return c.length &&"
                   " [...c].map(g => [+g.dataset.i, +g.dataset.j, g.dataset.v])", what="heatmap 2")
    ok = len(cells) == 16 and all(close(v, want["layers"][2][i][j], 1e-12) for i, j, v in cells)
    check(ok, "similarity: layer 2's heatmap equals the API's layers[2]")
    b.size(390, 844)
    b.load(base + "/#/similarity?states=" + ",".join(names))
    b.wait("return document.querySelectorAll('#heatmap .cell').length", what="heatmap (phone)")
    b.shot("similarity-phone")
    b.size(1280, 800)


def run_playground(b, base, stream, mode="generate"):
    b.load(base + "/#/playground?states=alpha-00,beta-07")
    b.wait("return document.getElementById('pg-run')", what="playground")
    b.type("#pg-weight-0", "0.25")
    b.type("#pg-weight-1", "0.75")
    b.type("#pg-prompt", "Query:\ncase =")
    b.type("#pg-max", "12")
    if not stream:
        b.click("#pg-stream")
    if mode == "score":
        b.js("const s = document.getElementById('pg-mode'); s.value = 'score';"
             " s.dispatchEvent(new Event('change'))")
        b.type("#pg-continuation", " word\nfor = next")
    b.click("#pg-run")


def check_playground(b, base):
    merge = [{"state": "alpha-00", "weight": 0.25}, {"state": "beta-07", "weight": 0.75}]
    body = {"merge": merge, "prompt": "Query:\ncase =", "max_tokens": 12, "temperature": 0,
            "seed": 1, "logprobs": 1}
    want = http("POST", base + "/v1/generate", body)[2]
    for stream in (True, False):
        run_playground(b, base, stream)
        got = b.wait("const f = document.getElementById('pg-finish'); return f && f.textContent &&"
                     " document.getElementById('logprobs') && {text: document.getElementById('pg-text')"
                     ".textContent, lps: [...document.querySelectorAll('#logprobs tbody tr')].map(tr =>"
                     " [tr.cells[2].textContent, tr.cells[3].dataset.v])}", what="generation")
        lps = [[str(l["token"]), l["logprob"]] for l in want["logprobs"]]
        check(got["text"] == want["text"],
              "playground (%s): the text equals POST /v1/generate's: %r" %
              ("streamed" if stream else "not streamed", got["text"]))
        check(len(got["lps"]) == len(lps) and all(g[0] == w[0] and close(g[1], w[1], 1e-12)
                                                  for g, w in zip(got["lps"], lps)),
              "playground: tokens and log-probabilities equal the API's")
        if stream:
            b.shot("playground-1280x800")
    want = http("POST", base + "/v1/score", {"merge": merge, "context": "Query:\ncase =",
                                              "continuation": " word\nfor = next"})[2]
    run_playground(b, base, True, "score")
    got = b.wait("const t = document.querySelectorAll('#logprobs tbody tr'); return t.length &&"
                 " [...t].map(tr => tr.cells[3].dataset.v)", what="score")
    check(len(got) == len(want["token_logprobs"]) and
          all(close(g, w, 1e-12) for g, w in zip(got, want["token_logprobs"])),
          "playground: score's per-token log-probabilities equal POST /v1/score's")
    # save this merge
    b.type("#pg-save-name", "saved-soup")
    b.click("#pg-save-btn")
    b.wait("const s = document.getElementById('pg-saved'); return s && s.textContent", what="save")
    st, _, rec = http("GET", base + "/v1/states/saved-soup")
    a0 = http("GET", base + "/v1/states/alpha-00")[2]["id"]
    b7 = http("GET", base + "/v1/states/beta-07")[2]["id"]
    check(st == 200 and rec["parents"] == [{"id": a0, "weight": 0.25}, {"id": b7, "weight": 0.75}],
          "playground: 'save this merge' stored the merge with its parents and weights")
    # retrieve-then-merge from the page equals the API's (states found, weights, text)
    body = {"merge": {"retrieve": {"query": "Dictionary:\nlight = river", "k": 2,
                                   "weights": "uniform"}},
            "prompt": "Query:\ncase =", "max_tokens": 12, "temperature": 0, "seed": 1, "logprobs": 1}
    want = http("POST", base + "/v1/generate", body)[2]
    b.load(base + "/#/playground")
    b.click("#pg-retrieve")
    b.type("#pg-rquery", "Dictionary:\nlight = river")
    b.type("#pg-rk", "2")
    b.js("document.getElementById('pg-rweights').value = 'uniform'")
    b.type("#pg-prompt", "Query:\ncase =")
    b.type("#pg-max", "12")
    b.click("#pg-run")
    got = b.wait("const t = document.getElementById('pg-retrieved'); return t && {text:"
                 " document.getElementById('pg-text').textContent, ids: [...t.tBodies[0].rows]"
                 ".map(tr => tr.dataset.id)}", what="retrieval")
    check(got["text"] == want["text"] and got["ids"] == [r["id"] for r in want["retrieved"]],
          "playground: retrieve-then-merge finds the API's states (%s) and generates its text"
          % got["ids"])
    b.shot("playground-retrieve")
    b.size(390, 844)
    run_playground(b, base, True)
    b.wait("const f = document.getElementById('pg-finish'); return f && f.textContent", what="phone")
    b.shot("playground-phone")
    b.size(1280, 800)


def check_health(b, base):
    model = http("GET", base + "/v1/models")[2]["data"][0]
    b.load(base + "/#/health")
    card = b.wait("const d = document.querySelectorAll('#model-card dd'); return d.length &&"
                  " Object.fromEntries([...d].map(e => [e.dataset.field, e.textContent]))",
                  what="model card")
    check(all(card.get(k) == str(v) for k, v in model.items() if not isinstance(v, (dict, list))
              and v is not None and not isinstance(v, bool))
          and card.get("id") == model["id"], "health: the model card equals GET /v1/models")
    st, _, text = http("GET", base + "/metrics", raw=True)
    stored = [l for l in text.decode().split("\n") if l.startswith("statesoup_states_stored ")]
    shown = b.js("return document.getElementById('h-states').textContent")
    check(stored and shown == stored[0].split()[1],
          "health: states stored equals /metrics' statesoup_states_stored (%s)" % shown)
    check(b.js("return document.getElementById('h-status').textContent") == "ok",
          "health: the status is /healthz's (ok)")
    check(b.js("return document.getElementById('h-pcache')") is None,
          "health: no prompt-cache figure without --prefix-cache-budget")
    b.shot("health-1280x800")
    b.size(390, 844)
    b.load(base + "/#/health")
    b.wait("return document.getElementById('h-states')", what="health (phone)")
    b.shot("health-phone")
    b.size(1280, 800)


def check_keyboard(b, base):
    b.load(base + "/#/catalog")
    wait_table(b, "catalog for the keyboard")
    seen = []
    for _ in range(12):
        b.cmd("POST", "/actions", {"actions": [{"type": "key", "id": "kb", "actions": [
            {"type": "keyDown", "value": "\ue004"}, {"type": "keyUp", "value": "\ue004"}]}]})
        seen.append(b.js("const e = document.activeElement; return e.id || e.textContent.trim()"))
    check("Catalog" in seen and "Similarity" in seen and "f-prefix" in seen and "f-apply" in seen,
          "keyboard: Tab reaches the navigation and the filters (%s)" % seen)


def check_delete(b, base):
    b.load(base + "/#/state/beta-13")
    b.wait("return document.getElementById('delete')", what="delete button")
    b.click("#delete")
    check(b.js("return !document.getElementById('delete-confirm').hidden"),
          "delete asks for confirmation first")
    check(http("GET", base + "/v1/states/beta-13")[0] == 200, "nothing is deleted before confirming")
    b.after(lambda: b.click("#delete-yes"), "after delete")
    check(http("GET", base + "/v1/states/beta-13")[0] == 404, "confirmed: the state is deleted")


def check_keys(b, tmp):
    keys = os.path.join(tmp, "keys")
    with open(keys, "w") as f:
        f.write("reader-key-1 read\nwriter-key-1 write\n")
    d = Daemon(os.path.join(tmp, "data-keys"), "--api-keys", keys, "--prefix-cache-budget", "8M",
               "--prefix-cache-every", "4")
    try:
        st, _, _ = http("POST", d.base + "/v1/states", {"name": "kept", "prompt": "Dictionary:\n"},
                        headers={"Authorization": "Bearer writer-key-1"})
        assert st == 201
        # a generation leaves prompt-cache entries (checkpoints every 4 tokens, hidden from lists)
        st, _, _ = http("POST", d.base + "/v1/generate",
                        {"prompt": "Dictionary:\ncase = word\nfor = next\n", "max_tokens": 1},
                        headers={"Authorization": "Bearer writer-key-1"})
        assert st == 200
        st, _, _ = http("GET", d.base + "/", raw=True)
        check(st == 200, "with --api-keys the page itself needs no key")
        st, _, j = http("GET", d.base + "/v1/states")
        check(st == 401, "with --api-keys the API still needs one (401)")
        b.load(d.base + "/#/catalog")
        b.wait("return !document.getElementById('keyform').hidden", what="key form")
        check(True, "with --api-keys the page asks for a key")
        b.shot("key-1280x800")
        b.type("#key", "reader-key-1")
        b.after(lambda: b.click("#keyform-form button"), "catalog with a key")
        rows = wait_table(b, "catalog with a key")
        auth = {"Authorization": "Bearer reader-key-1"}
        expect_rows(rows, api_list(d.base, headers=auth, limit=50)["data"],
                    "with a read key the catalog lists what the API lists")
        where = b.js("return {s: sessionStorage.getItem('statesoup.key'), l: localStorage.length,"
                     " c: document.cookie, u: location.href}")
        check(where["s"] == "reader-key-1" and where["l"] == 0 and where["c"] == ""
              and "reader-key-1" not in where["u"],
              "the key is in sessionStorage only (no localStorage, no cookie, not in the URL)")
        b.load(d.base + "/#/state/kept")
        b.wait("return document.querySelector('#stats #norms')", what="state page, read key")
        check(b.js("return document.getElementById('delete')") is None
              and b.js("return document.getElementById('who').textContent") == "read-only key",
              "a read key sees a read-only state page (no delete button)")
        b.shot("state-read-key")
        b.load(d.base + "/#/playground?states=kept")
        b.wait("return document.getElementById('pg-run')", what="playground, read key")
        check(b.js("return document.getElementById('pg-save')") is None,
              "a read key sees no 'save this merge'")
        st, _, j = http("DELETE", d.base + "/v1/states/kept", headers=auth)
        check(st == 403 and http("GET", d.base + "/v1/states/kept", headers=auth)[0] == 200,
              "a read key cannot delete (403), the state stays")
        # the health page shows the prompt cache's entries as /metrics counts them
        st, _, text = http("GET", d.base + "/metrics", raw=True, headers=auth)
        entries = [l.split()[1] for l in text.decode().split("\n")
                   if l.startswith("statesoup_prefix_cache_entries ")]
        b.load(d.base + "/#/health")
        shown = b.wait("const e = document.getElementById('h-pcache'); return e && e.textContent",
                       what="health, prompt cache")
        check(entries and int(entries[0]) > 0 and shown.startswith(entries[0] + " entries, ")
              and shown.endswith(" of 8.0 MiB"),
              "health: the prompt cache's entries and budget as /metrics says (%s)" % shown)
        b.js("sessionStorage.clear()")
    finally:
        d.stop()


def main():
    if os.environ.get("SS_SKIP_BROWSER") == "1":
        print("SS_SKIP_BROWSER=1: skipped")
        return 77
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        print("chromium / chromedriver not installed (deploy/install-deps.sh): skipped")
        return 77
    with tempfile.TemporaryDirectory(prefix="ss-console-") as tmp:
        d = Daemon(os.path.join(tmp, "data"))
        b = None
        try:
            seed(d.base)
            check_static(d.base)
            b = Browser(tmp)
            check_catalog(b, d.base)
            check_xss(b, d.base)
            check_state_page(b, d.base)
            check_similarity(b, d.base)
            check_playground(b, d.base)
            check_health(b, d.base)
            check_keyboard(b, d.base)
            check_delete(b, d.base)
            check_keys(b, tmp)
        finally:
            if b:
                b.quit()
            d.stop()
    print("screenshots in " + SHOTS)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
