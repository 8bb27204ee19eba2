"""Downloads from real servers on 127.0.0.1 that cut transfers short, stall, trickle, stay silent
or refuse, and fail on cue."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from align.config import parse_params
from align.data import gdrive_download, http_download
from align.data.archives import extract_archive, scratch_folder
from align.data.gdrive_download import download_gdrive
from align.data.http_download import download, partial_path
from align.errors import UserError

BLOB = gzip.compress(random.Random(0).randbytes(100_000), mtime=0)  # 100 KiB .gz, several chunks
BLOB_SHA256 = hashlib.sha256(BLOB).hexdigest()
HTML = b"<!DOCTYPE html>\n<html><body>Download quota exceeded. Sign in.</body></html>\n"


@dataclass
class ServerState:
    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    """Per path, what the next requests do: "503", "503-retry-after" (asks to wait an hour),
    "ignore-range", "drop-after-<bytes>" or "trickle" (a byte every 0.1 s), or several joined
    by "+" ("ignore-range+drop-after-30000": a server that restarts and cuts every transfer)."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Range header) of every request, in order."""

    def url(self, path: str) -> str:
        return self.base_url + path


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        state.requests.append((path, range_header))
        faults = state.faults[path].pop(0).split("+") if state.faults.get(path) else []
        if "503" in faults or "503-retry-after" in faults:
            self.send_response(503)
            if "503-retry-after" in faults:
                self.send_header("Retry-After", "3600")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path not in state.files:
            self.send_error(404)
            return
        body = state.files[path]
        start = 0
        if range_header and "ignore-range" not in faults:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header)[1])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if "trickle" in faults:
            try:
                for byte in payload[:50]:  # the client gives up long before
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it did
            return
        drops = [int(fault.removeprefix("drop-after-")) for fault in faults
                 if fault.startswith("drop-after-")]
        if drops:
            # Announce the whole length, send a prefix, hang up: an interrupted transfer.
            self.wfile.write(payload[: drops[0]])
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server() -> Iterator[ServerState]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    state = ServerState(base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def fetch(url: str, dest: Path, **options) -> Path:
    """`download` with the lock file beside `dest` (unused where a sha256 is given)."""
    return download(url, dest, lock_file=dest.parent / "checksums.json", **options)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the back-off delays instead of waiting them out."""
    delays: list[float] = []
    monkeypatch.setattr(http_download.time, "sleep", delays.append)
    return delays


def test_first_download_records_its_checksum_and_later_ones_are_verified(
    server: ServerState, tmp_path: Path
) -> None:
    lock = tmp_path / "checksums.json"
    lock.write_text(json.dumps({"zzz:other.tar": "f" * 64}))
    server.files["/blob.bin"] = BLOB
    dest = download(server.url("/blob.bin"), tmp_path / "dl" / "blob.bin",
                    checksum_key="test:blob.bin", lock_file=lock)

    assert dest.read_bytes() == BLOB
    assert json.loads(lock.read_text()) == {"test:blob.bin": BLOB_SHA256, "zzz:other.tar": "f" * 64}
    assert lock.read_text().index("test:blob.bin") < lock.read_text().index("zzz:other.tar")

    changed = gzip.compress(b"the file changed upstream", mtime=0)
    server.files["/blob.bin"] = changed
    other = tmp_path / "dl" / "again.bin"
    with pytest.raises(UserError) as error:
        download(server.url("/blob.bin"), other, checksum_key="test:blob.bin", lock_file=lock)
    message = str(error.value)
    got = hashlib.sha256(changed).hexdigest()
    assert str(other) in message and BLOB_SHA256 in message and got in message
    assert not other.exists() and not partial_path(other).exists()
    assert json.loads(lock.read_text())["test:blob.bin"] == BLOB_SHA256


def test_a_verified_download_is_not_fetched_again(server: ServerState, tmp_path: Path) -> None:
    server.files["/blob.bin"] = BLOB
    dest = tmp_path / "blob.bin"
    fetch(server.url("/blob.bin"), dest, sha256=BLOB_SHA256)
    fetch(server.url("/blob.bin"), dest, sha256=BLOB_SHA256)
    assert len(server.requests) == 1


def test_an_interrupted_transfer_resumes_with_a_range_request(
    server: ServerState, tmp_path: Path, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bytes reach the file a chunk at a time, so a cut at a chunk boundary keeps all it received.
    monkeypatch.setattr(http_download, "CHUNK_BYTES", 10_000)
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["drop-after-30000"]
    dest = fetch(server.url("/blob.bin"), tmp_path / "blob.bin", sha256=BLOB_SHA256,
                 backoff_s=0.01)
    assert dest.read_bytes() == BLOB
    assert server.requests == [("/blob.bin", None), ("/blob.bin", "bytes=30000-")]
    assert no_sleep == []  # urllib3's back-off: the first retry follows at once


def test_a_partial_file_left_by_an_earlier_run_is_resumed(
    server: ServerState, tmp_path: Path
) -> None:
    server.files["/blob.bin"] = BLOB
    dest = tmp_path / "blob.bin"
    partial_path(dest).write_bytes(BLOB[:12345])
    fetch(server.url("/blob.bin"), dest, sha256=BLOB_SHA256)
    assert dest.read_bytes() == BLOB
    assert server.requests == [("/blob.bin", "bytes=12345-")]


def test_a_server_that_ignores_range_makes_the_download_restart_from_zero(
    server: ServerState, tmp_path: Path
) -> None:
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["ignore-range"]
    dest = tmp_path / "blob.bin"
    partial_path(dest).write_bytes(b"stale bytes of something else")
    fetch(server.url("/blob.bin"), dest, sha256=BLOB_SHA256)
    assert dest.read_bytes() == BLOB


def test_a_partial_file_longer_than_the_file_is_discarded(
    server: ServerState, tmp_path: Path
) -> None:
    server.files["/blob.bin"] = BLOB
    dest = tmp_path / "blob.bin"
    partial_path(dest).write_bytes(BLOB + b"junk")
    fetch(server.url("/blob.bin"), dest, sha256=BLOB_SHA256)
    assert dest.read_bytes() == BLOB


def test_a_download_cut_many_times_gets_its_retries_back_after_each_progress(
    server: ServerState, tmp_path: Path, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_download, "CHUNK_BYTES", 10_000)
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["drop-after-20000"] * 4
    dest = fetch(server.url("/blob.bin"), tmp_path / "blob.bin", sha256=BLOB_SHA256, retries=1)
    assert dest.read_bytes() == BLOB and len(server.requests) == 5


def test_server_errors_are_retried_with_exponential_back_off(
    server: ServerState, tmp_path: Path, no_sleep: list[float]
) -> None:
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["503", "503", "503"]
    dest = fetch(server.url("/blob.bin"), tmp_path / "blob.bin", sha256=BLOB_SHA256,
                 backoff_s=0.5)
    assert dest.read_bytes() == BLOB
    assert no_sleep == [1.0, 2.0]  # none before the first retry, then backoff_s * 2**(n-1)
    assert len(server.requests) == 4


def test_giving_up_names_the_url_and_the_offline_params(
    server: ServerState, tmp_path: Path, no_sleep: list[float]
) -> None:
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["503"] * 10
    url = server.url("/blob.bin")
    with pytest.raises(UserError, match="gave up after 3 failed attempts") as error:
        fetch(url, tmp_path / "blob.bin", retries=2, backoff_s=0.01)
    assert url in str(error.value) and "archive" in str(error.value)
    assert "\n" not in str(error.value)
    assert len(server.requests) == 3 and no_sleep == [0.02]


def test_an_unreachable_host_is_a_user_error(tmp_path: Path, no_sleep: list[float]) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/VLCS.tar.gz"
    with pytest.raises(UserError, match=re.escape(url)):
        fetch(url, tmp_path / "VLCS.tar.gz", retries=1, offline_hint="set datasets.x.archive")
    assert not (tmp_path / "VLCS.tar.gz").exists()


def test_a_missing_file_is_not_retried(server: ServerState, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="404"):
        fetch(server.url("/nothing.tar.gz"), tmp_path / "nothing.tar.gz")
    assert len(server.requests) == 1


def test_a_wrong_sha256_deletes_the_download(server: ServerState, tmp_path: Path) -> None:
    server.files["/blob.bin"] = BLOB
    dest = tmp_path / "blob.bin"
    with pytest.raises(UserError, match="checksum mismatch") as error:
        fetch(server.url("/blob.bin"), dest, sha256="0" * 64)
    assert "0" * 64 in str(error.value) and BLOB_SHA256 in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_lock_file_is_a_user_error(server: ServerState, tmp_path: Path) -> None:
    lock = tmp_path / "checksums.json"
    lock.write_text("{not json")
    with pytest.raises(UserError, match="checksums.json"):
        download(server.url("/blob.bin"), tmp_path / "blob.bin", checksum_key="k", lock_file=lock)


def test_gdrive_downloads_through_gdown_and_shares_the_checksum_policy(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gdown fetches any URL it is given; only Drive's own host triggers its confirmation-page logic.
    monkeypatch.setattr(gdrive_download, "GDRIVE_URL", server.url("/uc") + "?id={file_id}")
    server.files["/uc"] = BLOB
    lock = tmp_path / "checksums.json"
    dest = download_gdrive("FILE_ID", tmp_path / "dl" / "VLCS.tar.gz", checksum_key="vlcs:x",
                           lock_file=lock)
    assert dest.read_bytes() == BLOB
    assert json.loads(lock.read_text()) == {"vlcs:x": BLOB_SHA256}
    assert sorted(path.name for path in dest.parent.iterdir()) == ["VLCS.tar.gz"]

    server.files["/uc"] = gzip.compress(b"a different file", mtime=0)
    again = tmp_path / "dl2" / "VLCS.tar.gz"
    with pytest.raises(UserError, match="checksum mismatch"):
        download_gdrive("FILE_ID", again, checksum_key="vlcs:x", lock_file=lock)
    assert list(again.parent.iterdir()) == []


def test_gdrive_failure_is_a_user_error_with_the_offline_hint(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gdrive_download, "GDRIVE_URL", server.url("/uc") + "?id={file_id}")
    with pytest.raises(UserError, match="set datasets.vlcs.archive"):
        download_gdrive("NOPE", tmp_path / "VLCS.tar.gz", retries=0,
                        lock_file=tmp_path / "checksums.json",
                        offline_hint="set datasets.vlcs.archive")


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zip_file:
        for name, data in members.items():
            zip_file.writestr(name, data)
    return path


MEMBERS = {"VLCS/SUN09/dog/a.jpg": b"a", "VLCS/SUN09/car/b.jpg": b"bb"}


@pytest.mark.parametrize(
    ("name", "maker"),
    [
        ("x.tar.gz", make_tar),
        ("x.tgz", make_tar),
        ("x.tar", lambda path, members: make_tar(path, members, "w")),
        ("x.zip", make_zip),
    ],
)
def test_extract_archive_formats(tmp_path: Path, name: str, maker) -> None:
    archive = maker(tmp_path / name, MEMBERS)
    dest = extract_archive(archive, tmp_path / "out")
    assert (dest / "VLCS/SUN09/dog/a.jpg").read_bytes() == b"a"
    assert (dest / "VLCS/SUN09/car/b.jpg").read_bytes() == b"bb"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([name, "out"])


@pytest.mark.parametrize("bad_name", ["../evil.txt", "VLCS/../../evil.txt", "/tmp/evil.txt"])
@pytest.mark.parametrize("maker", [make_tar, make_zip])
def test_extract_archive_refuses_path_traversal(tmp_path: Path, bad_name: str, maker) -> None:
    archive = maker(tmp_path / "bad.archive", {"VLCS/ok.jpg": b"ok", bad_name: b"evil"})
    with pytest.raises(UserError, match=re.escape(repr(bad_name))):
        extract_archive(archive, tmp_path / "work" / "out")
    # Nothing half-extracted is left behind, and nothing was written outside.
    assert list((tmp_path / "work").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_extract_archive_refuses_links_pointing_outside(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("VLCS/passwd.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError, match="refusing"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_truncated_archive_is_a_user_error(tmp_path: Path) -> None:
    whole = make_tar(tmp_path / "whole.tar.gz", {"a.bin": random.Random(0).randbytes(50_000)})
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(whole.read_bytes()[:20_000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        extract_archive(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_a_file_that_is_no_archive_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a tar or zip archive"):
        extract_archive(tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(UserError, match="no such archive file"):
        extract_archive(tmp_path / "missing.tar.gz", tmp_path / "out")


def test_extract_archive_replaces_an_earlier_extraction(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.jpg").write_bytes(b"old")
    (tmp_path / ".out.partial").mkdir()  # left by a killed run
    extract_archive(make_tar(tmp_path / "x.tar.gz", MEMBERS), tmp_path / "out")
    assert not (tmp_path / "out" / "old.jpg").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "x.tar.gz"]


def test_scratch_folder_is_emptied_before_and_removed_after(tmp_path: Path) -> None:
    raw_dir = tmp_path / ".vlcs.partial"
    leftover = tmp_path / ".vlcs.partial.scratch" / "left.jpg"
    leftover.parent.mkdir()
    leftover.write_bytes(b"x")
    with scratch_folder(raw_dir) as scratch:
        assert scratch.parent == tmp_path and list(scratch.iterdir()) == []
    assert not scratch.exists()


# Bad payloads, bad URLs, and servers that never finish ----------------------------------------


def test_an_html_page_served_with_200_is_refused_and_not_pinned(
    server: ServerState, tmp_path: Path
) -> None:
    lock = tmp_path / "checksums.json"
    server.files["/VLCS.tar.gz"] = HTML  # a quota, login or captive-portal page
    dest = tmp_path / "dl" / "VLCS.tar.gz"
    with pytest.raises(UserError, match="got an HTML page") as error:
        download(server.url("/VLCS.tar.gz"), dest, checksum_key="vlcs:x", lock_file=lock)
    assert server.url("/VLCS.tar.gz") in str(error.value) and "\n" not in str(error.value)
    assert not lock.exists() and list(dest.parent.iterdir()) == []

    server.files["/VLCS.tar.gz"] = BLOB  # the real archive, later, is accepted and pinned
    download(server.url("/VLCS.tar.gz"), dest, checksum_key="vlcs:x", lock_file=lock)
    assert json.loads(lock.read_text()) == {"vlcs:x": BLOB_SHA256}


def test_a_payload_that_is_no_archive_is_refused_even_with_a_matching_sha256(
    server: ServerState, tmp_path: Path
) -> None:
    server.files["/x.tar.gz"] = b"plain text"
    with pytest.raises(UserError, match=r"not a tar, gzip, bzip2, xz or zip archive"):
        fetch(server.url("/x.tar.gz"), tmp_path / "x.tar.gz",
              sha256=hashlib.sha256(b"plain text").hexdigest())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("maker", [
    lambda: BLOB,
    lambda: make_tar_bytes("w"),
    lambda: make_tar_bytes("w:bz2"),
    lambda: make_tar_bytes("w:xz"),
    lambda: make_zip_bytes(),
])
def test_every_archive_format_extract_archive_reads_is_accepted(
    server: ServerState, tmp_path: Path, maker
) -> None:
    server.files["/archive"] = maker()
    fetch(server.url("/archive"), tmp_path / "archive", checksum_key="k")
    assert json.loads((tmp_path / "checksums.json").read_text())["k"]


def test_a_stale_html_download_is_not_pinned_when_reused(
    server: ServerState, tmp_path: Path
) -> None:
    dest = tmp_path / "VLCS.tar.gz"
    dest.write_bytes(HTML)  # left by an earlier version that did not check
    server.files["/VLCS.tar.gz"] = BLOB
    fetch(server.url("/VLCS.tar.gz"), dest, checksum_key="vlcs:x")
    assert dest.read_bytes() == BLOB
    assert json.loads((tmp_path / "checksums.json").read_text()) == {"vlcs:x": BLOB_SHA256}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.org/VLCS.tar.gz", "only http:// and https:// URLs can be downloaded"),
        ("VLCS.tar.gz", "only http:// and https:// URLs can be downloaded"),
        ("http://[::1/VLCS.tar.gz", "malformed URL"),
        ("http://example.org:port/VLCS.tar.gz", "malformed URL"),
        ("http:///VLCS.tar.gz", "the URL names no host"),
        ("https://example.org/my file.tar.gz", "spaces must be escaped as %20"),
    ],
)
def test_a_bad_url_is_one_line_in_params_and_in_download(
    tmp_path: Path, url: str, expected: str
) -> None:
    with pytest.raises(UserError) as error:
        fetch(url, tmp_path / "VLCS.tar.gz", offline_hint="set datasets.vlcs.archive")
    assert expected in str(error.value) and "datasets.vlcs.archive" in str(error.value)
    with pytest.raises(UserError) as error:
        parse_params({"datasets": {"vlcs": {"url": url}}})
    assert f"datasets.vlcs.url: {expected}" in str(error.value)
    with pytest.raises(UserError, match=f"datasets.terra_incognita.images_url: {expected}"):
        parse_params({"datasets": {"terra_incognita": {"images_url": url}}})


def test_a_trickling_server_fails_as_stalled_and_keeps_what_arrived(
    server: ServerState, tmp_path: Path
) -> None:
    # One byte every 0.1 s is far below 1 KiB per stall_s: stalled, resumed, stalled, given up.
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["trickle"] * 10
    started = time.monotonic()
    with pytest.raises(UserError, match="stalled") as error:
        fetch(server.url("/blob.bin"), tmp_path / "blob.bin", stall_s=0.5, retry_s=0.8,
              backoff_s=0.01)
    assert time.monotonic() - started < 4
    assert "data.download" in str(error.value) and "\n" not in str(error.value)
    assert len(server.requests) >= 2
    assert all(range_header for _, range_header in server.requests[1:])  # resumed each time
    assert 0 < partial_path(tmp_path / "blob.bin").stat().st_size < 30


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/VLCS.tar.gz"


def test_a_silent_server_fails_within_the_retry_budget(silent_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(UserError, match="timed out") as error:
        fetch(silent_url, tmp_path / "VLCS.tar.gz", stall_s=0.2, retry_s=0.5, backoff_s=0.05)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3  # retried, but not past the budget (the default takes 2 minutes)
    assert "gave up after" in str(error.value) and silent_url in str(error.value)


def test_a_refused_connection_is_reported_in_seconds(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(UserError, match="refused"):
        fetch(f"http://127.0.0.1:{port}/VLCS.tar.gz", tmp_path / "VLCS.tar.gz", backoff_s=0.2)
    # CONNECT_RETRIES: two quick retries (no wait, then 0.4 s), with the default 2-minute budget.
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "bounds, named",
    [
        ({"retry_s": 0.5}, "retry_s = 0.5"),  # the budget of a streak without progress
        ({"retry_s": 1000, "backoff_s": 0.01, "total_s": 0.5}, "data.download.total_s = 0.5 s"),
    ],
)
def test_retries_stop_at_the_budget_whatever_the_count_or_retry_after(
    server: ServerState, tmp_path: Path, bounds: dict, named: str
) -> None:
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["503-retry-after"] * 1000
    started = time.monotonic()
    with pytest.raises(UserError, match="HTTP 503") as error:
        fetch(server.url("/blob.bin"), tmp_path / "blob.bin", retries=1000, **bounds)
    assert time.monotonic() - started < 3  # the server asked for an hour
    assert named in str(error.value)


@pytest.mark.parametrize(("backoff_s", "sleeps"), [(1.0, [2.0, 4.0, 8.0]), (40.0, [60.0] * 3)])
def test_a_server_that_ignores_range_and_cuts_every_transfer_is_given_up_with_back_off(
    server: ServerState, tmp_path: Path, no_sleep: list[float], backoff_s: float,
    sleeps: list[float],
) -> None:
    # Every attempt restarts from byte 0 and is cut at the same place: more than 1 KiB arrives
    # each time, but the .part never gets further than after the first attempt.
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["ignore-range+drop-after-30000"] * 100
    url = server.url("/blob.bin")
    with pytest.raises(UserError, match="gave up after 5 failed attempts") as error:
        fetch(url, tmp_path / "blob.bin", sha256=BLOB_SHA256, backoff_s=backoff_s)
    assert len(server.requests) == 5  # one attempt that progressed, then retries=4 without
    assert no_sleep == sleeps  # exponential in the streak's failures, at most MAX_BACKOFF_S
    message = str(error.value)
    assert url in message and "IncompleteRead(30000 bytes read" in message
    assert "data.download.retry_s = 120" in message and "\n" not in message
    assert partial_path(tmp_path / "blob.bin").stat().st_size == 30_000  # kept, to resume


def test_a_download_that_progresses_every_time_stops_at_the_attempts_cap(
    server: ServerState, tmp_path: Path, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_download, "CHUNK_BYTES", 10_000)
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["drop-after-20000"] * 10
    with pytest.raises(UserError, match="gave up after 3 failed attempts") as error:
        fetch(server.url("/blob.bin"), tmp_path / "blob.bin", sha256=BLOB_SHA256, attempts=3)
    assert "data.download.attempts = 3" in str(error.value)
    assert len(server.requests) == 3
    assert partial_path(tmp_path / "blob.bin").stat().st_size == 60_000  # the next run resumes


def test_a_transfer_trickling_just_above_the_stall_threshold_stops_at_the_time_cap(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a 1-byte threshold, a byte every 0.1 s is never stalled: only total_s ends it.
    monkeypatch.setattr(http_download, "STALL_BYTES", 1)
    server.files["/blob.bin"] = BLOB
    server.faults["/blob.bin"] = ["trickle"] * 10
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        fetch(server.url("/blob.bin"), tmp_path / "blob.bin", stall_s=0.3, total_s=1.0)
    assert time.monotonic() - started < 3
    message = str(error.value)
    assert "data.download.total_s = 1 s" in message and "\n" not in message
    assert len(server.requests) == 1
    assert 0 < partial_path(tmp_path / "blob.bin").stat().st_size < 30  # kept, to resume


@pytest.mark.parametrize(
    "bounds, said",
    [
        ({"stall_s": 0.5}, "stalled"),
        # gdown reports progress per 512 KiB chunk: a stall_s longer than total_s stands for a
        # trickle that is never stalled.
        ({"stall_s": 30, "total_s": 1.0}, r"data\.download\.total_s = 1 s"),
    ],
)
def test_a_trickling_google_drive_download_stops_stalled_or_at_the_time_cap(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bounds: dict, said: str
) -> None:
    monkeypatch.setattr(gdrive_download, "GDRIVE_URL", server.url("/uc") + "?id={file_id}")
    server.files["/uc"] = BLOB
    server.faults["/uc"] = ["trickle"] * 10
    started = time.monotonic()
    with pytest.raises(UserError, match=said) as error:
        download_gdrive("FILE_ID", tmp_path / "VLCS.tar.gz", lock_file=tmp_path / "lock.json",
                        retries=0, **bounds)
    assert time.monotonic() - started < 4 and "\n" not in str(error.value)


def make_tar_bytes(mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        info = tarfile.TarInfo("VLCS/a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return buffer.getvalue()


def make_zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zip_file:
        zip_file.writestr("VLCS/a.jpg", b"abc")
    return buffer.getvalue()
