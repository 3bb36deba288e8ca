"""Paths needed before Django's settings load (the metrics directory must exist at import time)."""

from __future__ import annotations

import os
from pathlib import Path


def var_dir() -> Path:
    return Path(os.environ.get("TARIFA_VAR_DIR") or "var").resolve()


def metrics_dir() -> str:
    return os.environ.get("TARIFA_METRICS_DIR") or str(var_dir() / "metrics")
