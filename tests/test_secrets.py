"""No secret in the repository or the images: tokens, keys and passwords come from the environment.

Scans every file git tracks (what a clone or a build context can carry) for token- and
key-shaped strings, and checks that ``.env``, where a deployment keeps its secrets, can
reach neither git nor a build context.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

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


def dockerignored(name: str) -> bool:
    """Whether .dockerignore keeps ``name`` (a top-level path) out of the build context: the last match wins."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
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
        if name.startswith("airflow-") or name in ("doctor", "models"):  # models: gated downloads
            assert "HF_TOKEN" in env, name  # through the shared Airflow environment
        else:
            assert "HF_TOKEN" not in env, name  # not the daemon, the image builder, or postgres
    example = {k: v for k, v in (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                                 if line and not line.startswith("#"))}
    assert example["HF_TOKEN"] == "" and example["AIRFLOW_FERNET_KEY"] == "" and example["AIRFLOW_ADMIN_PASSWORD"] == ""
