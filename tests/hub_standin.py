"""A local stand-in for the few Hub endpoints an upload uses, for tests on machines without Hub access.

huggingface_hub's own client code runs unchanged (create_repo -> validate-yaml -> preupload -> commit) against
`HF_ENDPOINT=http://127.0.0.1:<port>`; the stand-in answers those calls, keeps what was committed in
memory, and records every request (an unexpected one gets a 404 and shows up in `requests`). It tells the
client to send every file inline ("regular" upload mode), so the LFS/xet transfer of large files is the one
part of a real push it does not exercise.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class HubStandIn:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict] = {}  # (type, id) -> {"private": ..., "files": {path: bytes}}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: set[str] = set()
        self.validated: list[str] = []  # README contents sent to /api/validate-yaml
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._reply(404, {"error": f"stand-in: no GET {self.path}"})

            def do_POST(self):
                hub.requests.append(("POST", self.path))
                hub.authorizations.add(self.headers.get("authorization", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                base = f"http://{self.headers['Host']}"
                if path == "/api/validate-yaml":  # README metadata: the front matter must be a YAML mapping
                    content = json.loads(body)["content"]
                    hub.validated.append(content)
                    match = re.match(r"---\n(.*?)\n---", content, re.S)
                    try:
                        ok = match is None or isinstance(yaml.safe_load(match.group(1)), dict)
                    except yaml.YAMLError:
                        ok = False
                    return self._reply(200 if ok else 400, {"errors": [] if ok else [{"message": "invalid YAML"}], "warnings": []})
                if path == "/api/repos/create":
                    spec = json.loads(body)
                    repo_id = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
                    kind = spec.get("type") or "model"
                    hub.repos.setdefault((kind, repo_id), {"visibility": spec.get("visibility"), "files": {}})
                    prefix = "" if kind == "model" else f"{kind}s/"
                    return self._reply(200, {"url": f"{base}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})
                m = re.fullmatch(r"/api/(models|datasets|spaces)/(.+)/(preupload|commit)/([^/]+)", path)
                if not m or (m.group(1)[:-1], m.group(2)) not in hub.repos:
                    return self._reply(404, {"error": f"stand-in: no POST {path}"})
                kind, repo_id, action = m.group(1)[:-1], m.group(2), m.group(3)
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]})
                stored = hub.repos[(kind, repo_id)]["files"]
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        value = item["value"]
                        content = value["content"]
                        stored[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    elif item["key"] == "lfsFile":
                        return self._reply(400, {"error": "stand-in: LFS files are not supported"})
                oid = f"{len(hub.requests):040x}"
                prefix = "" if kind == "model" else f"{kind}s/"
                return self._reply(200, {"commitUrl": f"{base}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, kind: str = "model") -> dict[str, bytes]:
        return self.repos[(kind, repo_id)]["files"]
