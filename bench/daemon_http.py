"""daemon_http.py - the one HTTP call the bench scripts make to a running statesoupd.

request(url, method, path, body=None, who="...") sends body as JSON (when given) and returns the
answer's bytes; an HTTP error ends the script with `who: METHOD PATH: status message`.
Only the Python standard library is used.
"""
import json
import urllib.error
import urllib.request


def request(url, method, path, body=None, who="bench"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{who}: {method} {path}: {e.code} {e.read().decode()[:300]}")
