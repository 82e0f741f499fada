"""A stand-in for a Kubernetes API server and its kubelet, on loopback, for the kubernetes runner's end-to-end
test (no cluster can be installed on the CI machine).

It answers the calls KubernetesPodOperator makes (create, read, list by label selector, patch and delete a
pod; its log; the namespace's events) and "runs" each pod as its kubelet would, but as a local process: the
container's command with the container paths under ``/data`` and ``/root/.cache`` mapped to the test's
folders. Before it starts one, it checks what a real node would enforce on these pods: the image is set, every
``/data`` path in the argv lies inside a volume mount of the pod (else the container could not see it), and
the lock-down fields are there. Every pod it was sent is kept in ``pods`` for the test to inspect.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

POD_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(labels: dict[str, str], selector: str) -> bool:
    """A Kubernetes label selector of ``k=v``, ``k!=v``, ``k`` and ``!k`` terms."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubeStandin:
    def __init__(self, data_root: Path, cache_dir: Path, python: str = sys.executable) -> None:
        self.data_root, self.cache_dir, self.python = Path(data_root), Path(cache_dir), python
        self.pods: dict[tuple[str, str], dict] = {}  # (namespace, name) -> the pod, status kept current
        self.sent: list[dict] = []  # every pod as it was created
        self.deleted: list[str] = []
        self.logs: dict[tuple[str, str], str] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KubeStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}]}))
        return path

    # --- the kubelet --------------------------------------------------------------------------------

    def _local(self, arg: str) -> str:
        for container_path, local in (("/data", self.data_root), ("/root/.cache", self.cache_dir)):
            if arg == container_path or arg.startswith(container_path + "/"):
                return str(local) + arg[len(container_path):]
        return arg

    def _refuse(self, pod: dict) -> str | None:
        """What a node (or admission) would refuse, or a container would fail on."""
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        if not container.get("image"):
            return "no image"
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            return "not runAsNonRoot"
        mounted = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for arg in container.get("command", []):
            if arg.startswith("/data/") and not any(arg == m or arg.startswith(m + "/") for m in mounted):
                return f"{arg} is not mounted in the pod"
        return None

    def _run(self, key: tuple[str, str]) -> None:
        pod = self.pods[key]
        container = pod["spec"]["containers"][0]
        problem = self._refuse(pod)
        if problem:
            code, out = 128, f"stand-in kubelet: {problem}\n"
        else:
            argv = [self._local(a) for a in container["command"]]
            if argv[0] == "python":
                argv[0] = self.python
            env = {**os.environ, **{e["name"]: e.get("value", "") for e in container.get("env", [])}}
            proc = subprocess.run(argv, env=env, capture_output=True, text=True)
            code, out = proc.returncode, proc.stdout + proc.stderr
        with self.lock:
            self.logs[key] = out
            pod["status"] = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                       "ready": False, "restartCount": 0,
                                       "state": {"terminated": {"exitCode": code, "startedAt": _now(),
                                                                "finishedAt": _now(),
                                                                "reason": "Completed" if code == 0 else "Error"}}}]}

    # --- the API ------------------------------------------------------------------------------------

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: object, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def _not_found(self, name: str) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "code": 404, "message": f'pods "{name}" not found'})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if re.match(r"^/api/v1/namespaces/[^/]+/events$", url.path):
                    return self._send(200, {"kind": "EventList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": "1"}, "items": []})
                m = POD_PATH.match(url.path)
                if not m:
                    return self._send(404, {"kind": "Status", "code": 404, "message": url.path})
                namespace, name, log = m.groups()
                if name is None:
                    with standin.lock:
                        items = [p for (ns, _), p in standin.pods.items() if ns == namespace
                                 and matches(p["metadata"].get("labels", {}), query.get("labelSelector", ""))]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": "1"}, "items": items})
                key = (namespace, name)
                if key not in standin.pods:
                    return self._not_found(name)
                if log:
                    while query.get("follow") == "true" and key not in standin.logs:
                        time.sleep(0.05)  # a followed log ends when the container does
                    text = standin.logs.get(key, "")
                    if query.get("timestamps") == "true":
                        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                        text = "".join(f"{stamp} {line}\n" for line in text.splitlines())
                    return self._send(200, text, "text/plain")
                with standin.lock:
                    return self._send(200, standin.pods[key])

            def do_POST(self) -> None:
                m = POD_PATH.match(urlparse(self.path).path)
                if not m or m.group(2):
                    return self._send(404, {"kind": "Status", "code": 404})
                pod = self._body()
                namespace = m.group(1)
                meta = pod.setdefault("metadata", {})
                meta.update(namespace=namespace, uid=f"uid-{len(standin.sent)}", resourceVersion="1",
                            creationTimestamp=_now())
                meta.setdefault("labels", {})
                pod["status"] = {"phase": "Running", "startTime": _now(), "containerStatuses": [
                    {"name": pod["spec"]["containers"][0]["name"], "image": pod["spec"]["containers"][0]["image"],
                     "imageID": "", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": _now()}}}]}
                key = (namespace, meta["name"])
                with standin.lock:
                    standin.pods[key] = pod
                    standin.sent.append(json.loads(json.dumps(pod)))
                threading.Thread(target=standin._run, args=(key,), daemon=True).start()
                self._send(201, pod)

            def do_PATCH(self) -> None:
                m = POD_PATH.match(urlparse(self.path).path)
                if not m or not m.group(2) or (m.group(1), m.group(2)) not in standin.pods:
                    return self._not_found(m.group(2) if m else "")
                patch = self._body()
                with standin.lock:
                    pod = standin.pods[(m.group(1), m.group(2))]
                    pod["metadata"]["labels"].update(patch.get("metadata", {}).get("labels", {}))
                    self._send(200, pod)

            def do_DELETE(self) -> None:
                m = POD_PATH.match(urlparse(self.path).path)
                if not m or not m.group(2):
                    return self._send(404, {"kind": "Status", "code": 404})
                with standin.lock:
                    pod = standin.pods.pop((m.group(1), m.group(2)), None)
                if pod is None:
                    return self._not_found(m.group(2))
                standin.deleted.append(m.group(2))
                self._send(200, pod)

        return Handler
