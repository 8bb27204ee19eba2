import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from align.cli import main
from align.config import load_params, params_hash, parse_params
from align.data.transforms import sample_augmentation
from align.errors import UserError
from align.methods.base import resolve_config

PROJECT = Path(__file__).resolve().parents[1]


EMBEDDED_RUN_CHOICES = {
    "grid.methods", "grid.domains", "grid.seeds", "model.layer4_stride", "train.steps",
    "train.eval_every", "train.masker_lr", "datasets.synthetic.spurious_p",
    *(f"methods.{name}.per_dataset.synthetic" for name in ("align", "m_gray", "m_sam", "m_gt")),
}
"""Where params.yaml (the default run that shows the whole paper on 2 CPU cores in a few tens of
minutes) departs from the code's defaults, which a partial params file (configs/paper_*.yaml)
falls back on; README, "The default run", says why each."""


def leaf_differences(a: object, b: object, path: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return set().union(*(leaf_differences(a.get(k), b.get(k), f"{path}.{k}".lstrip("."))
                             for k in set(a) | set(b)))
    return {path} if a != b else set()


def test_shipped_params_are_valid_and_match_the_defaults_but_for_the_default_runs_choices():
    shipped = load_params(PROJECT / "params.yaml")
    assert shipped.dataset == "synthetic"
    differences = leaf_differences(shipped.model_dump(mode="json"),
                                   parse_params({}).model_dump(mode="json"))
    assert differences == EMBEDDED_RUN_CHOICES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"data": {"split": {"train": 0.7}}},
            "data.split: train + val + test must sum to 1, got 1.1",
        ),
        ({"data": {"store_size": 0}}, "data.store_size: Input should be greater than 0 (got 0)"),
        ({"data": {"image_size": "big"}}, "data.image_size: Input should be a valid integer"),
        ({"datasets": {"synthetic": {"spurius_p": 0.5}}}, "datasets.synthetic.spurius_p: unknown"),
        ({"datasets": {"synthetic": {"spurious_p": 1.5}}}, "datasets.synthetic.spurious_p: Input"),
        ({"datasets": {"cifar": {}}}, "datasets.cifar: unknown key"),
        ({"dataset": "cifar"}, "dataset: must be one of"),
        ({"trian": {}}, "trian: unknown key"),
    ],
)
def test_bad_values_name_the_key(raw, expected):
    with pytest.raises(UserError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such parameter file"):
        load_params(tmp_path / "absent.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(broken)


def test_params_hash_depends_only_on_the_selected_keys():
    base = parse_params({})
    keys = ["datasets.synthetic", "data.split"]
    other_knob = parse_params({"data": {"image_size": 32}})
    same_knob = parse_params({"datasets": {"synthetic": {"spurious_p": 0.9}}})
    assert params_hash(base, keys) == params_hash(other_knob, keys)
    assert params_hash(base, keys) != params_hash(same_knob, keys)
    assert params_hash(base, keys) == params_hash(base, list(reversed(keys)))
    with pytest.raises(UserError, match="no parameter 'data.nope'"):
        params_hash(base, ["data.nope"])


def test_cli_prints_one_line_without_traceback(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}}))
    assert main(["--params", str(params), "check-params"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "data.split" in err and "Traceback" not in err


def test_grid_domains_default_to_the_datasets_and_are_checked_against_them():
    vlcs = {"dataset": "vlcs"}
    assert parse_params(vlcs).grid.domains == ["Caltech101", "LabelMe", "SUN09", "VOC2007"]
    with pytest.raises(UserError, match=r"grid.domains \['noise'\] are not domains of vlcs"):
        parse_params({**vlcs, "grid": {"domains": ["noise"]}})


def test_hue_jitter_defaults_to_the_datasets_own_and_can_be_set():
    assert parse_params({}).hue_jitter("synthetic") == 0.0  # its hue is the spurious cue
    assert parse_params({}).hue_jitter("vlcs") == 0.3  # DomainBed's
    assert parse_params({"data": {"hue_jitter": 0.1}}).hue_jitter("synthetic") == 0.1
    with pytest.raises(UserError, match="data.hue_jitter"):
        parse_params({"data": {"hue_jitter": 0.7}})
    jittered = sample_augmentation(40, 40, torch.Generator().manual_seed(1))
    plain = sample_augmentation(40, 40, torch.Generator().manual_seed(1), hue_jitter=0.0)
    assert plain.hue == 0 and jittered.hue != 0
    assert dataclasses.replace(jittered, hue=0.0) == plain  # every other draw is unchanged


@pytest.mark.parametrize(
    ("per_dataset", "expected"),
    [
        # A misspelt dataset name would leave the paper's Terra lambdas unapplied.
        ({"terra_incognito": {"lambda3": 0.2}},
         "methods.align.per_dataset.terra_incognito: not a dataset (known: folder, synthetic,"),
        # Overrides of every listed dataset are checked, not only the active one's.
        ({"vlcs": {"lambda33": 0.2}}, "methods.align.per_dataset.vlcs.lambda33: unknown key"),
        ({"vlcs": {"lambda3": -1}},
         "methods.align.per_dataset.vlcs.lambda3: Input should be greater than or equal to 0"),
        ({"synthetic": {"warmup_steps": "soon"}},
         "methods.align.per_dataset.synthetic.warmup_steps: Input should be a valid integer"),
        ({"vlcs": {"per_dataset": {}}}, "methods.align.per_dataset.vlcs.per_dataset: cannot"),
    ],
)
def test_per_dataset_overrides_are_validated_when_params_are_loaded(per_dataset, expected):
    with pytest.raises(UserError) as caught:
        parse_params({"methods": {"align": {"per_dataset": per_dataset}}})
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_override_fails_check_params_in_one_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(
        {"methods": {"dre": {"per_dataset": {"synthetic": {"lambda_regg": 0.3}}}}}
    ))
    assert main(["--params", str(params), "check-params"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "methods.dre.per_dataset.synthetic.lambda_regg: unknown key" in err


def test_valid_overrides_still_apply_to_their_dataset_only():
    params = parse_params({"dataset": "vlcs", "methods": {"sgt": {"per_dataset": {
        "vlcs": {"kl_weight": 2.0}, "terra_incognita": {"masked_fraction": 0.3}}}}})
    resolved = resolve_config("sgt", params.methods.sgt.model_dump(), "vlcs")
    assert resolved.kl_weight == 2.0 and resolved.masked_fraction == 0.5


@pytest.mark.parametrize("text", ["", "# all commented out\n", "{}\n"])
def test_an_empty_params_file_is_refused(tmp_path, capsys, text):
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(UserError, match="has no settings") as caught:
        load_params(params)
    assert str(params) in str(caught.value) and "params.yaml" in str(caught.value)
    assert main(["--params", str(params), "check-params"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"grid": {"methods": []}}, "grid.methods: empty, so nothing would be trained; list"),
        ({"grid": {"domains": []}}, "grid.domains: empty, so nothing would be trained; list"),
        ({"grid": {"seeds": []}}, "grid.seeds: empty, so nothing would be trained; list"),
        # The folder dataset declares no domains unless told: the grid would resolve to none.
        ({"dataset": "folder", "datasets": {"folder": {"root": "/data/pacs"}}},
         "grid.domains: empty, so nothing would be trained; list the training domains in"
         " grid.domains (or datasets.folder.domains)"),
    ],
)
def test_an_empty_grid_is_refused_naming_the_key_to_fill(raw, expected):
    with pytest.raises(UserError) as caught:
        parse_params(raw)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_binary_params_file_is_one_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(UserError, match="not a UTF-8 text file"):
        load_params(params)
    assert main(["--params", str(params), "check-params"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(params) in err


def test_a_reader_that_stops_early_is_not_a_traceback():
    # `align check-params | head -1`: the reader closes the pipe before we finish writing.
    process = subprocess.Popen(
        [sys.executable, "-m", "align.cli", "--params", str(PROJECT / "params.yaml"),
         "check-params"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        # A repeated key in a section: YAML loaders keep the last one without a word.
        ("train:\n  lr: 0.1\n  lr: 0.01\n", "line 3: key 'lr' appears twice in train (first at"
         " line 2)"),
        # A second top-level section silently replaced the whole first one.
        ("train:\n  lr: 0.1\ngrid:\n  seeds: [0]\ntrain:\n  steps: 20\n",
         "line 5: key 'train' appears twice at the top level (first at line 1)"),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        load_params(path)
    message = str(error.value)
    assert expected in message and "\n" not in message and str(path) in message


@pytest.mark.parametrize(
    "grid, key, repeated",
    [
        ({"seeds": [0, 1, 0]}, "grid.seeds", "[0]"),
        ({"methods": ["erm", "align", "erm"]}, "grid.methods", "['erm']"),
        ({"domains": ["gradient", "gradient"]}, "grid.domains", "['gradient']"),
    ],
)
def test_a_grid_entry_listed_twice_is_refused(grid, key, repeated):
    # Counted twice, a repeated run made "5.00 ± 0.00 (n=2)" and verdict pairs of one model.
    with pytest.raises(UserError) as error:
        parse_params({"grid": grid})
    message = str(error.value)
    assert f"{key}: " in message and f"listed more than once: {repeated}" in message
