"""The inference DAG in kubernetes mode, through the provider's own KubernetesPodOperator, against a stand-in
API server and kubelet (tests/kube_standin.py; no cluster can be installed here).

A good lecture and a broken file go through `airflow dags test` with KONSPEKT_RUNNER=kubernetes: every stage
is sent as a pod, which the stand-in runs as a local process with the pod's own mounts checked. The good
lecture must become a PDF, the broken file must be quarantined (exit code 2 skips its stages), succeeded
pods are deleted and failed ones kept, and each pod mounts only its own video's folders.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import airflow_env, dags_test
from kube_standin import KubeStandin

pytest.importorskip("airflow.providers.cncf.kubernetes")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def k8s_run(tmp_path_factory, lecture_mp4, silent_video, tiny_en_model):
    base = tmp_path_factory.mktemp("k8s")
    data, cache = base / "data", base / "cache"
    (data / "input").mkdir(parents=True)
    cache.mkdir()
    shutil.copy(lecture_mp4, data / "input" / "lecture one.mp4")
    shutil.copy(silent_video, data / "input" / "no sound.mp4")
    with KubeStandin(data, cache) as standin:
        conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(standin.kubeconfig(base / "kube.json"))}}
        env = airflow_env(base, data, KONSPEKT_RUNNER="kubernetes", KONSPEKT_K8S_CONN_ID="kube_standin",
                          AIRFLOW_CONN_KUBE_STANDIN=json.dumps(conn), KONSPEKT_WHISPER_MODEL=tiny_en_model)
        proc = dags_test(env)
        (base / "dags-test.log").write_text(proc.stdout + proc.stderr)
        return data, proc, standin


def test_the_lecture_is_published_through_pods(k8s_run):
    data, proc, standin = k8s_run
    out = data / "output" / "lecture one"
    assert (out / "report.pdf").is_file(), proc.stdout[-4000:] + proc.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(s["status"] == "ok" for s in manifest["stages"].values())
    stages = {p["metadata"]["labels"]["konspekt.io/stage"] for p in standin.sent}
    assert stages == {"extract_audio", "transcribe", "features", "summarize", "outline", "render_pdf"}


def test_a_bad_file_is_quarantined_and_its_failed_pod_kept(k8s_run):
    data, _, standin = k8s_run
    assert (data / "failed" / "no sound" / "error.json").is_file()
    kept = [name for (_, name), pod in standin.pods.items() if pod["status"]["phase"] == "Failed"]
    assert kept and all(name not in standin.deleted for name in kept)  # kept for `kubectl describe`
    assert len(standin.deleted) >= 6  # each succeeded pod of the good lecture


def test_each_pod_is_locked_down_and_sees_only_its_own_video(k8s_run):
    _, _, standin = k8s_run
    for pod in standin.sent:
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        video = container["command"][container["command"].index("--video-dir") + 1]
        data_mounts = [m for m in container["volumeMounts"] if m["name"] == "data"]
        assert {m["mountPath"] for m in data_mounts} == {video, f"{video}/source"}
        assert all(m.get("readOnly") for m in data_mounts if m["mountPath"].endswith("/source"))
