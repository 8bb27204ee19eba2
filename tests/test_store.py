"""The run store under faults: damaged entries, broken checkpoints, kills while finishing, and two
processes asking for one run at once."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import with_sections
from filelock import FileLock

from align.checkpoint import CHECKPOINT, PREVIOUS
from align.data.acquire import raw_dir
from align.data.shards import write_shards
from align.data.split import write_split
from align.errors import UserError
from align.runs import RunSpec, run_identity, run_key, store_root
from align.store import MANIFEST, Store
from align.train import Trainer, train_run


def count_training(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """Record every run that really trains (rather than being found in the store)."""
    trained: list[RunSpec] = []
    honest = Trainer.run

    def counting(self: Trainer) -> None:
        trained.append(self.spec)
        honest(self)

    monkeypatch.setattr(Trainer, "run", counting)
    return trained


def test_stored_files_are_read_only_listed_in_a_manifest_and_linked_into_place(
    tiny_synthetic, tmp_path
):
    named = train_run(tiny_synthetic, RunSpec("synthetic", "gradient", "erm", 0), tmp_path,
                      show_progress=False)
    key = json.loads((named / "identity.json").read_text())["key"]
    entry = Store(store_root(tmp_path)).entry(key)
    assert stat.S_IMODE((entry / "model.pt").stat().st_mode) == 0o444
    # Snakemake refuses to rerun a job whose outputs its user cannot write
    # (ProtectedOutputException), links excepted: read-only stored files reach the named folder
    # as relative links, which still point at them when the project moves.
    link = named / "model.pt"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert link.resolve() == (entry / "model.pt").resolve()
    manifest = json.loads((entry / MANIFEST).read_text())
    assert {"model.pt", "metrics.json", "identity.json"} <= set(manifest)
    assert not any(CHECKPOINT in name for name in manifest)


def test_a_stored_run_changed_behind_its_read_only_mode_is_detected_and_trained_again(
    tiny_synthetic, tmp_path, monkeypatch
):
    spec = RunSpec("synthetic", "gradient", "erm", 0)
    named = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    original = (named / "model.pt").read_bytes()
    # Changed behind its read-only mode (`chmod u+w` then `cp other model.pt`, or root).
    stored = (named / "model.pt").resolve()
    stored.chmod(0o644)
    stored.write_bytes(b"not a model")
    trained = count_training(monkeypatch)
    again = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    assert trained == [spec]  # not "identical run found": the damage was seen
    assert (again / "model.pt").read_bytes() == original  # deterministic, so the same weights


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(
    tiny_synthetic, tmp_path, monkeypatch, caplog
):
    spec = RunSpec("synthetic", "gradient", "erm", 0)
    key = run_key(run_identity(tiny_synthetic, spec))
    staging = Store(store_root(tmp_path)).staging(key)
    stop_after = {"steps": 9}

    honest_step = Trainer._step

    def killed_at_step_9(self, batch):
        if self.progress.step >= stop_after["steps"]:
            raise KeyboardInterrupt
        return honest_step(self, batch)

    monkeypatch.setattr(Trainer, "_step", killed_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    assert (staging / CHECKPOINT).is_file() and (staging / PREVIOUS).is_file()
    newest = staging / CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as a full disk leaves it

    resumed_from: list[int] = []
    honest_resume = Trainer._resume

    def recording_resume(self):
        honest_resume(self)
        resumed_from.append(self.progress.step)

    monkeypatch.setattr(Trainer, "_step", honest_step)
    monkeypatch.setattr(Trainer, "_resume", recording_resume)
    with caplog.at_level("WARNING"):
        named = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    assert resumed_from == [4]  # the previous checkpoint, not a fresh start
    assert "checkpoint.pt is unreadable" in caplog.text
    straight = train_run(tiny_synthetic, spec, tmp_path / "straight", show_progress=False)
    assert (named / "model.pt").read_bytes() != b""
    assert json.loads((named / "metrics.json").read_text())["val_accuracy"] == json.loads(
        (straight / "metrics.json").read_text()
    )["val_accuracy"]


def test_unreadable_checkpoints_start_afresh_instead_of_failing(tiny_synthetic, tmp_path):
    spec = RunSpec("synthetic", "noise", "erm", 0)
    staging = Store(store_root(tmp_path)).staging(run_key(run_identity(tiny_synthetic, spec)))
    staging.mkdir(parents=True)
    (staging / CHECKPOINT).write_bytes(b"\x00" * 100)
    (staging / PREVIOUS).write_bytes(b"PK\x03\x04 truncated zip")
    named = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    assert json.loads((named / "metrics.json").read_text())["steps"] == 12


def test_a_kill_while_finishing_resumes_instead_of_retraining(
    tiny_synthetic, tmp_path, monkeypatch
):
    spec = RunSpec("synthetic", "noise", "erm", 0)

    def killed_before_sealing(self, key, transient=()):
        raise KeyboardInterrupt

    honest_finish = Store.finish
    monkeypatch.setattr(Store, "finish", killed_before_sealing)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    monkeypatch.setattr(Store, "finish", honest_finish)
    monkeypatch.setattr(Trainer, "_step", lambda *_: pytest.fail("trained a finished run again"))
    named = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    assert json.loads((named / "metrics.json").read_text())["selected_step"] > 0


def test_two_processes_asking_for_one_run_train_it_once(tiny_synthetic, tmp_path):
    # align without guidance is wo_eg: started together, one trains, the other waits and links.
    params = with_sections(tiny_synthetic, train={"steps": 24},
                           methods={"align": {"lambda3": 0.0}})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "align.cli", "--params", str(params_file), "train",
             "--domain", "gradient", "--method", method, "--seed", "0",
             "--runs-root", str(tmp_path / "runs"), "--no-progress"],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        for method in ("align", "wo_eg")
    ]
    logs = [process.communicate(timeout=600)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], logs
    assert sum("identical result found" in log for log in logs) == 1, logs
    entries = [p for p in store_root(tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    models = [
        (RunSpec("synthetic", "gradient", m, 0).named_dir(tmp_path / "runs") / "model.pt")
        for m in ("align", "wo_eg")
    ]
    assert models[0].read_bytes() == models[1].read_bytes()
    assert not list(store_root(tmp_path / "runs").glob(".*.building"))


def test_a_run_trained_on_other_data_is_never_found(tiny_synthetic, tmp_path, monkeypatch):
    spec = RunSpec("synthetic", "gradient", "erm", 0)
    params = with_sections(tiny_synthetic, data={"root": str(tmp_path / "data")})
    shutil.copytree(tiny_synthetic.data.root, params.data.root)
    first = run_key(run_identity(params, spec))
    train_run(params, spec, tmp_path / "runs", show_progress=False)
    # Images removed by hand, then split and sharded again: the same parameters, other data.
    first_class = min((raw_dir(params, "synthetic") / "gradient").iterdir())
    for image in sorted(first_class.iterdir())[:10]:
        image.unlink()
    write_split(params, "synthetic")
    write_shards(params, "synthetic")
    assert run_key(run_identity(params, spec)) != first
    trained = count_training(monkeypatch)
    train_run(params, spec, tmp_path / "runs", show_progress=False)
    assert trained == [spec]


def test_store_helpers_keep_staging_separate(tmp_path):
    store = Store(tmp_path / "store")
    staging = store.staging("abc")
    staging.mkdir(parents=True)
    (staging / "result.txt").write_text("done")
    (staging / CHECKPOINT).write_bytes(b"resume state")
    entry = store.finish("abc", transient=(CHECKPOINT,))
    assert entry == store.entry("abc") and not staging.exists()
    assert not (entry / CHECKPOINT).exists()
    assert store.verified("abc") == entry
    os.chmod(entry / "result.txt", 0o644)
    (entry / "result.txt").write_text("changed")
    assert store.verified("abc") is None and not entry.exists()


def test_identity_of_a_run_is_written_with_it(tiny_synthetic, tmp_path):
    named = train_run(tiny_synthetic, RunSpec("synthetic", "gradient", "erm", 0), tmp_path,
                      show_progress=False)
    identity = json.loads((named / "identity.json").read_text())
    assert identity["stage"] == "train" and identity["params"]["method"] == "erm"
    assert set(identity["content"]) == {"shards"}
    assert Path(named / "model.pt").is_file()
    assert torch.load(named / "model.pt", weights_only=False)["identity"]["key"] == identity["key"]


def test_a_store_this_user_cannot_write_is_one_line_naming_it(tmp_path, monkeypatch):
    # A read-only results/ (or runs/) gave a 38-line traceback from the lock file. Root writes
    # anywhere, so the file system's refusal is simulated where the lock is taken.
    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(FileLock, "acquire", refuse)
    store = Store(tmp_path / "results" / ".store")
    expected = (r"results/\.store: cannot write the store here \(Read-only file system\); make"
                r" the folder writable")
    with pytest.raises(UserError, match=expected), store.locked("abc"):
        pass
