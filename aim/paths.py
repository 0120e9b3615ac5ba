"""Confinement of every path the AIM touches on behalf of a client.

The datacenter names files by strings; a string must never reach a file outside the
repository or the configured datastores. A path is accepted when, with every symlink
followed (dangling ones too, as a later open(O_CREAT) would follow them), it lies inside
the root it was given for. Pure functions over the filesystem's current state: the
caller uses the resolved path they return, not the string it was given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class PathEscape(ValueError):
    """A client-given path that is malformed or leaves its root."""


def _check_text(path: str) -> None:
    if not path:
        raise PathEscape("empty path")
    if "\0" in path:
        # The C library would cut the string at the NUL: the file opened is not the one
        # that was checked.
        raise PathEscape("NUL byte in path")
    # '..' is refused outright, even where it would stay inside: no legitimate client
    # sends one, and refusing is simpler to reason about than normalising.
    if any(part == ".." for part in path.split("/")):
        raise PathEscape(f"'..' in path: {path!r}")


def _resolved_root(root: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(root))


def _inside(candidate: Path, root: Path, *, allow_root: bool) -> bool:
    if candidate == root:
        return allow_root
    return candidate.is_relative_to(root)


def confine(root: str | os.PathLike[str], path: str, *, allow_root: bool = False) -> Path:
    """Resolve `path` (relative to `root`, or absolute and inside it) strictly inside `root`.

    Returns the fully resolved path. Raises PathEscape otherwise. `allow_root` accepts the
    root itself (a datastore given as a directory), refused by default (a file is wanted).
    """
    _check_text(path)
    real_root = _resolved_root(root)
    # An absolute path is taken as it is (and must land inside); a relative one is joined.
    # Joining an absolute path would silently drop the root: os.path.join's rule.
    joined = path if path.startswith("/") else f"{real_root}/{path}"
    # realpath (non-strict) follows every symlink it can, including a dangling final one,
    # and keeps the components that do not exist yet as they are.
    candidate = Path(os.path.realpath(joined))
    if not _inside(candidate, real_root, allow_root=allow_root):
        raise PathEscape(f"{path!r} is outside {os.fspath(root)!r}")
    return candidate


def confine_any(
    roots: Sequence[str | os.PathLike[str]], path: str, *, allow_root: bool = False
) -> tuple[Path, Path]:
    """Resolve an absolute `path` inside one of `roots`: (the resolved root, the path).

    Relative paths are refused: with several roots, there is no base to join them to.
    """
    _check_text(path)
    if not path.startswith("/"):
        raise PathEscape(f"{path!r} is not absolute")
    candidate = Path(os.path.realpath(path))
    # The deepest root first: a datastore nested in another belongs to the inner one.
    for real_root in sorted((_resolved_root(r) for r in roots), key=lambda p: -len(p.parts)):
        if _inside(candidate, real_root, allow_root=allow_root):
            return real_root, candidate
    raise PathEscape(f"{path!r} is outside every allowed root")


def child(directory: Path, name: str) -> Path:
    """`directory`/`name` for a single file name (a VM UUID, say): no separators at all."""
    _check_text(name)
    if "/" in name or name in (".",):
        raise PathEscape(f"{name!r} is not a plain file name")
    return confine(directory, name)
