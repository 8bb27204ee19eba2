"""Atomic writes: complete or absent, and a full disk is one clear line for every writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from align.atomic import write_json_atomically
from align.errors import UserError
from align.train import atomic_torch_save

DEV_FULL = Path("/dev/full")


def fill_disk_for(path: Path) -> None:
    """Make the hidden temporary file of an atomic write of `path` a link to /dev/full, on which
    every write fails with ENOSPC as on a full disk (the OS's own error, not a simulation)."""
    if not DEV_FULL.exists():
        pytest.skip("no /dev/full on this system")
    path.with_name(f".{path.name}.tmp").symlink_to(DEV_FULL)


def test_a_full_disk_while_writing_json_is_one_line_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}\n')
    fill_disk_for(target)
    with pytest.raises(UserError, match="no space left on the device") as caught:
        write_json_atomically(target, {"new": list(range(10_000))})
    message = str(caught.value)
    assert message.startswith(f"{target}: ") and "\n" not in message and "free" in message
    assert target.read_text() == '{"old": true}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("size", [100, 10_000])
def test_a_full_disk_while_torch_saves_a_checkpoint_is_one_line(tmp_path: Path, size: int) -> None:
    # torch.save raises RuntimeError "unexpected pos ..." or "basic_ios::clear: iostream error",
    # depending on where the write fails.
    target = tmp_path / "checkpoint.pt"
    fill_disk_for(target)
    with pytest.raises(UserError, match="disk is full") as caught:
        atomic_torch_save({"weights": torch.zeros(size)}, target)
    assert str(caught.value).startswith(f"{target}: ") and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_other_failures_inside_an_atomic_write_are_not_disguised(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json_atomically(tmp_path / "x.json", {"not serialisable": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def file_size_limit():
    """`ulimit -f 64` (KiB) for the test: a write past it fails with EFBIG (Python ignores the
    SIGXFSZ that would otherwise kill the process), whatever the disk's free space."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    yield 64 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_file_size_limit_is_named_as_such_not_as_a_full_disk(
    tmp_path: Path, file_size_limit: int
) -> None:
    target = tmp_path / "metrics.json"
    with pytest.raises(UserError) as caught:
        write_json_atomically(target, {"new": list(range(100_000))})
    message = str(caught.value)
    assert message.startswith(f"{target}: ") and "\n" not in message
    assert "file size limit" in message and "64 KiB" in message and "ulimit -f" in message
    assert "disk" not in message
    assert list(tmp_path.iterdir()) == []


def test_a_file_size_limit_while_torch_saves_is_named_as_such(
    tmp_path: Path, file_size_limit: int
) -> None:
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(UserError) as caught:
        atomic_torch_save({"weights": torch.zeros(100_000)}, target)
    message = str(caught.value)
    assert "file size limit" in message and "disk" not in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
