"""The Airflow pools the stage tasks run in: ``python -m konspekt_dags.pools`` creates or resizes them.

The scheduler never starts a task whose pool does not exist, so every place that runs
the DAG creates them first from settings (compose's ``airflow-init``, ``airflow/run-local.sh``).
Running it again sets the sizes from the current settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from konspekt_dags.settings import settings


def pool_specs() -> dict[str, dict]:
    """``airflow pools import``'s format: name -> slots, description."""
    return {
        settings.gpu_pool: {"slots": settings.gpu_pool_slots, "include_deferred": False,
                            "description": "konspekt stages on the GPU (transcribe, summarize when KONSPEKT_GPU)"},
        settings.cpu_pool: {"slots": settings.cpu_pool_slots, "include_deferred": False,
                            "description": "konspekt stages on the CPU (memory: ~1-2 GB per slot)"},
    }


def main() -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="konspekt-pools-") as spec:
        json.dump(pool_specs(), spec)
        spec.flush()
        # The public CLI, so the pools land in whichever database this Airflow is configured for.
        proc = subprocess.run([sys.executable, "-m", "airflow", "pools", "import", spec.name])
    if proc.returncode == 0:
        print(", ".join(f"{name}={spec['slots']}" for name, spec in pool_specs().items()))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
