"""The datacenter's UUID: from the settings, or made once and kept in the state directory."""

from __future__ import annotations

import uuid
from pathlib import Path


def datacenter_uuid(configured: str, state_dir: Path) -> str:
    if configured:
        return str(uuid.UUID(configured))
    path = state_dir / "datacenter.uuid"
    try:
        return str(uuid.UUID(path.read_text(encoding="ascii").strip()))
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    made = str(uuid.uuid4())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n", encoding="ascii")
    tmp.replace(path)  # atomic: a crash never leaves a half-written identity
    return made
