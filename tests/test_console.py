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
  - with --api-keys the page asks for a key, keeps it in sessionStorage only (no cookie, no
    localStorage, not in the URL) and lists the states with it.
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

    def __init__(self):
        self.port = free_port()
        self.driver = subprocess.Popen(
            [shutil.which("chromedriver"), "--port=%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
                         "--no-first-run", "--disable-extensions"],
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
    b.get(base + "/" + hashpart)
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
    b.click("#f-apply")
    b.wait("return location.hash.includes('tag=group-a')", what="tag filter")
    rows = wait_table(b, "tag filter")
    expect_rows(rows, api_list(base, tag="group-a", limit=50)["data"],
                "catalog: tag filter equals GET /v1/states?tag=group-a")
    b.type("#f-tag", "")
    b.type("#f-prefix", "beta")
    b.click("#f-apply")
    b.wait("return location.hash.includes('prefix=beta') && !location.hash.includes('tag=')",
           what="prefix filter")
    rows = wait_table(b, "prefix filter")
    expect_rows(rows, api_list(base, prefix="beta", limit=50)["data"],
                "catalog: name prefix filter equals GET /v1/states?prefix=beta")

    # cursor paging, 4 per page: forward through every page, then back to the first
    p1 = api_list(base, limit=4)
    p2 = api_list(base, limit=4, cursor=p1["next_cursor"])
    p3 = api_list(base, limit=4, cursor=p2["next_cursor"])
    rows = goto_catalog(b, base, "#/catalog?limit=4")
    expect_rows(rows, p1["data"], "paging: page 1 equals the API's first page of 4")
    b.click("#next")
    b.wait("return location.hash.includes('cursor=')", what="page 2")
    rows = wait_table(b, "page 2")
    expect_rows(rows, p2["data"], "paging: Older -> the API's page after next_cursor")
    b.click("#next")
    b.wait("return location.hash.includes(arguments[0])", p2["next_cursor"], what="page 3")
    rows = wait_table(b, "page 3")
    expect_rows(rows, p3["data"], "paging: Older again -> page 3")
    b.click("#prev")
    b.wait("return location.hash.includes(arguments[0]) && !location.hash.includes(arguments[1])",
           p1["next_cursor"], p2["next_cursor"], what="back to page 2")
    rows = wait_table(b, "back to page 2")
    expect_rows(rows, p2["data"], "paging: Newer goes back to page 2")
    b.click("#prev")
    b.wait("return !location.hash.includes('cursor=')", what="back to page 1")
    rows = wait_table(b, "back to page 1")
    expect_rows(rows, p1["data"], "paging: Newer again goes back to page 1")
    check(b.js("return document.getElementById('prev').disabled") is True,
          "paging: Newer is disabled on the first page")

    # sorting by tokens (then by name descending) orders the page as sorting the API's page does
    goto_catalog(b, base, "#/catalog?limit=50")
    b.click("th button[data-sort='tokens']")
    b.wait("return location.hash.includes('sort=tokens')", what="sort")
    rows = wait_table(b, "sorted")
    want = sorted(everything["data"], key=lambda s: s["n_tokens"])  # stable, like Array.sort
    expect_rows(rows, want, "sorting: Tokens ascending equals the API's page sorted by n_tokens")
    b.click("th button[data-sort='name']")
    b.wait("return location.hash.includes('sort=name')", what="sort name")
    b.click("th button[data-sort='name']")
    b.wait("return location.hash.includes('dir=desc')", what="sort name desc")
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
    b.get(base + "/#/state/alpha-00")
    meta = b.wait("const m = document.getElementById('metadata'); return m && m.textContent",
                  what="metadata")
    check(json.loads(meta) == s["metadata"], "state page: the metadata shown equals the record's")
    check(XSS in meta and "<script>alert(2)</script>" in meta,
          "state page: HTML in metadata is shown as its literal characters")
    check(b.js("return document.querySelectorAll('main img, main script').length") == 0,
          "state page: the metadata created no element")
    b.shot("state-1280x800")
    # the path itself holds HTML: the API's 404 message echoes it, shown as text
    b.get(base + "/#/state/" + urllib.parse.quote(XSS))
    err = b.wait("const e = document.querySelector('main .error'); return e && e.textContent",
                 what="error for an HTML name")
    check(XSS in err, "state page: a 404 message holding HTML is shown as text")
    b.get(base + "/#/" + urllib.parse.quote(XSS))
    txt = b.wait("const m = document.querySelector('main p'); return m && m.textContent",
                 what="unknown page")
    check(XSS in txt, "an unknown page holding HTML is named as text")
    check(b.js("return document.querySelectorAll('img, main script').length") == 0,
          "no page created an element from HTML in the data or the URL")
    check(b.alert_text() is None, "no alert was opened")


def check_keys(b, tmp):
    keys = os.path.join(tmp, "keys")
    with open(keys, "w") as f:
        f.write("reader-key-1 read\nwriter-key-1 write\n")
    d = Daemon(os.path.join(tmp, "data-keys"), "--api-keys", keys)
    try:
        st, _, _ = http("POST", d.base + "/v1/states", {"name": "kept", "prompt": "Dictionary:\n"},
                        headers={"Authorization": "Bearer writer-key-1"})
        assert st == 201
        st, _, _ = http("GET", d.base + "/", raw=True)
        check(st == 200, "with --api-keys the page itself needs no key")
        st, _, j = http("GET", d.base + "/v1/states")
        check(st == 401, "with --api-keys the API still needs one (401)")
        b.get(d.base + "/#/catalog")
        b.wait("return !document.getElementById('keyform').hidden", what="key form")
        check(True, "with --api-keys the page asks for a key")
        b.shot("key-1280x800")
        b.type("#key", "reader-key-1")
        b.click("#keyform-form button")
        rows = wait_table(b, "catalog with a key")
        auth = {"Authorization": "Bearer reader-key-1"}
        expect_rows(rows, api_list(d.base, headers=auth, limit=50)["data"],
                    "with a read key the catalog lists what the API lists")
        where = b.js("return {s: sessionStorage.getItem('statesoup.key'), l: localStorage.length,"
                     " c: document.cookie, u: location.href}")
        check(where["s"] == "reader-key-1" and where["l"] == 0 and where["c"] == ""
              and "reader-key-1" not in where["u"],
              "the key is in sessionStorage only (no localStorage, no cookie, not in the URL)")
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
            b = Browser()
            check_catalog(b, d.base)
            check_xss(b, d.base)
            check_keys(b, tmp)
        finally:
            if b:
                b.quit()
            d.stop()
    print("screenshots in " + SHOTS)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
