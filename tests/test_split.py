"""Stage `split`: the small-class rule, stratification, determinism, keys and corrupt inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import make_params, writable_copy
from PIL import Image

from align.data.split import sample_keys, split_counts, split_stratified, write_split
from align.errors import UserError

RATIOS = (0.6, 0.2, 0.2)
VLCS_DOMAINS = ["Caltech101", "LabelMe", "SUN09"]


def vlcs_params(root: Path, vlcs_mini: Path, **data):
    writable_copy(vlcs_mini, root / "raw" / "vlcs")
    return make_params(root, data=data, datasets={"vlcs": {"domains": VLCS_DOMAINS}})


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (1, 0, 0)),
        (2, (1, 1, 0)),
        (3, (1, 1, 1)),
        (4, (2, 1, 1)),
        (5, (3, 1, 1)),
        (6, (4, 1, 1)),
        (7, (4, 2, 1)),
        (8, (5, 2, 1)),
        (9, (5, 2, 2)),
        (10, (6, 2, 2)),
    ],
)
def test_small_class_rule(n: int, expected: tuple[int, int, int]) -> None:
    assert split_counts(n, RATIOS) == expected
    items = {"only": [f"item{i}" for i in range(n)]}
    splits = split_stratified(items, RATIOS, random.Random(0))
    assert tuple(len(splits[name]) for name in ("train", "val", "test")) == expected


def test_small_class_rule_holds_for_other_ratios() -> None:
    # n = 1 and 2 go to train (and val) whatever the ratios; n >= 3 fills every split.
    ratios = (0.2, 0.4, 0.4)
    assert split_counts(1, ratios) == (1, 0, 0)
    assert split_counts(2, ratios) == (1, 1, 0)
    for n in range(3, 30):
        counts = split_counts(n, ratios)
        assert sum(counts) == n and min(counts) >= 1


def test_stratified_split_is_disjoint_complete_close_to_ratios_and_seeded() -> None:
    items = {f"c{c}": [f"c{c}-{i}" for i in range(n)] for c, n in enumerate([1, 2, 3, 17, 50, 100])}
    splits = split_stratified(items, RATIOS, random.Random(7))
    every = [item for split in splits.values() for item in split]
    assert sorted(every) == sorted(item for group in items.values() for item in group)
    assert len(every) == len(set(every))
    for name, group in items.items():
        counts = [sum(item.startswith(f"{name}-") for item in splits[s]) for s in splits]
        assert all(
            abs(count - ratio * len(group)) < 1 for count, ratio in zip(counts, RATIOS, strict=True)
        )
    assert splits == split_stratified(items, RATIOS, random.Random(7))
    assert splits != split_stratified(items, RATIOS, random.Random(8))
    shuffled = {name: list(reversed(group)) for name, group in reversed(list(items.items()))}
    assert splits == split_stratified(shuffled, RATIOS, random.Random(7))


def test_keys_are_unique_dot_free_and_stable() -> None:
    paths = ["D/car/a.jpg", "D/car/a.png", "D/car/a-2.jpg", "D/car/x y.v1.jpg", "D/dog/a.jpg"]
    keys = sample_keys(paths)
    assert keys["D/car/a.jpg"] == "car_a"
    assert keys["D/car/x y.v1.jpg"] == "car_x_y_v1"
    assert len(set(keys.values())) == len(paths)
    assert all("." not in key and "/" not in key for key in keys.values())
    assert keys == sample_keys(list(reversed(paths)))


def test_vlcs_mini_split(tmp_path: Path, vlcs_mini: Path) -> None:
    params = vlcs_params(tmp_path, vlcs_mini)
    split_file, report_file = write_split(params, "vlcs")
    document = json.loads(split_file.read_text())
    report = json.loads(report_file.read_text())

    assert document["classes"] == ["bird", "car", "chair", "dog", "person"]
    assert list(document["domains"]) == VLCS_DOMAINS
    assert report["num_skipped"] == 0 and report["totals"]["all"]["all"] == 187
    assert "person" not in report["counts"]["LabelMe"]
    raw = tmp_path / "raw" / "vlcs"
    for domain, splits in document["domains"].items():
        entries = [entry for split in splits.values() for entry in split]
        assert len({entry["key"] for entry in entries}) == len(entries)
        for entry in entries:
            assert (raw / entry["path"]).is_file() and entry["mask"] is None
            assert entry["path"].split("/")[:2] == [domain, entry["class"]]
            assert document["classes"][entry["label"]] == entry["class"]
        for counts in report["counts"][domain].values():
            n = sum(counts.values())
            assert (counts["train"], counts["val"], counts["test"]) == split_counts(n, RATIOS)
    labelme = [e for split in document["domains"]["LabelMe"].values() for e in split]
    assert all(entry["class"] != "person" for entry in labelme)

    again = tmp_path / "again"
    write_split(vlcs_params(again, vlcs_mini), "vlcs")
    assert (again / "splits" / "vlcs.json").read_bytes() == split_file.read_bytes()
    other = tmp_path / "other_seed"
    write_split(vlcs_params(other, vlcs_mini, split_seed=1), "vlcs")
    reseeded = json.loads((other / "splits" / "vlcs.json").read_text())
    assert reseeded["domains"] != document["domains"]


def test_unusable_files_are_skipped_and_reported(tmp_path: Path, vlcs_mini: Path) -> None:
    params = vlcs_params(tmp_path, vlcs_mini)
    car = tmp_path / "raw" / "vlcs" / "SUN09" / "car"
    good = sorted(car.iterdir())[0].read_bytes()
    (car / "empty.jpg").write_bytes(b"")
    (car / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (car / "notes.jpg").write_text("not an image")
    (car / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (car / ".DS_Store").write_bytes(b"\0")  # hidden: not part of the dataset, not reported
    (tmp_path / "raw" / "vlcs" / "SUN09" / "stray.txt").write_text("outside any class")

    split_file, report_file = write_split(params, "vlcs")
    report = json.loads(report_file.read_text())
    reasons = {item["path"]: item["reason"] for item in report["skipped"]}
    assert report["num_skipped"] == len(reasons) == 5
    assert reasons["SUN09/car/empty.jpg"] == "empty file"
    assert "truncated" in reasons["SUN09/car/truncated.jpg"]
    assert "UnidentifiedImageError" in reasons["SUN09/car/notes.jpg"]
    assert "FileNotFoundError" in reasons["SUN09/car/dangling.jpg"]
    assert reasons["SUN09/stray.txt"] == "not inside a class folder"
    assert report["totals"]["SUN09"]["all"] == 55 and report["totals"]["all"]["all"] == 187
    paths = {
        e["path"]
        for s in json.loads(split_file.read_text())["domains"]["SUN09"].values()
        for e in s
    }
    assert not paths & set(reasons)


def test_masks_are_recorded_and_a_missing_mask_skips_its_image(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "synthetic"
    for index in range(6):
        relpath = f"gradient/{'ab'[index % 2]}/{index}.png"
        (raw / relpath).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (index * 40, 0, 0)).save(raw / relpath)
        # Image 5 lacks its object mask, image 4 its shortcut mask.
        for folder, missing in ((".masks", 5), (".shortcuts", 4)):
            if index != missing:
                mask = raw / folder / relpath
                mask.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (16, 16), 255).save(mask)
    params = make_params(
        tmp_path, datasets={"synthetic": {"domains": ["gradient"]}}, grid={"domains": ["gradient"]}
    )
    split_file, report_file = write_split(params, "synthetic")
    report = json.loads(report_file.read_text())
    assert report["skipped"] == [
        {"path": "gradient/a/4.png", "reason": "mask missing: .shortcuts/gradient/a/4.png"},
        {"path": "gradient/b/5.png", "reason": "mask missing: .masks/gradient/b/5.png"},
    ]
    entries = [
        e for s in json.loads(split_file.read_text())["domains"]["gradient"].values() for e in s
    ]
    assert len(entries) == 4
    assert all(entry["mask"] == f".masks/{entry['path']}" for entry in entries)
    assert all(entry["shortcut"] == f".shortcuts/{entry['path']}" for entry in entries)


def test_missing_raw_domain_is_a_user_error(tmp_path: Path) -> None:
    params = make_params(tmp_path, datasets={"vlcs": {"domains": ["Caltech101"]}})
    with pytest.raises(UserError, match="align acquire --dataset vlcs"):
        write_split(params, "vlcs")


def test_a_symlinked_class_folder_is_followed_like_a_symlinked_domain(
    tmp_path: Path, vlcs_mini: Path
) -> None:
    # A class folder that is a link (to save space, or shared between datasets) was skipped
    # without a word: its domain trained on fewer classes.
    from align.data.acquire import acquire_dataset

    root = tmp_path / "linked"
    (root / "SUN09").mkdir(parents=True)
    for class_dir in sorted((vlcs_mini / "SUN09").iterdir()):
        (root / "SUN09" / class_dir.name).symlink_to(class_dir, target_is_directory=True)
    (root / "LabelMe").symlink_to(vlcs_mini / "LabelMe", target_is_directory=True)
    params = make_params(tmp_path / "data", dataset="folder",
                         datasets={"folder": {"root": str(root), "domains": ["SUN09", "LabelMe"]}},
                         grid={"domains": ["SUN09"]})
    raw = acquire_dataset(params, "folder")
    for domain in ("SUN09", "LabelMe"):
        expected = {p.relative_to(vlcs_mini / domain) for p in (vlcs_mini / domain).rglob("*.jpg")}
        got = {p.relative_to(raw / domain) for p in (raw / domain).rglob("*.jpg")}
        assert got == expected and expected


def test_a_folder_link_that_loops_is_a_user_error(tmp_path: Path) -> None:
    from align.data.acquire import acquire_dataset

    root = tmp_path / "looped"
    (root / "photo" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "photo" / "dog" / "a.png")
    (root / "photo" / "dog" / "again").symlink_to(root / "photo", target_is_directory=True)
    params = make_params(tmp_path / "data", dataset="folder",
                         datasets={"folder": {"root": str(root), "domains": ["photo"]}},
                         grid={"domains": ["photo"]})
    with pytest.raises(UserError, match=r"photo/dog/again: a link back to .*photo"):
        acquire_dataset(params, "folder")
