"""VLCS, Terra Incognita and folder sources on real layouts: served from 127.0.0.1, or offline."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import make_params
from PIL import Image

from align.cli import main
from align.data import gdrive_download
from align.data.acquire import acquire_dataset
from align.data.sources.folder import Folder, FolderConfig
from align.data.split import write_split
from align.errors import UserError

VLCS_DOMAINS = ["Caltech101", "LabelMe", "SUN09"]  # the fixture has no VOC2007


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder and the base URL of a static HTTP server on 127.0.0.1 serving it."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a fresh project root, so the lock file is `<tmp>/data/checksums.json`."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def relative_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_vlcs_archive(vlcs_mini: Path, path: Path) -> Path:
    """DomainBed's VLCS.tar.gz layout: VLCS/<domain>/<class>/<image>.jpg."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(vlcs_mini, arcname="VLCS")
    return path


def acquire(project: Path, dataset: str, config: dict[str, Any]) -> Path:
    # The grid stays the default dataset's: `folder` without `domains` could not be a grid.
    params = make_params(project / "data", datasets={dataset: config})
    return acquire_dataset(params, dataset)


# VLCS ------------------------------------------------------------------------------------------


def test_vlcs_downloads_verifies_and_lays_out_the_archive(
    project: Path, served: tuple[Path, str], vlcs_mini: Path
) -> None:
    folder, base_url = served
    archive = make_vlcs_archive(vlcs_mini, folder / "VLCS.tar.gz")
    config = {"url": f"{base_url}/VLCS.tar.gz", "domains": VLCS_DOMAINS}
    raw = acquire(project, "vlcs", config)

    assert relative_files(raw) == relative_files(vlcs_mini)
    assert len(relative_files(raw)) == 187
    assert not (raw / "LabelMe" / "person").exists()
    lock = json.loads((project / "data" / "checksums.json").read_text())
    assert lock == {"vlcs:VLCS.tar.gz": sha256_of(archive)}
    assert (project / "data" / "downloads" / "VLCS.tar.gz").is_file()
    assert sorted(path.name for path in (project / "data" / "raw").iterdir()) == ["vlcs"]

    # The verified download is reused: the server's copy is no longer needed.
    archive.unlink()
    assert relative_files(acquire(project, "vlcs", config)) == relative_files(vlcs_mini)


def test_the_checksum_lock_file_lives_in_the_data_root_not_the_working_directory(
    project: Path, served: tuple[Path, str], vlcs_mini: Path, tmp_path: Path
) -> None:
    folder, base_url = served
    archive = make_vlcs_archive(vlcs_mini, folder / "VLCS.tar.gz")
    root = tmp_path / "scratch" / "data"  # data.root elsewhere than <cwd>/data
    params = make_params(root, datasets={"vlcs": {"url": f"{base_url}/VLCS.tar.gz",
                                                  "domains": VLCS_DOMAINS}})
    acquire_dataset(params, "vlcs")
    assert json.loads((root / "checksums.json").read_text()) == {
        "vlcs:VLCS.tar.gz": sha256_of(archive)
    }
    assert (root / "downloads" / "VLCS.tar.gz").is_file()
    assert list(project.iterdir()) == []  # nothing written in the working directory


def test_vlcs_download_that_differs_from_the_lock_file_is_refused(
    project: Path, served: tuple[Path, str], vlcs_mini: Path
) -> None:
    folder, base_url = served
    make_vlcs_archive(vlcs_mini, folder / "VLCS.tar.gz")
    (project / "data").mkdir()
    (project / "data" / "checksums.json").write_text(json.dumps({"vlcs:VLCS.tar.gz": "a" * 64}))
    with pytest.raises(UserError, match="checksum mismatch.*" + "a" * 64):
        acquire(project, "vlcs", {"url": f"{base_url}/VLCS.tar.gz", "domains": VLCS_DOMAINS})
    assert not (project / "data" / "downloads" / "VLCS.tar.gz").exists()


def make_wrong_layout_archive(path: Path) -> Path:
    """A valid .tar.gz, but of another dataset: PACS/<domain>/<class>/<image>."""
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "PACS/photo/dog/a.jpg", tiny_jpeg(0))
    return path


def make_gzipped_html(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"<!DOCTYPE html><html>Sign in to continue</html>", mtime=0))
    return path


def locked(project: Path) -> dict[str, str]:
    lock = project / "data" / "checksums.json"
    return json.loads(lock.read_text()) if lock.exists() else {}


@pytest.mark.parametrize(
    ("make_payload", "expected"),
    [(make_wrong_layout_archive, "domain.s. Caltech101, LabelMe, SUN09 not found"),
     (make_gzipped_html, "not a tar or zip archive")],
    ids=["wrong-layout", "gzipped-html"],
)
def test_a_vlcs_download_that_is_not_vlcs_is_deleted_and_not_pinned(
    project: Path, served: tuple[Path, str], vlcs_mini: Path, make_payload, expected: str
) -> None:
    folder, base_url = served
    make_payload(folder / "VLCS.tar.gz")
    config = {"url": f"{base_url}/VLCS.tar.gz", "domains": VLCS_DOMAINS}
    with pytest.raises(UserError, match=expected) as error:
        acquire(project, "vlcs", config)
    message = str(error.value)
    assert "the download was deleted and its checksum not pinned" in message
    assert f"{base_url}/VLCS.tar.gz" in message and "\n" not in message
    assert "vlcs:VLCS.tar.gz" not in locked(project)
    assert list((project / "data" / "downloads").iterdir()) == []

    # The right archive at another URL: downloaded (nothing wrong is cached), then pinned.
    (folder / "mirror").mkdir()
    archive = make_vlcs_archive(vlcs_mini, folder / "mirror" / "VLCS.tar.gz")
    raw = acquire(project, "vlcs", {**config, "url": f"{base_url}/mirror/VLCS.tar.gz"})
    assert relative_files(raw) == relative_files(vlcs_mini)
    assert locked(project) == {"vlcs:VLCS.tar.gz": sha256_of(archive)}


def test_a_wrong_archive_pinned_before_says_how_to_refresh_and_refresh_replaces_it(
    project: Path, served: tuple[Path, str], vlcs_mini: Path, tmp_path: Path
) -> None:
    # A wrong archive whose sha256 an earlier version pinned (and someone committed).
    downloads = project / "data" / "downloads"
    downloads.mkdir(parents=True)
    wrong = make_wrong_layout_archive(downloads / "VLCS.tar.gz")
    others = {"terra_incognita:eccv_18_annotations.tar.gz": "b" * 64}
    lock = {"vlcs:VLCS.tar.gz": sha256_of(wrong), **others}
    (project / "data" / "checksums.json").write_text(json.dumps(lock))
    folder, base_url = served
    archive = make_vlcs_archive(vlcs_mini, folder / "VLCS.tar.gz")
    config = {"url": f"{base_url}/VLCS.tar.gz", "domains": VLCS_DOMAINS}
    with pytest.raises(UserError, match="not found") as error:
        acquire(project, "vlcs", config)
    message = str(error.value)
    assert "align acquire --dataset vlcs --refresh" in message and "\n" not in message
    assert locked(project) == lock and wrong.is_file()  # pinned before this run: kept

    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps({"data": {"root": str(project / "data")},
                                       "datasets": {"vlcs": config}}))
    assert main(["--params", str(params_file), "acquire", "--dataset", "vlcs", "--refresh"]) == 0
    assert relative_files(project / "data" / "raw" / "vlcs") == relative_files(vlcs_mini)
    assert locked(project) == {"vlcs:VLCS.tar.gz": sha256_of(archive), **others}


def test_vlcs_without_url_downloads_from_google_drive(
    project: Path, served: tuple[Path, str], vlcs_mini: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base_url = served
    archive = make_vlcs_archive(vlcs_mini, folder / "DRIVE_FILE_ID")
    # Point gdown at the local server in place of drive.google.com.
    monkeypatch.setattr(gdrive_download, "GDRIVE_URL", base_url + "/{file_id}")
    raw = acquire(project, "vlcs", {"gdrive_id": "DRIVE_FILE_ID", "domains": VLCS_DOMAINS})
    assert relative_files(raw) == relative_files(vlcs_mini)
    lock = json.loads((project / "data" / "checksums.json").read_text())
    assert lock == {"vlcs:VLCS.tar.gz": sha256_of(archive)}


def test_vlcs_offline_from_a_local_archive(project: Path, tmp_path: Path, vlcs_mini: Path) -> None:
    archive = make_vlcs_archive(vlcs_mini, tmp_path / "VLCS.tar.gz")
    # `archive` wins over the default Google Drive id and over `url`: nothing is downloaded.
    raw = acquire(project, "vlcs", {
        "archive": str(archive), "url": "http://127.0.0.1:9/VLCS.tar.gz", "domains": VLCS_DOMAINS,
    })
    assert relative_files(raw) == relative_files(vlcs_mini)
    assert sorted(path.name for path in (project / "data").iterdir()) == ["raw"]


@pytest.mark.parametrize("inside", [False, True], ids=["parent-of-VLCS", "VLCS"])
def test_vlcs_offline_from_a_folder(project: Path, vlcs_mini: Path, inside: bool) -> None:
    folder = vlcs_mini if inside else vlcs_mini.parent
    raw = acquire(project, "vlcs", {"folder": str(folder), "archive": "/no/such.tar.gz",
                                    "domains": VLCS_DOMAINS})
    assert relative_files(raw) == relative_files(vlcs_mini)
    image = "SUN09/dog/" + sorted((vlcs_mini / "SUN09" / "dog").iterdir())[0].name
    assert (raw / image).read_bytes() == (vlcs_mini / image).read_bytes()


def test_vlcs_missing_domain_names_it_and_the_folder(project: Path, vlcs_mini: Path) -> None:
    with pytest.raises(UserError) as error:
        acquire(project, "vlcs", {"folder": str(vlcs_mini.parent)})  # default domains
    message = str(error.value)
    assert "VOC2007" in message and str(vlcs_mini) in message and "Caltech101" in message
    assert not (project / "data" / "raw" / "vlcs").exists()


# Terra Incognita -------------------------------------------------------------------------------

CATEGORIES = [
    {"id": 1, "name": "opossum"}, {"id": 11, "name": "bird"},
    {"id": 30, "name": "empty"}, {"id": 34, "name": "deer"},  # deer is not a DomainBed class
]


def camera_traps_json(images: list[tuple[str, Any, list[int]]]) -> bytes:
    """COCO camera-traps JSON for (image id, location, category ids)."""
    data = {
        "info": {"version": "test"},
        "images": [
            {"id": image_id, "file_name": f"{image_id}.jpg", "location": location,
             "width": 8, "height": 8, "seq_id": f"seq-{image_id}", "frame_num": 1}
            for image_id, location, _ in images
        ],
        "annotations": [
            {"id": f"ann-{image_id}-{category}", "image_id": image_id, "category_id": category}
            for image_id, _, categories in images
            for category in categories
        ],
        "categories": CATEGORIES,
    }
    return json.dumps(data).encode()


# ECCV'18 spreads images over split files; locations are ints in some releases, strings in others.
TRAIN = [("a1", 38, [11]), ("a2", 38, [1]), ("a3", 43, [30]), ("a4", 99, [11]), ("a5", 38, [34])]
CIS_VAL = [("b1", "46", [11, 34]), ("b2", "46", [1, 11]), ("b3", "7", [30])]
TRANS_TEST = [("c1", 100, [30]), ("c2", 100, [1]), ("c3", 43, [11]), ("gone", 38, [11])]
EXPECTED_TERRA = {
    "location_38/bird/a1.jpg", "location_38/opossum/a2.jpg", "location_43/empty/a3.jpg",
    "location_46/bird/b1.jpg", "location_46/opossum/b2.jpg", "location_46/bird/b2.jpg",
    "location_100/empty/c1.jpg", "location_100/opossum/c2.jpg", "location_43/bird/c3.jpg",
}
EXPECTED_COUNTS = {
    "location_38": {"bird": 1, "opossum": 1},
    "location_43": {"bird": 1, "empty": 1},
    "location_46": {"bird": 2, "opossum": 1},
    "location_100": {"empty": 1, "opossum": 1},
}


def tiny_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_images_archive(path: Path) -> Path:
    """eccv_18_all_images_sm/<id>.jpg for every annotated image but `gone`."""
    ids = [image_id for image_id, _, _ in TRAIN + CIS_VAL + TRANS_TEST if image_id != "gone"]
    with tarfile.open(path, "w:gz") as tar:
        for seed, image_id in enumerate(ids):
            add_bytes(tar, f"eccv_18_all_images_sm/{image_id}.jpg", tiny_jpeg(seed))
    return path


def make_annotations_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split, images in [("train", TRAIN), ("cis_val", CIS_VAL), ("trans_test", TRANS_TEST)]:
            add_bytes(tar, f"eccv_18_annotation_files/{split}_annotations.json",
                      camera_traps_json(images))
        add_bytes(tar, "eccv_18_annotation_files/notes.json", b'{"about": "not annotations"}')
    return path


def test_terra_incognita_downloads_and_builds_domainbed_layout(
    project: Path, served: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    folder, base_url = served
    images = make_images_archive(folder / "eccv_18_all_images_sm.tar.gz")
    annotations = make_annotations_archive(folder / "eccv_18_annotations.tar.gz")
    raw = acquire(project, "terra_incognita", {
        "images_url": f"{base_url}/eccv_18_all_images_sm.tar.gz",
        "annotations_url": f"{base_url}/eccv_18_annotations.tar.gz",
    })

    assert relative_files(raw) == EXPECTED_TERRA
    assert "1 annotated images are not in the images archive" in caplog.text  # `gone`
    counts = json.loads((project / "data" / "raw" / "terra_incognita.counts.json").read_text())
    assert counts == EXPECTED_COUNTS
    assert list(counts) == ["location_38", "location_43", "location_46", "location_100"]
    assert json.loads((project / "data" / "checksums.json").read_text()) == {
        "terra_incognita:eccv_18_all_images_sm.tar.gz": sha256_of(images),
        "terra_incognita:eccv_18_annotations.tar.gz": sha256_of(annotations),
    }
    assert sorted(path.name for path in (project / "data" / "raw").iterdir()) == [
        "terra_incognita", "terra_incognita.counts.json",
    ]


def test_terra_incognita_annotations_without_camera_traps_json_are_deleted_and_not_pinned(
    project: Path, served: tuple[Path, str]
) -> None:
    folder, base_url = served
    images = make_images_archive(folder / "eccv_18_all_images_sm.tar.gz")
    with tarfile.open(folder / "eccv_18_annotations.tar.gz", "w:gz") as tar:
        add_bytes(tar, "eccv_18_annotation_files/notes.json", b'{"about": "not annotations"}')
    config = {"images_url": f"{base_url}/eccv_18_all_images_sm.tar.gz",
              "annotations_url": f"{base_url}/eccv_18_annotations.tar.gz"}
    with pytest.raises(UserError, match="no COCO camera-traps JSON") as error:
        acquire(project, "terra_incognita", config)
    assert "the download was deleted and its checksum not pinned" in str(error.value)
    assert f"{base_url}/eccv_18_annotations.tar.gz" in str(error.value)
    assert locked(project) == {}
    # The annotations are checked before the images are downloaded: nothing is left.
    assert list((project / "data" / "downloads").iterdir()) == []

    (folder / "mirror").mkdir()
    annotations = make_annotations_archive(folder / "mirror" / "eccv_18_annotations.tar.gz")
    config["annotations_url"] = f"{base_url}/mirror/eccv_18_annotations.tar.gz"
    assert relative_files(acquire(project, "terra_incognita", config)) == EXPECTED_TERRA
    assert locked(project) == {
        "terra_incognita:eccv_18_all_images_sm.tar.gz": sha256_of(images),
        "terra_incognita:eccv_18_annotations.tar.gz": sha256_of(annotations),
    }


def test_terra_incognita_images_without_the_annotated_files_are_deleted_and_not_pinned(
    project: Path, served: tuple[Path, str]
) -> None:
    folder, base_url = served
    annotations = make_annotations_archive(folder / "eccv_18_annotations.tar.gz")
    make_wrong_layout_archive(folder / "eccv_18_all_images_sm.tar.gz")
    config = {"images_url": f"{base_url}/eccv_18_all_images_sm.tar.gz",
              "annotations_url": f"{base_url}/eccv_18_annotations.tar.gz"}
    with pytest.raises(UserError, match="no images for location_38") as error:
        acquire(project, "terra_incognita", config)
    assert "the download was deleted and its checksum not pinned" in str(error.value)
    # The annotations were fine: kept and pinned; the images were not.
    assert locked(project) == {
        "terra_incognita:eccv_18_annotations.tar.gz": sha256_of(annotations),
    }
    assert [path.name for path in (project / "data" / "downloads").iterdir()] == [
        "eccv_18_annotations.tar.gz"
    ]


def test_terra_incognita_offline_prefers_domainbeds_annotation_file(
    project: Path, tmp_path: Path
) -> None:
    images = make_images_archive(tmp_path / "images.tar.gz")
    # DomainBed's caltech_images_20210113.json (zipped, as LILA ships it) beats the split files.
    annotations = tmp_path / "caltech_camera_traps.json.zip"
    with zipfile.ZipFile(annotations, "w") as zip_file:
        zip_file.writestr("caltech_images_20210113.json", camera_traps_json([("a2", "38", [11])]))
        zip_file.writestr("eccv_18_annotation_files/train_annotations.json",
                          camera_traps_json(TRAIN))
    raw = acquire(project, "terra_incognita", {
        "images_archive": str(images), "annotations_archive": str(annotations),
        "images_url": "http://127.0.0.1:9/unused", "locations": [38],
    })
    assert relative_files(raw) == {"location_38/bird/a2.jpg"}
    assert not (project / "data" / "checksums.json").exists()


def test_terra_incognita_offline_from_a_built_folder(project: Path, tmp_path: Path) -> None:
    built = tmp_path / "terra_incognita"
    for relpath in ["location_38/bird/a.jpg", "location_38/deer/b.jpg", "location_43/empty/c.jpg",
                    "location_46/bird/d.jpg"]:
        (built / relpath).parent.mkdir(parents=True, exist_ok=True)
        (built / relpath).write_bytes(tiny_jpeg(len(relpath)))
    raw = acquire(project, "terra_incognita", {"folder": str(built), "locations": [38, 43]})
    assert relative_files(raw) == {"location_38/bird/a.jpg", "location_43/empty/c.jpg"}
    counts = json.loads((project / "data" / "raw" / "terra_incognita.counts.json").read_text())
    assert counts == {"location_38": {"bird": 1}, "location_43": {"empty": 1}}


def test_terra_incognita_location_without_images_is_a_user_error(
    project: Path, tmp_path: Path
) -> None:
    config = {
        "images_archive": str(make_images_archive(tmp_path / "images.tar.gz")),
        "annotations_archive": str(make_annotations_archive(tmp_path / "annotations.tar.gz")),
        "locations": [38, 99],  # location 99 has a bird, but no opossum
        "classes": ["opossum"],
    }
    with pytest.raises(UserError, match="location_99"):
        acquire(project, "terra_incognita", config)


def test_terra_incognita_archive_without_annotations_is_a_user_error(
    project: Path, tmp_path: Path
) -> None:
    images = make_images_archive(tmp_path / "images.tar.gz")
    with pytest.raises(UserError, match="no COCO camera-traps JSON"):
        acquire(project, "terra_incognita", {"images_archive": str(images),
                                             "annotations_archive": str(images)})


# Folder ----------------------------------------------------------------------------------------


def test_folder_source_on_vlcs_mini(project: Path, vlcs_mini: Path) -> None:
    source = Folder(FolderConfig(root=vlcs_mini))
    assert source.domains() == VLCS_DOMAINS
    raw = acquire(project, "folder", {"root": str(vlcs_mini)})
    assert relative_files(raw) == relative_files(vlcs_mini)


def test_folder_source_links_every_visible_file(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "pacs"
    files = {
        "photo/dog/a.JPG": tiny_jpeg(1), "photo/dog/b.png": b"png", "photo/dog/notes.txt": b"x",
        "photo/dog/._a.JPG": b"macOS fork", "photo/dog/Thumbs.db": b"x",
        "sketch/dog/c.webp": b"webp", "sketch/cat/d.Jpeg": b"jpeg", "sketch/cat/e.bmp": b"bmp",
        ".git/objects/f.png": b"x", "sketch/README.md": b"x",
    }
    for relpath, data in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    assert Folder(FolderConfig(root=root)).domains() == ["photo", "sketch"]
    raw = acquire(project, "folder", {"root": str(root)})
    # Non-images too: the split decides what is usable and reports the rest with a reason.
    assert relative_files(raw) == {
        "photo/dog/a.JPG", "photo/dog/b.png", "photo/dog/notes.txt", "photo/dog/Thumbs.db",
        "sketch/dog/c.webp", "sketch/cat/d.Jpeg", "sketch/cat/e.bmp", "sketch/README.md",
    }
    assert (raw / "photo/dog/a.JPG").stat().st_ino == (root / "photo/dog/a.JPG").stat().st_ino

    raw = acquire(project, "folder", {"root": str(root), "domains": ["sketch"]})
    assert relative_files(raw) == {
        "sketch/dog/c.webp", "sketch/cat/d.Jpeg", "sketch/cat/e.bmp", "sketch/README.md",
    }


def test_folder_source_without_root_says_what_to_set(project: Path) -> None:
    with pytest.raises(UserError, match=r"set datasets\.folder\.root to a folder in DomainBed"):
        acquire(project, "folder", {})
    with pytest.raises(UserError, match="set datasets.folder.root"):
        Folder(FolderConfig()).domains()


def test_folder_source_missing_domain(project: Path, vlcs_mini: Path) -> None:
    with pytest.raises(UserError, match="VOC2007.*" + str(vlcs_mini)):
        acquire(project, "folder", {"root": str(vlcs_mini), "domains": ["SUN09", "VOC2007"]})


def image_bytes(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (30, 160, 90)).save(buffer, format=image_format)
    return buffer.getvalue()


def test_every_file_under_a_class_folder_is_used_or_reported_by_the_split(
    project: Path, tmp_path: Path
) -> None:
    root = tmp_path / "office"
    files = {
        "art/cup/a.gif": image_bytes("GIF"), "art/cup/b.JPG": image_bytes("JPEG"),
        "art/cup/nested/deeper/c.png": image_bytes("PNG"), "art/cup/d.tif": image_bytes("TIFF"),
        "art/pen/e.png": image_bytes("PNG"), "art/pen/notes.txt": b"not an image",
        "art/pen/nested/f.jpg": b"", "art/README.md": b"outside any class",
        "art/pen/._e.png": b"macOS fork: hidden, not part of the dataset",
    }
    for relpath, data in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    acquire(project, "folder", {"root": str(root)})
    params = make_params(project / "data", datasets={"folder": {"root": str(root)}})
    split_file, report_file = write_split(params, "folder")

    splits = json.loads(split_file.read_text())["domains"]["art"]
    used = {entry["path"]: entry["class"] for split in splits.values() for entry in split}
    assert used == {"art/cup/a.gif": "cup", "art/cup/b.JPG": "cup", "art/cup/d.tif": "cup",
                    "art/cup/nested/deeper/c.png": "cup", "art/pen/e.png": "pen"}
    skipped = json.loads(report_file.read_text())["skipped"]
    reasons = {item["path"]: item["reason"] for item in skipped}
    assert reasons == {
        "art/pen/notes.txt": reasons["art/pen/notes.txt"], "art/pen/nested/f.jpg": "empty file",
        "art/README.md": "not inside a class folder",
    }
    assert "UnidentifiedImageError" in reasons["art/pen/notes.txt"]
    visible = {path for path in files if not Path(path).name.startswith(".")}
    assert set(used) | set(reasons) == visible
