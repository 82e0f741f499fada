"""``--device auto`` on a machine without a GPU: "cpu", without importing torch to find out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from konspekt import devices


def test_no_driver_means_cpu_without_asking_the_libraries(monkeypatch):
    monkeypatch.setattr(devices, "NVIDIA_DRIVER", ("/nonexistent/nvidiactl",))
    assert devices.pick_device("auto") == "cpu" and devices.pick_device("auto", "ctranslate2") == "cpu"
    with pytest.raises(RuntimeError, match="sees no GPU"):
        devices.pick_device("cuda", strict=True)
    assert devices.pick_device("cuda") == "cuda"  # asked for by name: the library will say if it cannot


def test_auto_does_not_import_torch_where_no_driver_is_visible():
    code = ("import sys; from konspekt import devices; devices.NVIDIA_DRIVER = ('/nonexistent',); "
            "print(devices.pick_device('auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["cpu", "False"]
