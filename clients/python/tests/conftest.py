"""Fixtures: a real mirrorhost (``MIRRORHOST_BIN``, else the debug build under
the Cargo target directory) and real Git remotes behind Basic auth."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from servers import GitHttpServer, Mirrorhost

ADMIN_TOKEN = "py-admin-token-0123456789"
PASSWORD = "upstream-pass-9f1c"
TOKEN = "dest-token-77ab40"

REPO = Path(__file__).resolve().parents[3]


def _target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def _binary() -> Path:
    named = os.environ.get("MIRRORHOST_BIN")
    binary = Path(named) if named else _target_dir() / "debug" / "mirrorhost"
    if not binary.is_file():
        raise RuntimeError(f"no mirrorhost binary at {binary}: run `cargo build` or set MIRRORHOST_BIN")
    return binary


@pytest.fixture
def remotes(tmp_path: Path) -> Iterator[GitHttpServer]:
    """Upstreams log in as ``mirror``/PASSWORD, destinations with TOKEN."""
    root = tmp_path / "remotes"
    root.mkdir()
    server = GitHttpServer(root, {("mirror", PASSWORD), ("*", TOKEN)})
    yield server
    server.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Mirrorhost]:
    # Compiled built-in plugins are shared between runs, as the Rust tests do.
    cache = _target_dir() / "tmp" / "plugin-cache"
    cache.mkdir(parents=True, exist_ok=True)
    host = Mirrorhost(_binary(), tmp_path / "data", ADMIN_TOKEN, cache)
    yield host
    host.stop()
