"""``--device auto|cpu|cuda`` -> "cpu" or "cuda", for every stage and training step.

What sees the GPU is the library that will use it: torch, or CTranslate2 in the ASR image,
which has no torch. Both are imported only here, when asked.
"""

from __future__ import annotations

import os

NVIDIA_DRIVER = ("/dev/nvidiactl", "/proc/driver/nvidia/version")  # what a machine or container with a GPU shows


def cuda_available(probe: str = "torch") -> bool:
    if not any(os.path.exists(p) for p in NVIDIA_DRIVER):
        return False  # no driver, no CUDA: asking torch would cost seconds of imports to learn the same
    if probe == "ctranslate2":
        try:
            import ctranslate2

            return ctranslate2.get_cuda_device_count() > 0
        except Exception:  # noqa: BLE001 - no CUDA runtime means CPU
            return False
    import torch

    return torch.cuda.is_available()


def pick_device(device: str, probe: str = "torch", strict: bool = False) -> str:
    """"auto" becomes "cuda" when ``probe`` sees a GPU, else "cpu". ``strict`` (training): an explicit
    "cuda" without a GPU fails here, saying why, instead of deep inside the library."""
    if device == "auto":
        return "cuda" if cuda_available(probe) else "cpu"
    if strict and device == "cuda" and not cuda_available(probe):
        raise RuntimeError(f"--device cuda, but {probe} sees no GPU (a CPU image, or no GPU passed to the container)")
    return device
