"""aim.paths: every client-given path stays inside its root, symlinks followed."""

from __future__ import annotations

from pathlib import Path

import pytest

from aim.paths import PathEscape, child, confine, confine_any


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a file, a subfolder, symlinks in and out, and a sibling outside/."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "disk.img").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    (root / "link-in").symlink_to(root / "sub")
    (root / "link-out").symlink_to(tmp_path / "outside")
    (root / "file-out").symlink_to(tmp_path / "outside" / "secret")
    (root / "dangling-out").symlink_to(tmp_path / "outside" / "not-yet")
    (root / "relative-out").symlink_to("../outside")
    (tmp_path / "root-link").symlink_to(root)
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("sub/disk.img", "sub/disk.img"),
        ("./sub//disk.img", "sub/disk.img"),
        ("sub/new.img", "sub/new.img"),  # need not exist yet
        ("new/deeper/x.img", "new/deeper/x.img"),
        ("link-in/disk.img", "sub/disk.img"),  # a symlink that stays inside is fine
    ],
)
def test_relative_paths_inside(tree: Path, path: str, expected: str) -> None:
    assert confine(tree, path) == tree.resolve() / expected


def test_absolute_path_inside_is_accepted(tree: Path) -> None:
    assert confine(tree, str(tree / "sub" / "disk.img")) == tree / "sub" / "disk.img"


def test_root_given_through_a_symlink(tree: Path) -> None:
    # The configured root itself may be a symlink (/opt/vm_repository -> /mnt/nfs).
    assert confine(tree.parent / "root-link", "sub/disk.img") == tree / "sub" / "disk.img"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "..",
        "../outside/secret",
        "sub/../../outside/secret",
        "sub/../disk.img",  # stays inside, still refused: '..' never legitimate
        "sub/..",
        "/etc/passwd",
        "/",
        "sub/disk.img\0.txt",
        "\0",
        "link-out/secret",
        "link-out",
        "file-out",
        "dangling-out",  # open(O_CREAT) would follow it and write outside
        "relative-out/secret",
        ".",  # the root itself, where a file is wanted
    ],
)
def test_escapes_refused(tree: Path, path: str) -> None:
    with pytest.raises(PathEscape):
        confine(tree, path)


def test_absolute_path_to_a_sibling_with_the_root_as_prefix(tree: Path) -> None:
    # /x/root-evil starts with the string /x/root: a prefix test on strings would pass it.
    (tree.parent / "root-evil").mkdir()
    with pytest.raises(PathEscape):
        confine(tree, str(tree.parent / "root-evil" / "f"))


def test_root_allowed_only_when_asked(tree: Path) -> None:
    assert confine(tree, ".", allow_root=True) == tree.resolve()
    assert confine(tree, str(tree), allow_root=True) == tree.resolve()


def test_confine_any_picks_the_root(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (b / "inner").mkdir(parents=True)
    a.mkdir()
    assert confine_any([a, b], str(b / "x.img")) == (b, b / "x.img")
    assert confine_any([a, b], str(a), allow_root=True) == (a, a)
    # Nested roots: the innermost wins.
    assert confine_any([b, b / "inner"], str(b / "inner" / "y")) == (b / "inner", b / "inner" / "y")


@pytest.mark.parametrize("path", ["relative/x.img", "", "/elsewhere/x", "/a/../b/x", "/a/x\0"])
def test_confine_any_refuses(tmp_path: Path, path: str) -> None:
    roots = [tmp_path / "a", tmp_path / "b"]
    for r in roots:
        r.mkdir()
    path = path.replace("/a/", f"{tmp_path}/a/").replace("/elsewhere", f"{tmp_path}/elsewhere")
    with pytest.raises(PathEscape):
        confine_any(roots, path)


def test_confine_any_refuses_the_root_by_default(tmp_path: Path) -> None:
    with pytest.raises(PathEscape):
        confine_any([tmp_path], str(tmp_path))


@pytest.mark.parametrize("name", ["a/b", ".", "..", "", "x\0"])
def test_child_refuses_anything_but_a_plain_name(tree: Path, name: str) -> None:
    with pytest.raises(PathEscape):
        child(tree, name)


def test_child_refuses_a_symlinked_name_leading_out(tree: Path) -> None:
    (tree / "0b0c").symlink_to(tree.parent / "outside" / "secret")
    with pytest.raises(PathEscape):
        child(tree, "0b0c")
    assert child(tree, "fresh") == tree.resolve() / "fresh"
