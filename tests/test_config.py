import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from align.cli import main
from align.config import load_params, params_hash, parse_params
from align.data.transforms import sample_augmentation
from align.errors import UserError

PROJECT = Path(__file__).resolve().parents[1]


def test_shipped_params_are_valid_and_match_the_defaults():
    shipped = load_params(PROJECT / "params.yaml")
    assert shipped == parse_params({})
    assert shipped.dataset == "synthetic"


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
