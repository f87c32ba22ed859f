from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nstrack.config import DEFAULT_PORT, ConfigError, load


def test_defaults() -> None:
    c = load(None, {}, environ={})
    assert c.listen == f"127.0.0.1:{DEFAULT_PORT}" and c.address == ("127.0.0.1", DEFAULT_PORT)
    assert c.mode is None and c.per_namespace_metrics is False


def test_precedence_flags_env_file(tmp_path: Path) -> None:
    f = tmp_path / "nstrack.yml"
    f.write_text("listen: 127.0.0.1:1000\nholders_seconds: 5\nrescan_seconds: 7\n")
    env = {"NSTRACK_LISTEN": "127.0.0.1:2000", "NSTRACK_HOLDERS_SECONDS": "3"}
    c = load(str(f), {"listen": "127.0.0.1:3000", "rescan_seconds": None}, environ=env)
    assert c.listen == "127.0.0.1:3000"  # flag
    assert c.holders_seconds == 3  # environment over file
    assert c.rescan_seconds == 7  # file


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [({"listen": "nowhere"}, {}, "listen: Value error, expected ADDR:PORT"),
     ({}, {"NSTRACK_RESCAN_SECONDS": "0"}, "rescan_seconds: Input should be greater than 0 (from NSTRACK_RESCAN_SECONDS)"),
     ({"mode": "turbo"}, {}, "mode: Value error, unknown mode 'turbo'"),
     ({}, {"NSTRACK_RINGBUF_BYTES": "5000"}, "ringbuf_bytes: Value error, must be a power of 2")],
)
def test_invalid_values_name_the_field(flags: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as ei:
        load(None, flags, environ=env)
    assert message in str(ei.value)


def test_bad_files(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("lisen: 1\n")
    with pytest.raises(ConfigError, match="lisen: unknown setting"):
        load(str(f), {}, environ={})
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load(str(f), {}, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(str(tmp_path / "missing.yml"), {}, environ={})


def test_serve_exits_2_naming_the_field(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("per_namespace_limit: 0\n")
    r = subprocess.run([sys.executable, "-m", "nstrack", "serve", "--config", str(f)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "per_namespace_limit: Input should be greater than or equal to 1 (from config file" in r.stderr
