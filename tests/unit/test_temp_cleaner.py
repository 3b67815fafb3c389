"""Removal of old files from the temp directory: old files go, everything else stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.jobs.effects.temp_cleaner import remove_old_files

MAX_AGE = 3600


def _aged(path: Path, seconds: float, *, now: float) -> Path:
    """Set ``path``'s own mtime (a link's, not its target's) to ``seconds`` before ``now``."""
    stamp = now - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


def _file(path: Path, *, age: float, now: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return _aged(path, age, now=now)


def test_old_files_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    now = time.time()
    old = _file(tmp_path / "old.txt", age=MAX_AGE * 2, now=now)
    fresh = _file(tmp_path / "fresh.txt", age=10, now=now)
    just_under = _file(tmp_path / "just_under.txt", age=MAX_AGE - 60, now=now)

    removed = remove_old_files(tmp_path, max_age_seconds=MAX_AGE, now=now)

    assert removed == [old]
    assert not old.exists()
    assert fresh.exists()
    assert just_under.exists()


def test_default_now_is_the_current_time(tmp_path: Path) -> None:
    now = time.time()
    old = _file(tmp_path / "old.txt", age=MAX_AGE * 24, now=now)
    fresh = _file(tmp_path / "fresh.txt", age=0, now=now)

    assert remove_old_files(tmp_path, max_age_seconds=MAX_AGE) == [old]
    assert fresh.exists()


def test_nested_directories_are_walked_but_kept(tmp_path: Path) -> None:
    now = time.time()
    old_deep = _file(tmp_path / "a" / "b" / "c" / "old.bin", age=MAX_AGE * 2, now=now)
    fresh_deep = _file(tmp_path / "a" / "b" / "fresh.bin", age=1, now=now)
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c", empty):
        _aged(directory, MAX_AGE * 10, now=now)

    removed = remove_old_files(tmp_path, max_age_seconds=MAX_AGE, now=now)

    assert removed == [old_deep]
    assert fresh_deep.exists()
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert empty.is_dir()


def test_an_old_symlink_to_a_file_outside_is_removed_as_a_link(tmp_path: Path) -> None:
    now = time.time()
    temp = tmp_path / "temp"
    outside = _file(tmp_path / "outside" / "precious.txt", age=MAX_AGE * 10, now=now, text="keep me")
    link = temp / "link.txt"
    temp.mkdir()
    link.symlink_to(outside)
    _aged(link, MAX_AGE * 2, now=now)

    removed = remove_old_files(temp, max_age_seconds=MAX_AGE, now=now)

    assert removed == [link]
    assert not link.is_symlink()
    assert outside.read_text() == "keep me"


def test_a_symlink_is_judged_by_its_own_age_not_its_targets(tmp_path: Path) -> None:
    now = time.time()
    temp = tmp_path / "temp"
    temp.mkdir()
    outside = _file(tmp_path / "outside" / "old.txt", age=MAX_AGE * 10, now=now)
    link = temp / "fresh-link.txt"
    link.symlink_to(outside)
    _aged(link, 5, now=now)

    assert remove_old_files(temp, max_age_seconds=MAX_AGE, now=now) == []
    assert link.is_symlink()
    assert outside.exists()


def test_an_old_dangling_symlink_is_removed(tmp_path: Path) -> None:
    now = time.time()
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "gone")
    _aged(link, MAX_AGE * 2, now=now)

    assert remove_old_files(tmp_path, max_age_seconds=MAX_AGE, now=now) == [link]
    assert not link.is_symlink()


def test_a_symlinked_directory_is_never_followed(tmp_path: Path) -> None:
    now = time.time()
    temp = tmp_path / "temp"
    temp.mkdir()
    outside_dir = tmp_path / "outside"
    precious = _file(outside_dir / "precious.txt", age=MAX_AGE * 10, now=now)
    link = temp / "dir-link"
    link.symlink_to(outside_dir, target_is_directory=True)

    remove_old_files(temp, max_age_seconds=MAX_AGE, now=now)

    assert precious.exists()
    assert outside_dir.is_dir()


def test_an_old_symlink_to_a_directory_is_removed_as_a_link(tmp_path: Path) -> None:
    # The docstring: "Delete regular files and symlinks ... last modified over max_age_seconds
    # ago. Symlinks are removed as links, never followed."
    now = time.time()
    temp = tmp_path / "temp"
    temp.mkdir()
    outside_dir = tmp_path / "outside"
    precious = _file(outside_dir / "precious.txt", age=MAX_AGE * 10, now=now)
    link = temp / "dir-link"
    link.symlink_to(outside_dir, target_is_directory=True)
    _aged(link, MAX_AGE * 2, now=now)

    removed = remove_old_files(temp, max_age_seconds=MAX_AGE, now=now)

    assert removed == [link]
    assert not link.is_symlink()
    assert precious.exists()


def test_special_files_are_left_alone(tmp_path: Path) -> None:
    now = time.time()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _aged(fifo, MAX_AGE * 2, now=now)

    assert remove_old_files(tmp_path, max_age_seconds=MAX_AGE, now=now) == []
    assert fifo.exists()


def test_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert remove_old_files(tmp_path / "missing", max_age_seconds=MAX_AGE) == []


def test_a_file_instead_of_a_directory_is_nothing_to_do(tmp_path: Path) -> None:
    now = time.time()
    not_a_dir = _file(tmp_path / "file.txt", age=MAX_AGE * 2, now=now)

    assert remove_old_files(not_a_dir, max_age_seconds=MAX_AGE, now=now) == []
    assert not_a_dir.exists()


def test_a_second_run_removes_nothing_more(tmp_path: Path) -> None:
    now = time.time()
    _file(tmp_path / "old.txt", age=MAX_AGE * 2, now=now)
    fresh = _file(tmp_path / "fresh.txt", age=1, now=now)

    assert len(remove_old_files(tmp_path, max_age_seconds=MAX_AGE, now=now)) == 1
    assert remove_old_files(tmp_path, max_age_seconds=MAX_AGE, now=now) == []
    assert fresh.exists()
