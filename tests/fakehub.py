"""A small Hugging Face Hub stand-in on 127.0.0.1, for offline tests of ``zoo push`` and
``zoo.load("hf://...")`` through the real ``huggingface_hub`` client.

It serves the endpoints the client calls for model repos: create a repo, validate a model
card's YAML front matter, pre-upload (every file goes inline, "regular" mode), commit (NDJSON,
base64 files), repo info and file tree at a revision, and ``resolve`` downloads (HEAD and GET,
with the commit and ETag headers the client checks). Repos live in memory as a list of commits;
a revision is a branch name (``main``) or a commit sha.
Every request is logged in ``FakeHub.requests``, so a test can assert that none was made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

__all__ = ["FakeHub"]


def _blob_id(data: bytes) -> str:
    """The git blob id the hub gives a (non-LFS) file as its oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, list[dict]] = {}  # repo id -> commits, oldest first
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code, body=b"", headers=None, head=False):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **(headers or {})}
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_HEAD(self):
                self._get(head=True)

            def do_GET(self):
                self._get(head=False)

            def _get(self, head):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                if path.startswith("/api/models/") and "/revision/" in path:
                    repo, rev = path[len("/api/models/") :].split("/revision/", 1)
                    commit = hub.commit(repo, rev)
                    if commit is None:
                        return self._reply(404, {"error": "Repository not found"},
                                           {"X-Error-Code": "RepoNotFound"})  # fmt: skip
                    return self._reply(200, {
                        "id": repo, "modelId": repo, "sha": commit["sha"], "private": False,
                        "siblings": [{"rfilename": f} for f in sorted(commit["files"])],
                    })  # fmt: skip
                if path.startswith("/api/models/") and "/tree/" in path:
                    repo, rest = path[len("/api/models/") :].split("/tree/", 1)
                    commit = hub.commit(repo, rest.split("/")[0])
                    if commit is None:
                        return self._reply(404, {"error": "Revision not found"},
                                           {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
                    return self._reply(200, [
                        {"type": "file", "path": f, "size": len(d), "oid": _blob_id(d)}
                        for f, d in sorted(commit["files"].items())
                    ])  # fmt: skip
                if "/resolve/" in path:
                    repo, rest = path.lstrip("/").split("/resolve/", 1)
                    rev, _, file = rest.partition("/")
                    commit = hub.commit(repo, rev)
                    if commit is None:
                        return self._reply(404, b"", {"X-Error-Code": "RepoNotFound"})
                    if file not in commit["files"]:
                        return self._reply(404, b"", {"X-Error-Code": "EntryNotFound",
                                                      "X-Repo-Commit": commit["sha"]})  # fmt: skip
                    data = commit["files"][file]
                    etag = f'"{_blob_id(data)}"'
                    return self._reply(200, data, {"X-Repo-Commit": commit["sha"], "ETag": etag},
                                       head=head)  # fmt: skip
                return self._reply(404, {"error": f"fake hub: no route {path}"})

            def do_POST(self):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"POST {path}")
                body = self._body()
                if path == "/api/repos/create":
                    spec = json.loads(body)
                    repo = f"{spec['organization']}/{spec['name']}" if spec.get(
                        "organization") else spec["name"]  # fmt: skip
                    if repo in hub.repos:
                        return self._reply(409, {"error": "You already created this model repo",
                                                 "url": f"{hub.url}/{repo}"})  # fmt: skip
                    hub.repos[repo] = []
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":  # the model card's front matter must parse
                    import yaml

                    text = json.loads(body)["content"]
                    head = text.split("---")[1] if text.startswith("---") else ""
                    try:
                        ok = isinstance(yaml.safe_load(head), dict)
                    except yaml.YAMLError:
                        ok = False
                    if not ok:
                        return self._reply(400, {"errors": [{"message": "invalid metadata"}]})
                    return self._reply(200, {"warnings": []})
                if path.startswith("/api/models/") and "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]})  # fmt: skip
                if path.startswith("/api/models/") and "/commit/" in path:
                    repo, rev = path[len("/api/models/") :].split("/commit/", 1)
                    if repo not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"},
                                           {"X-Error-Code": "RepoNotFound"})  # fmt: skip
                    parent = hub.commit(repo, rev)
                    files = dict(parent["files"]) if parent else {}
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(
                                item["value"]["content"]
                            )
                        elif item["key"] == "deletedFile":
                            files.pop(item["value"]["path"], None)
                    sha = hashlib.sha1(repr((repo, len(hub.repos[repo]), time.time())).encode())
                    commit = {"sha": sha.hexdigest(), "files": files}
                    hub.repos[repo].append(commit)
                    url = f"{hub.url}/{repo}/commit/{commit['sha']}"
                    return self._reply(200, {"commitUrl": url, "commitOid": commit["sha"],
                                             "pullRequestUrl": None})  # fmt: skip
                return self._reply(404, {"error": f"fake hub: no route {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def commit(self, repo: str, rev: str) -> dict | None:
        commits = self.repos.get(repo) or []
        if rev == "main":
            return commits[-1] if commits else None
        return next((c for c in commits if c["sha"] == rev), None)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
