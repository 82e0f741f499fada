"""The CI's own Docker engine (.ci/dockerd.sh): a unix socket only root can use, no TCP port, and
never a daemon someone else started in its place.

A dockerd on tcp://127.0.0.1:2375 answers every local user (root on this machine to anyone who
can connect), and any local user can listen on 2375 first and pose as the engine CI builds and
runs on. So ours listens on a unix socket, mode 0660 root:root (``--group root``), and ``ensure``
reuses only the engine of its PID file, or a daemon on a socket only root can have made.

The script runs here with stand-ins for ``dockerd`` and ``docker`` (no engine needed); the last
test checks the real engine when ``.ci/dockerd.sh`` started one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERD_SH = ROOT / ".ci" / "dockerd.sh"
DOCKER_E2E = ROOT / ".ci" / "docker-e2e.sh"
SOCKET = "/var/run/docker.sock"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the socket's owner is root only when root runs it")


def code(path: Path) -> str:
    """A shell script without its comments (a comment may say what the code must not do)."""
    lines = []
    for line in path.read_text().splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in a line of a longer command: keep it as it is
            words = [line]
        lines.append(" ".join(words))
    return "\n".join(lines)


def dockerd_argv() -> list[str]:
    """The dockerd command line .ci/dockerd.sh runs (continuation lines joined, redirections dropped)."""
    text = DOCKERD_SH.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if re.match(r"\s*dockerd\s", line))
    return [w for w in shlex.split(line, comments=True) if not re.match(r"^[0-9]*[<>]", w) and w != "&"]


def test_our_dockerd_listens_on_a_root_only_unix_socket_and_no_tcp_port():
    argv = dockerd_argv()
    hosts = [argv[i + 1] for i, word in enumerate(argv) if word in ("-H", "--host")]
    assert hosts and all(h.startswith("unix://") or h == '"$DOCKER_URL"' or h == "$DOCKER_URL" for h in hosts), argv
    assert not any("tcp" in word for word in argv), argv
    assert argv[argv.index("--group") + 1] == "root"  # the socket: 0660 root:root, not root:docker
    assert "--pidfile" in argv
    for script in (DOCKERD_SH, DOCKER_E2E):  # neither the engine nor the tests reach for TCP
        assert not re.search(r"(?:-H|--host|DOCKER_URL=|DOCKER_HOST=)\s*\S*tcp:|2375", code(script)), script
    assert "tcp://" not in code(DOCKER_E2E)
    assert re.search(r"^DOCKER_URL=unix://", code(DOCKER_E2E), re.M)


# --- the script against stand-ins: a fake dockerd (a real unix socket) and a fake docker CLI -------

FAKE_DOCKERD = """#!{python}
# records its argv, then serves a unix socket as dockerd would: mode 0660, owner root, --group's group
import grp, json, os, signal, socket, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKERD_ARGV"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
path = next(args[i + 1] for i, a in enumerate(args) if a == "-H" and args[i + 1].startswith("unix://"))[7:]
group = args[args.index("--group") + 1] if "--group" in args else "docker"
if os.path.exists(path):
    os.unlink(path)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chmod(path, 0o660)
os.chown(path, 0, grp.getgrnam(group).gr_gid)
server.listen()
with open(args[args.index("--pidfile") + 1], "w") as fh:
    fh.write(str(os.getpid()))
def bye(*_):
    os.unlink(path)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
while True:
    server.accept()[0].close()
"""

# `docker info`: a daemon answers on 127.0.0.1:2375 (someone else's, or one posing as ours), and on a
# unix socket when something listens there
FAKE_DOCKER = """#!/bin/sh
case "$DOCKER_HOST" in
  tcp://127.0.0.1:2375|tcp://localhost:2375) exit 0 ;;
  unix://*) exec {python} -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' \
              "${{DOCKER_HOST#unix://}}" 2>/dev/null ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def fake_engine(tmp_path):
    bin_dir, run = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    run.mkdir(mode=0o755)
    for name, text in (("dockerd", FAKE_DOCKERD), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               KONSPEKT_CI_DOCKERD_PIDFILE=str(run / "dockerd.pid"),
               KONSPEKT_CI_DOCKERD_LOG=str(tmp_path / "dockerd.log"),
               KONSPEKT_CI_DOCKERD_SOCKET=str(run / "docker.sock"), FAKE_DOCKERD_ARGV=str(tmp_path / "argv"))
    env.pop("DOCKER_HOST", None)

    def script(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(DOCKERD_SH), action], env=env, capture_output=True, text=True, timeout=120)

    script.run, script.tmp = run, tmp_path
    yield script
    script("stop")


@needs_root
def test_ensure_starts_its_own_engine_when_only_tcp_answers(fake_engine):
    """Something answers on 127.0.0.1:2375: not ours, so ensure starts our engine on the socket instead."""
    proc = fake_engine("ensure")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"started \d+", proc.stdout.strip()), proc.stdout
    pid = int(proc.stdout.split()[1])
    argv = json.loads((fake_engine.tmp / "argv").read_text().splitlines()[-1])
    assert not any("tcp" in word for word in argv) and argv[argv.index("--group") + 1] == "root", argv
    assert argv[argv.index("-H") + 1] == f"unix://{fake_engine.run / 'docker.sock'}"
    st = os.stat(fake_engine.run / "docker.sock")
    assert stat.S_ISSOCK(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, 0)
    assert fake_engine("running").returncode == 0
    assert fake_engine("ensure").stdout.strip() == "reused"  # ours, by its PID file
    assert fake_engine("stop").returncode == 0 and fake_engine("running").returncode != 0
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (fake_engine.run / "docker.sock").exists()


@needs_root
def test_ensure_reuses_no_daemon_on_a_socket_others_could_have_made(fake_engine):
    """A daemon we did not start answers on the socket: reused only when the socket is root's, in a
    folder only root writes (the machine's own engine); refused otherwise, and never signalled."""
    assert fake_engine("start").returncode == 0
    pid = (fake_engine.run / "dockerd.pid").read_text()
    (fake_engine.run / "dockerd.pid").unlink()  # now it is a daemon some other way started
    proc = fake_engine("ensure")
    assert (proc.returncode, proc.stdout.strip()) == (0, "reused"), proc.stderr
    os.chown(fake_engine.run / "docker.sock", 1000, 1000)  # a socket a user made
    proc = fake_engine("ensure")
    assert proc.returncode != 0 and "docker.sock" in proc.stderr and proc.stdout.strip() == "", proc
    os.chown(fake_engine.run / "docker.sock", 0, 0)
    os.chmod(fake_engine.run, 0o777)  # a folder anyone can write to: anyone could have put it there
    proc = fake_engine("ensure")
    assert proc.returncode != 0 and proc.stdout.strip() == "", proc
    assert os.path.exists(f"/proc/{pid}")  # stop never signals a daemon it did not start...
    assert fake_engine("stop").returncode == 0 and os.path.exists(f"/proc/{pid}")
    os.kill(int(pid), 15)  # ...so this test stops its stand-in itself


@needs_root
def test_start_refuses_a_socket_that_is_not_root_only(fake_engine, tmp_path):
    """dockerd without --group root makes a root:docker socket (everyone in `docker` is root): start says so."""
    grp = pytest.importorskip("grp")
    try:
        grp.getgrnam("docker")
    except KeyError:
        pytest.skip("no docker group here")
    (tmp_path / "bin" / "dockerd").write_text(FAKE_DOCKERD.format(python=sys.executable).replace(
        'group = args[args.index("--group") + 1] if "--group" in args else "docker"', 'group = "docker"'))
    proc = fake_engine("start")
    assert proc.returncode != 0 and "660 root:root" in proc.stderr, proc


# --- the real engine, when .ci/dockerd.sh started one (.ci/docker-e2e.sh, or by hand) ----------------

def listening_tcp_inodes() -> dict[int, int]:
    """socket inode -> port, for every listening TCP socket on this machine."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # LISTEN
                inodes[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return inodes


@needs_root
def test_the_running_ci_engine_is_root_only_and_on_no_tcp_port():
    proc = subprocess.run(["bash", str(DOCKERD_SH), "running"],
                          env={**os.environ, "KONSPEKT_CI_DOCKERD_SOCKET": SOCKET})
    if proc.returncode != 0:
        pytest.skip("no engine started by .ci/dockerd.sh runs here")
    pid = Path(os.environ.get("KONSPEKT_CI_DOCKERD_PIDFILE", "/var/run/konspekt-ci-dockerd.pid")).read_text().strip()
    st = os.stat(SOCKET)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, 0)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert not any("tcp" in word for word in argv), argv
    own = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            own.add(int(target[8:-1]))
    listening = listening_tcp_inodes()
    assert {listening[i] for i in own if i in listening} == set()  # dockerd itself listens on no TCP port
    assert 2375 not in listening.values()
