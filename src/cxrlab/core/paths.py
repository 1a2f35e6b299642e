"""Where cxrlab keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$CXRLAB_CACHE``, else ``$XDG_CACHE_HOME/cxrlab``,
    else ``~/.cache/cxrlab``."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("CXRLAB_CACHE"):
        return Path(os.environ["CXRLAB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "cxrlab"
