"""The two locks: requirements.lock (installed by `make venv`) and requirements-remote.lock (the
`remote` extra, `make remote-plugins`) must agree, or installing the plugins would move a pin
that results depend on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version
            for name, version in PIN.findall(lock.read_text())}


def test_the_remote_lock_keeps_every_pin_of_the_main_lock_and_pins_the_remote_extra():
    main = pins(ROOT / "requirements.lock")
    remote = pins(ROOT / "requirements-remote.lock")
    moved = {name: (main[name], remote[name]) for name in main.keys() & remote.keys()
             if main[name] != remote[name]}
    assert moved == {}, f"make lock-remote: pins differ from requirements.lock: {moved}"
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["remote"]
    for requirement in extra:
        name, version = requirement.split("==")
        assert remote[name] == version, requirement
        assert name not in main, f"{name} is in requirements.lock: the remote extra is optional"
