"""params.yaml stays readable under `dvc exp run -S key=value`: DVC applies the override with
`dvc.utils.hydra.apply_overrides` (Hydra's override grammar on a ruamel.yaml round trip, which
keeps comments and key order but writes every list one item a line and null as an empty value),
so the file is written the way that writes it back and an override changes only its own line."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def changed_lines(override: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(removed, added) lines of params.yaml after `dvc exp run -S <override>` would apply it."""
    copy = tmp_path / "params.yaml"
    shutil.copy(PARAMS, copy)
    apply_overrides(copy, [override])
    diff = list(difflib.unified_diff(PARAMS.read_text().splitlines(),
                                     copy.read_text().splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_an_override_that_changes_nothing_leaves_the_file_as_it_is(tmp_path):
    # Every list and null is rewritten on every -S, whatever it sets: this is the whole file.
    assert changed_lines("dataset=synthetic", tmp_path) == ([], [])


@pytest.mark.parametrize(
    ("override", "before", "after"),
    [
        ("methods.align.lambda3=0.3",
         "    lambda3: 0.1            # explanation guidance (0 = the w/o EG ablation, trained as",
         "    lambda3: 0.3            # explanation guidance (0 = the w/o EG ablation, trained as"),
        ("data.loader_workers=2", "  loader_workers:           #", "  loader_workers: 2         #"),
        ("methods.m_gt.per_dataset.synthetic.lambda3=0.5",
         "      synthetic: {warmup_steps: 0, lambda3: 1.0}",
         "      synthetic: {warmup_steps: 0, lambda3: 0.5}"),
        # A value over the 80 columns stays on its own line (a shorter one joins its key's).
        ("datasets.terra_incognita.images_url='https://example.org/" + "a" * 60 + ".tar.gz'",
         "      https://storage.googleapis.com/", "      https://example.org/aaaa"),
    ],
    ids=["number", "null to number", "inside a flow mapping", "long value"],
)
def test_a_set_param_changes_only_its_own_line_and_keeps_its_comment(override, before, after,
                                                                      tmp_path):
    (removed,), (added,) = changed_lines(override, tmp_path)
    assert removed.startswith(before) and added.startswith(after)
    assert removed.partition("#")[2] == added.partition("#")[2]


def test_a_list_changes_only_its_items(tmp_path):
    removed, added = changed_lines("grid.seeds=[0,1]", tmp_path)
    assert (removed, added) == (["  - 2", "  - 3", "  - 4", "  - 5"], [])



def _interpolated_keys() -> set[str]:
    """The params.yaml keys dvc.yaml interpolates (`${data.root}`; not the matrix's `${item.*}`)."""
    text = (PARAMS.parent / "dvc.yaml").read_text(encoding="utf-8")
    return {key for key in re.findall(r"\$\{([A-Za-z_.]+)\}", text)
            if not key.startswith("item.")}


@pytest.mark.parametrize("preset", sorted((PARAMS.parent / "configs").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_preset_names_each_key_dvc_yaml_reads(preset):
    # README: `cp configs/<preset>.yaml params.yaml && dvc repro`; DVC interpolates dvc.yaml's
    # ${...} from params.yaml alone (align/config.py's defaults are not there to fill a gap).
    values = yaml.safe_load(preset.read_text(encoding="utf-8"))

    def has(key: str) -> bool:
        node = values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    keys = _interpolated_keys()
    assert {"dataset", "data.root", "grid.methods"} <= keys
    missing = sorted(key for key in keys if not has(key))
    assert missing == [], f"{preset.name} lacks {missing}, which dvc.yaml interpolates"
