"""KONSPEKT_RUNNER=kubernetes: the one factory builds KubernetesPodOperator tasks from the same images and
argv, and the pods they would create, like the manifests in airflow/kubernetes/, validate against the
Kubernetes API's own schema (kubernetes-validate). No cluster runs here: see the README, "Scaling out"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("airflow.providers.cncf.kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from test_dags import DAGS, ROOT, load_dagbag  # noqa: E402

MANIFESTS = ROOT / "airflow" / "kubernetes"
K8S_VERSION = "1.33.0"  # a current release; the fields used here are stable since 1.25


def validate(document: dict) -> None:
    """Strict: a field the API does not know (a typo, a wrong nesting) fails as a missing one does."""
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.fixture
def k8s(monkeypatch, tmp_path):
    """The factory and settings in kubernetes mode, on a data root in tmp_path."""
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", "fs://")
    for key, value in {"RUNNER": "kubernetes", "DATA_ROOT": str(tmp_path), "GPU": "true"}.items():
        monkeypatch.setenv(f"KONSPEKT_{key}", value)
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(DAGS))
    from konspekt_dags import factory

    return factory


def pod_of(op) -> dict:
    """The pod the operator would create, as the JSON the API server gets."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(None, dry_run=True))


def mounts(pod: dict) -> dict[str, tuple[str, str | None, bool]]:
    container = pod["spec"]["containers"][0]
    return {m["mountPath"]: (m["name"], m.get("subPath"), m.get("readOnly", False))
            for m in container["volumeMounts"]}


def test_every_stage_of_both_dags_is_a_locked_down_pod(monkeypatch, tmp_path):
    from konspekt import registry

    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="kubernetes")
    from konspekt_dags.locked_pod import StagePodOperator

    assert bag.import_errors == {}
    seen = set()
    for dag_id, stages in (("lecture_to_pdf", registry.LECTURE), ("train_asr", registry.TRAINING)):
        dag = bag.dags[dag_id]
        for stage in stages:
            op = next(t for t in dag.tasks if t.task_id.rpartition(".")[2] == stage.task)
            assert op.operator_class is StagePodOperator or isinstance(op, StagePodOperator), op.task_id
            kwargs = getattr(op, "partial_kwargs", None) or op.__dict__
            assert kwargs["image"] == f"konspekt-{stage.image}:latest"
            assert kwargs["cmds"][:3] == ["python", "-m", stage.module]  # the argv itself, never a shell string
            assert kwargs["automount_service_account_token"] is False
            assert kwargs["labels"]["konspekt.io/network"] == "none"
            skip = kwargs["skip_on_exit_code"]
            skip = set(skip if isinstance(skip, (list, tuple, set)) else [skip] if skip is not None else [])
            assert skip == (set() if stage.is_training else {2}), op.task_id  # bad input: skipped, not retried
            seen.add(stage.name)
    assert seen == {s.name for s in registry.all_stages()}


def test_a_video_stage_pod_sees_its_own_folder_and_validates(k8s, tmp_path):
    video = "/data/processing/manual__2026-12-03/lecture-01"
    op = k8s.stage_task("transcribe", video, "--model", "small", "--force", "false")
    pod = pod_of(op)
    validate(pod)

    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "konspekt.stages.transcribe", "--video-dir", video,
                                    "--model", "small", "--force", "false"]
    assert not container.get("args")  # no arguments to an entrypoint: the command is the whole argv
    assert mounts(pod) == {
        video: ("data", "processing/manual__2026-12-03/lecture-01", False),
        f"{video}/source": ("data", "processing/manual__2026-12-03/lecture-01/source", True),  # the user's file
        "/root/.cache": ("cache", None, True),
        "/tmp": ("tmp", None, False),
    }
    assert (tmp_path / "processing" / "manual__2026-12-03" / "lecture-01").is_dir()  # made by Airflow, not as root
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "konspekt-data"}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "konspekt-cache", "readOnly": True}
    assert "emptyDir" in volumes["tmp"]

    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 50000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert spec["automountServiceAccountToken"] is False and spec.get("hostNetwork") in (None, False)
    assert spec["restartPolicy"] == "Never" and pod["metadata"]["namespace"] == "konspekt"
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert resources["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}  # KONSPEKT_GPU=true: ASR asks for one


def test_a_cpu_stage_asks_for_no_gpu(k8s):
    pod = pod_of(k8s.stage_task("features", "/data/processing/r/v"))
    validate(pod)
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"memory": "4Gi"}


@pytest.mark.parametrize("work_dir", ["/data/processing/../../etc", "/data/processing/r", "/data/output/r/v",
                                      "/etc/passwd", "relative/path"])
def test_a_folder_outside_its_place_is_never_mounted(k8s, tmp_path, work_dir):
    pod = pod_of(k8s.stage_task("extract_audio", work_dir))
    validate(pod)
    assert set(mounts(pod)) == {"/root/.cache", "/tmp"}  # the stage then reports the missing folder itself
    assert not (tmp_path / "etc").exists()


def test_a_training_step_sees_its_run_its_outputs_and_its_dataset_read_only(k8s):
    run = "/data/train_runs/manual__2026-12-03"
    pod = pod_of(k8s.stage_task("training.read_data", run, "--dataset", "/data/train/lectures", bad_input="fail"))
    validate(pod)
    assert mounts(pod) == {
        run: ("data", "train_runs/manual__2026-12-03", False),
        "/data/logs/manual__2026-12-03": ("data", "logs/manual__2026-12-03", False),
        "/data/models/manual__2026-12-03": ("data", "models/manual__2026-12-03", False),
        "/data/train_cache": ("data", "train_cache", False),
        "/data/train/lectures": ("data", "train/lectures", True),
        "/root/.cache": ("cache", None, True),
        "/tmp": ("tmp", None, False),
    }


@pytest.mark.parametrize("user", ["0:0", "root", "0", "airflow"])
def test_stage_pods_never_run_as_root(k8s, user):
    with pytest.raises(ValueError, match="KONSPEKT_K8S_USER"):
        k8s.pod_lockdown(user)


def manifests() -> list[dict]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name != "values.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_the_manifests_validate_and_agree_with_the_settings(k8s):
    from konspekt_dags.settings import settings

    docs = manifests()
    for doc in docs:
        validate(doc)
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert ("Namespace", settings.k8s_namespace) in kinds
    assert all(d["metadata"].get("namespace") == settings.k8s_namespace for d in docs if d["kind"] != "Namespace")
    for claim in (settings.k8s_data_pvc, settings.k8s_cache_pvc):
        assert kinds[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]  # many nodes
    policy = kinds[("NetworkPolicy", "konspekt-stages-no-network")]["spec"]
    assert policy["podSelector"]["matchLabels"] == {k8s.NETWORK_LABEL: "none"}
    assert policy["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in policy and "egress" not in policy
    rules = kinds[("Role", "konspekt-stage-pods")]["rules"]
    assert {"create", "delete", "watch"} <= set(next(r for r in rules if r["resources"] == ["pods"])["verbs"])
    assert any(r["resources"] == ["pods/log"] for r in rules)
    binding = kinds[("RoleBinding", "konspekt-stage-pods")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "airflow-worker",
                                    "namespace": settings.k8s_namespace}]


def test_the_helm_values_run_konspekt_in_kubernetes_mode_on_the_same_claims(k8s):
    from konspekt_dags.settings import settings

    values = yaml.safe_load((MANIFESTS / "values.yaml").read_text())
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["KONSPEKT_RUNNER"] == "kubernetes"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in values["volumes"]}
    at = {m["mountPath"]: claims[m["name"]] for m in values["volumeMounts"]}
    assert at == {env["KONSPEKT_DATA_ROOT"]: settings.k8s_data_pvc, env["KONSPEKT_CACHE_DIR"]: settings.k8s_cache_pvc}
    assert "konspekt_dags.pools" in " ".join(values["scheduler"]["args"])  # pools exist before the scheduler
    assert values["executor"] == "KubernetesExecutor" and values["images"]["airflow"]["repository"]
    uid, gid = (int(x) for x in settings.k8s_user.split(":"))
    assert (uid, gid) == (50000, 0)  # the chart's Airflow user, which writes the folders the pods work in
    example_pod = pod_of(k8s.stage_task("render_pdf", "/data/processing/r/v"))
    assert example_pod["metadata"]["namespace"] == settings.k8s_namespace
    assert Path(env["KONSPEKT_DATA_ROOT"]).is_absolute()


def test_the_schema_check_catches_a_wrong_field(k8s):
    """The validation above can fail: a misspelt or misplaced field is an error, as the API server's is."""
    pod = pod_of(k8s.stage_task("outline", "/data/processing/r/v"))
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)
    pod = pod_of(k8s.stage_task("outline", "/data/processing/r/v"))
    pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


# --- the api-server's egress (issue 30, item 2): the database and DNS, nothing else ------------------

API_SERVER_POD = {"tier": "airflow", "component": "api-server", "release": "airflow"}  # the official chart's labels


def network_policy(name: str):
    """The manifest as the kubernetes client's model (V1NetworkPolicy): its field names, its nesting."""
    from kubernetes.client import ApiClient, V1NetworkPolicy

    doc = next(d for d in manifests() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)
    validate(doc)
    policy = ApiClient()._ApiClient__deserialize(doc, "V1NetworkPolicy")
    assert isinstance(policy, V1NetworkPolicy)
    return policy


def selects(selector, labels: dict[str, str]) -> bool:
    return selector is not None and all(labels.get(k) == v for k, v in (selector.match_labels or {}).items()) \
        and not selector.match_expressions


def egress_allowed(policy, namespace: str, labels: dict[str, str], port: int, protocol: str = "TCP") -> bool:
    """NetworkPolicy semantics for one connection from a selected pod (same namespace as the policy unless a
    namespaceSelector says otherwise; a peer with both selectors needs both, as the API server reads it)."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in policy.spec.egress or []:
        ports_ok = not rule.ports or any(p.port == port and (p.protocol or "TCP") == protocol for p in rule.ports)
        for peer in rule.to or []:
            assert peer.ip_block is None  # no address range: only the pods named
            in_namespace = selects(peer.namespace_selector, ns_labels) if peer.namespace_selector \
                else namespace == policy.metadata.namespace
            pod_ok = selects(peer.pod_selector, labels) if peer.pod_selector else True
            if in_namespace and pod_ok and ports_ok:
                return True
    return False


def test_the_api_server_may_reach_only_its_database_and_dns(k8s):
    from konspekt_dags.settings import settings

    policy = network_policy("konspekt-api-server-egress")
    assert policy.metadata.namespace == settings.k8s_namespace
    assert selects(policy.spec.pod_selector, API_SERVER_POD) and policy.spec.pod_selector.match_labels == API_SERVER_POD
    assert policy.spec.policy_types == ["Egress"]  # default-deny egress for it; its ingress is the UI's
    assert all(rule.to and rule.ports for rule in policy.spec.egress)  # an empty `to` or ports would be "any"
    ns = settings.k8s_namespace
    postgres = {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": "airflow"}
    pgbouncer = {"tier": "airflow", "component": "pgbouncer", "release": "airflow"}
    dns = {"k8s-app": "kube-dns"}
    assert egress_allowed(policy, ns, postgres, 5432)
    assert egress_allowed(policy, ns, pgbouncer, 6543)
    assert egress_allowed(policy, "kube-system", dns, 53, "UDP") and egress_allowed(policy, "kube-system", dns, 53)
    # ...and nothing else: the Kubernetes API, the stage pods, the workers' log servers, other namespaces, ports
    assert not egress_allowed(policy, "default", {"component": "apiserver", "provider": "kubernetes"}, 443)
    assert not egress_allowed(policy, ns, {k8s.NETWORK_LABEL: "none"}, 80)
    assert not egress_allowed(policy, ns, {"tier": "airflow", "component": "worker", "release": "airflow"}, 8793)
    assert not egress_allowed(policy, ns, postgres, 22) and not egress_allowed(policy, "other", postgres, 5432)
    assert not egress_allowed(policy, ns, dns, 53, "UDP")  # a kube-dns look-alike outside kube-system
    assert not egress_allowed(policy, "kube-system", {"k8s-app": "metrics-server"}, 53, "UDP")
    # the pods it names carry the chart's labels: the same release the RBAC binding names
    binding = next(d for d in manifests() if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == f"{API_SERVER_POD['release']}-worker"
