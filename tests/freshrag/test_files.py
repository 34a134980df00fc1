"""State files written atomically and durably (freshrag/files.py)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from freshrag.files import replace_atomically, sync_file

pytestmark = pytest.mark.unit


def _failing_dir_fsync(code: int):  # noqa: ANN202
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real(fd)

    return fsync


def test_a_replaced_file_holds_the_new_text_and_no_temporary_is_left(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    replace_atomically(path, "one")
    replace_atomically(path, "two", durable=False)
    sync_file(path)
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_filesystem_that_cannot_sync_directories_still_gets_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network, FUSE and Ceph mounts refuse fsync on a directory (EINVAL): the state
    file must still be written, or the service could not start there at all."""
    path = tmp_path / "state.json"
    monkeypatch.setattr(os, "fsync", _failing_dir_fsync(errno.EINVAL))
    replace_atomically(path, "kept")
    sync_file(path)
    assert path.read_text() == "kept"


def test_a_real_disk_error_on_the_directory_is_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fsync", _failing_dir_fsync(errno.EIO))
    with pytest.raises(OSError) as exc:
        replace_atomically(tmp_path / "state.json", "x")
    assert exc.value.errno == errno.EIO
