"""No secret in the repository or the images: tokens, keys and passwords come from the environment.

Scans every file git tracks (what a clone or a build context can carry) for token- and
key-shaped strings, and checks that ``.env``, where a deployment keeps its secrets, can
reach neither git nor a build context.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

SECRET_PATTERNS = {
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    # random urlsafe base64 mixes cases and digits; a 43-letter NAME_IN_CAPS= is a variable, not a key
    "Fernet key (32 bytes, urlsafe base64)": re.compile(
        r"(?<![A-Za-z0-9_+/-])(?=[\w-]{0,42}[a-z])(?=[\w-]{0,42}[A-Z])(?=[\w-]{0,42}[0-9])[A-Za-z0-9_-]{43}="
        r"(?![A-Za-z0-9=])"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET_KEY|API_KEY")
# The one secret that may have a default: the database password of the compose network's
# postgres, which is never published (.env.example documents it).
INTERNAL_ONLY = {"POSTGRES_PASSWORD"}
REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:  # a deleted but still tracked file
        return None
    if b"\0" in data[:4096]:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def findings(text: str) -> list[tuple[str, str]]:
    return [(kind, m.group(0)[:12] + "...") for kind, pattern in SECRET_PATTERNS.items()
            for m in pattern.finditer(text)]


def test_the_patterns_catch_what_they_are_for():
    fernet = "Wd9tCXQkJH0qU8rRZ2h6y0oJrT0yYH3G8cYb0cM1sVY="
    assert findings(f"HF_TOKEN=hf_{'a1B2' * 9}") and findings(f"AIRFLOW__CORE__FERNET_KEY: {fernet}")
    assert findings(f"key = '{fernet}'")
    assert not findings("sha256:" + "ab" * 32) and not findings("AIRFLOW_FERNET_KEY=")  # hashes are not keys
    assert not findings("AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2")  # 43 capitals and '=': a variable


def test_no_secret_in_any_tracked_file_or_dockerfile():
    files = set(tracked_files()) | set(ROOT.glob("images/*/Dockerfile"))
    leaks = {}
    for path in sorted(files):
        if path.name == "test_secrets.py":  # this file spells the patterns out
            continue
        text = text_of(path)
        if text and (found := findings(text)):
            leaks[str(path.relative_to(ROOT))] = found
    assert leaks == {}


def test_dotenv_is_ignored_by_git():
    tracked_files()  # skips outside a checkout
    names = {p.relative_to(ROOT).as_posix() for p in tracked_files()}
    assert ".env" not in names and ".env.example" in names
    proc = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert proc.returncode == 0, ".env must be in .gitignore"


def dockerignored(name: str, ignore_file: Path | None = None) -> bool:
    """Whether .dockerignore keeps ``name`` (a top-level path) out of the build context: the last match wins."""
    excluded = False
    for line in (ignore_file or ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        candidates = {pattern, pattern[3:]} if pattern.startswith("**/") else {pattern}
        if pattern == "**" or any(fnmatch.fnmatchcase(name, p) for p in candidates):
            excluded = not negated
    return excluded


def test_dotenv_never_reaches_a_build_context():
    assert dockerignored(".env") and dockerignored(".env.local")
    assert not dockerignored("src") and not dockerignored("dags")  # the matcher is not blind
    # Every build is of the repository root, so the root's .dockerignore is the one that counts: compose's
    # own (the Airflow image) and images/build.sh's (every task image, also from the image-builder)...
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in {"x-airflow-common": compose["x-airflow-common"], **compose["services"]}.items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context).resolve() == ROOT, name
    build_sh = (ROOT / "images" / "build.sh").read_text()
    assert re.search(r'docker build .* -f "images/\$name/Dockerfile" -t "\$image" \.', build_sh)
    # ...unless BuildKit finds a Dockerfile's own ignore file (<Dockerfile>.dockerignore), which replaces it.
    for dockerfile in ROOT.glob("images/*/Dockerfile"):
        own = dockerfile.with_name("Dockerfile.dockerignore")
        assert not own.exists() or (dockerignored(".env", own) and dockerignored(".env.local", own)), own


def test_the_image_builder_sees_only_what_a_build_context_may_hold():
    """The image-builder runs images/build.sh on the checkout: it gets the paths the task images are built
    from, read-only, and nothing else (not the checkout whole: no .env, data, cache or .git in it)."""
    builder = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["image-builder"]
    mounted = set()
    for spec in builder["volumes"]:
        source, target, *options = spec.split(":")
        name = source.removeprefix("./").rstrip("/")
        assert options == ["ro"] and target == f"{builder['working_dir']}/{name}", spec  # the checkout's layout
        assert name not in ("", ".", ".env") and "/" not in name, spec
        assert name == ".dockerignore" or not dockerignored(name), spec  # nothing a build context leaves out
        mounted.add(name)
    # ... and everything images/build.sh and the task images' Dockerfiles read
    needed = {".dockerignore", "images"}
    for dockerfile in ROOT.glob("images/*/Dockerfile"):
        if dockerfile.parent.name == "airflow":  # compose builds that one itself
            continue
        text = dockerfile.read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
        for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) ", text, re.M):
            source = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], source)
            needed.add(source.split("/")[0])
    needed.add((ROOT / "requirements").name)  # the GPU ASR image's lock (ASR_GPU_REQUIREMENTS)
    assert needed <= mounted, needed - mounted


def test_no_secret_is_a_build_argument():
    for dockerfile in ROOT.glob("images/*/Dockerfile"):
        args = re.findall(r"^\s*(?:ARG|ENV)\s+(\w+)", dockerfile.read_text(), re.M)
        assert not [a for a in args if re.search(r"TOKEN|PASSWORD|SECRET|FERNET", a)], dockerfile
    build = (ROOT / "images" / "build.sh").read_text()
    assert not re.search(r"--build-arg\s+\"?(?:HF_|\w*TOKEN|\w*PASSWORD|\w*SECRET)", build)


def literal_secrets(environment: dict, where: str) -> list[str]:
    """Secret-named variables (and connection URLs) whose value is not a ``${VAR}`` reference without a default."""
    bad = []
    for key, value in (environment or {}).items():
        value = str(value).strip()
        passwords = [m["password"] for m in re.finditer(r"://[^:/@\s]+:(?P<password>[^@\s]+)@", value)]
        if SECRET_NAME.search(key):
            passwords.append(value)
        for password in passwords:
            ref = REFERENCE.fullmatch(password)
            has_default = ref is not None and ref["op"] in ("-", ":-") and ref["default"] != ""
            if (ref is None and password != "") or (has_default and ref["name"] not in INTERNAL_ONLY):
                bad.append(f"{where}: {key}")
    return bad


def test_literal_secret_detector():
    assert literal_secrets({"AIRFLOW_ADMIN_PASSWORD": "hunter2"}, "x")
    assert literal_secrets({"HF_TOKEN": "${HF_TOKEN:-hf_default}"}, "x")
    assert literal_secrets({"CONN": "postgresql://u:s3cret@db/x"}, "x")
    assert not literal_secrets({"HF_TOKEN": "${HF_TOKEN:-}", "P": "${P:?required}", "FERNET_KEY": "",
                                "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-airflow}",
                                "CONN": "postgresql://u:${POSTGRES_PASSWORD:-airflow}@db/x"}, "x")


def test_compose_takes_every_secret_from_the_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bad = []
    for name, service in {"x-airflow-common": compose["x-airflow-common"], **compose["services"]}.items():
        bad += literal_secrets(service.get("environment"), name)
        build = service.get("build")
        if isinstance(build, dict):  # a build argument would end up in the image's history
            assert not [a for a in build.get("args") or {} if SECRET_NAME.search(str(a))], name
    assert bad == []


def test_the_hugging_face_token_reaches_only_airflow():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-airflow-common"]["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"  # no default
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        # models: gated downloads; worker: Airflow's Celery worker, as the scheduler is with LocalExecutor (the
        # task containers it starts get an explicit environment, which never holds it:
        # tests/dags/test_dags.py::test_docker_tasks_are_locked_down)
        if name.startswith("airflow-") or name in ("doctor", "models", "worker"):
            assert "HF_TOKEN" in env, name  # through the shared Airflow environment
        else:
            assert "HF_TOKEN" not in env, name  # not the daemon, the image builder, or postgres
    example = {k: v for k, v in (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                                 if line and not line.startswith("#"))}
    assert example["HF_TOKEN"] == "" and example["AIRFLOW_FERNET_KEY"] == "" and example["AIRFLOW_ADMIN_PASSWORD"] == ""


# --- local mode: a stage process gets an allowlisted environment, never Airflow's secrets --------------

DAGS = ROOT / "dags"
# What Airflow's worker environment may hold in local mode, none of which a stage needs.
AIRFLOW_SECRETS = {
    "HF_TOKEN": "hf_" + "x" * 34,
    "HUGGING_FACE_HUB_TOKEN": "hf_" + "y" * 34,
    "AIRFLOW__CORE__FERNET_KEY": "a-fernet-key",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:s3cret@postgres/airflow",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt",
    "AIRFLOW__API__SECRET_KEY": "api",
    "AIRFLOW_CONN_KONSPEKT_DATA": '{"conn_type": "fs", "password": "pw"}',
    "AIRFLOW_CONN_S3": "aws://AKIAXXXX:secret@",
    "AIRFLOW_VAR_API_KEY": "var-secret",
    "AIRFLOW_ADMIN_PASSWORD": "admin-password",
    "KONSPEKT_ADMIN_PASSWORD": "admin-password",
    "POSTGRES_PASSWORD": "pg",
    "AWS_ACCESS_KEY_ID": "AKIAXXXXXXXXXXXXXXXX",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_SESSION_TOKEN": "aws-session",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/gcp.json",
    "AZURE_CLIENT_SECRET": "azure",
    "GITHUB_TOKEN": "ghp_x",
    "OPENAI_API_KEY": "sk-x",
    "DOCKER_HOST": "tcp://docker-proxy:2375",  # a stage never talks to a Docker daemon
    "KONSPEKT_DOCKER_URL": "tcp://docker-proxy:2375",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
}
# What a stage reads or its libraries need, kept when the worker has it.
STAGE_NEEDS = {
    "PATH": "/venv/bin:/usr/bin:/bin", "HOME": "/home/user", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "TZ": "UTC", "TMPDIR": "/tmp", "PYTHONPATH": "/src", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
    "KONSPEKT_WHISPER_CACHE": "/models/whisper", "NLTK_DATA": "/models/nltk",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
}


@pytest.fixture
def local_runner(monkeypatch, tmp_path):
    """konspekt_dags.local_runner with its settings on a temporary data root and cache."""
    monkeypatch.syspath_prepend(str(DAGS))
    monkeypatch.setenv("KONSPEKT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("KONSPEKT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    from konspekt_dags import local_runner as module
    from konspekt_dags.settings import Settings

    monkeypatch.setattr(module, "settings", Settings())
    return module


def polluted(monkeypatch) -> None:
    for key, value in {**AIRFLOW_SECRETS, **STAGE_NEEDS}.items():
        monkeypatch.setenv(key, value)


def check_stage_environment(env: dict, cache: Path) -> None:
    leaked = sorted(k for k in env if k in AIRFLOW_SECRETS or k.startswith(("AIRFLOW", "AWS_", "GOOGLE_", "AZURE_")))
    assert leaked == []
    assert not [k for k, v in env.items() if any(secret in v for secret in ("s3cret", "hf_xxx", "aws-secret"))]
    for key, value in STAGE_NEEDS.items():
        if key != "PATH":
            assert env.get(key) == value, key
    assert env["PATH"].startswith(STAGE_NEEDS["PATH"])
    # the cache as a task container has it (its image sets these), pointed at the local cache
    assert env["XDG_CACHE_HOME"] == str(cache) and env["HF_HOME"] == str(cache / "huggingface")
    assert env["TORCH_HOME"] == str(cache / "torch") and env["PYTHONUNBUFFERED"] == "1"


def test_a_local_stage_gets_no_secret_from_the_airflow_environment(local_runner, monkeypatch, tmp_path):
    polluted(monkeypatch)
    env = local_runner.stage_env()
    check_stage_environment(env, tmp_path / "cache")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "HF_HUB_OFFLINE" not in local_runner.stage_env()  # kept when set, never made up
    assert "CUDA_VISIBLE_DEVICES" not in local_runner.stage_env()


def test_a_local_stage_process_sees_only_the_allowlisted_environment(local_runner, monkeypatch, tmp_path):
    """A real process started by LocalStageOperator (SubprocessHook) from a polluted worker environment."""
    polluted(monkeypatch)
    monkeypatch.setenv("PATH", STAGE_NEEDS["PATH"] + ":" + os.environ.get("PATH", ""))
    monkeypatch.setenv("PYTHONPATH", STAGE_NEEDS["PYTHONPATH"])
    out = tmp_path / "data" / "env.json"
    dump = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
    op = local_runner.LocalStageOperator(task_id="print_env", command=["python", "-c", dump, "/data/env.json"],
                                         work_dir="/data", step="print_env")
    op.execute({})
    check_stage_environment(json.loads(out.read_text()), tmp_path / "cache")


def test_a_real_build_of_the_repository_root_leaves_every_dotenv_out(tmp_path):
    """The Docker engine's own reading of .dockerignore (not this file's matcher): a build context laid out
    like the checkout, with .env files at the top and inside the allowed folders, built for real."""
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True,
                                                         timeout=30).returncode != 0:
        pytest.skip("no Docker engine answers here (.ci/dockerd.sh start)")
    context = tmp_path / "context"
    for name in (".env", ".env.local", "src/.env", "images/.env.prod", "src/konspekt/ok.py", "pyproject.toml",
                 "data/input/talk.mp4", "cache/token", "airflow/config/airflow.cfg", ".git/config"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text("x\n")
    shutil.copy(ROOT / ".dockerignore", context / ".dockerignore")
    (context / "images" / "probe").mkdir()
    (context / "images" / "probe" / "Dockerfile").write_text("FROM scratch\nCOPY . /context/\n")
    tag = f"konspekt-context-probe:{os.getpid()}"
    build = subprocess.run(["docker", "build", "-q", "-f", "images/probe/Dockerfile", "-t", tag, "."], cwd=context,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    container = subprocess.run(["docker", "create", tag, "/none"], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        tar = subprocess.run(["docker", "export", container], capture_output=True, check=True, timeout=120).stdout
        names = {m.name.removeprefix("context/") for m in tarfile.open(fileobj=io.BytesIO(tar)).getmembers()
                 if m.isfile() and m.name.startswith("context/")}
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    assert {"src/konspekt/ok.py", "pyproject.toml", "images/probe/Dockerfile"} <= names  # the build saw the allowlist
    assert not [n for n in names if ".env" in n.rsplit("/", 1)[-1]], names
    assert not [n for n in names if n.split("/")[0] in ("data", "cache", "airflow", ".git")], names
