"""What produced a result: the attnlib commit, library versions and the device, recorded with every result."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# distribution names; None in a result means "not installed"
LIBRARIES = ("torch", "transformers", "triton", "flash-linear-attention", "fla-core", "flash-attn", "papermill",
             "codecarbon", "nvidia-ml-py", "zeus")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def attnlib_commit() -> str | None:
    """`$ATTNLIB_COMMIT` where set (a tree that travels to a GPU machine may carry a stale .git, or none), else
    `git rev-parse HEAD` of the checkout (with `+dirty` when tracked files under attnlib/ differ), else None.
    The variable must name a full 40-digit commit: a short or mistyped one would be recorded on every result."""
    named = os.environ.get("ATTNLIB_COMMIT")
    if named:
        if not re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", named):
            raise ValueError(f"ATTNLIB_COMMIT: a full 40-digit commit (git rev-parse HEAD), got {named!r}")
        return named
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "attnlib"], cwd=REPO).returncode != 0
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def device_name() -> tuple[str, str | None]:
    """(the device's name, NVML's card UUID or None): `cpu` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    from .measurement.nvml import gpu_uuid

    return torch.cuda.get_device_name(), gpu_uuid(torch.cuda.current_device())


def provenance() -> dict[str, Any]:
    device, uuid = device_name()
    return {"attnlib_commit": attnlib_commit(), "versions": library_versions(), "python": platform.python_version(),
            "device": device, "device_uuid": uuid,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
