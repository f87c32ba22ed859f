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
     ({}, {"NSTRACK_RESCAN_SECONDS": "0"}, "rescan_seconds: Input should be greater than or equal to 0.1 (from NSTRACK_RESCAN_SECONDS)"),
     ({}, {"NSTRACK_RESCAN_SECONDS": "1e-9"}, "rescan_seconds: Input should be greater than or equal to 0.1"),
     ({}, {"NSTRACK_RESCAN_SECONDS": "4000"}, "rescan_seconds: Input should be less than or equal to 3600"),
     ({"rescan_seconds": float("inf")}, {}, "rescan_seconds: Input should be a finite number"),
     ({}, {"NSTRACK_RESCAN_SECONDS": "nan"}, "rescan_seconds: Input should be a finite number"),
     ({}, {"NSTRACK_HOLDERS_SECONDS": "0.1"}, "holders_seconds: Input should be greater than or equal to 0.5"),
     ({}, {"NSTRACK_REQUEST_TIMEOUT": "inf"}, "request_timeout: Input should be a finite number"),
     ({}, {"NSTRACK_TOMBSTONE_SECONDS": "1e12"}, "tombstone_seconds: Input should be less than or equal to 604800"),
     ({}, {"NSTRACK_RINGBUF_BYTES": str(1 << 31)}, "ringbuf_bytes: Input should be less than or equal to 1073741824"),
     ({}, {"NSTRACK_PER_NAMESPACE_LIMIT": "1000000"}, "per_namespace_limit: Input should be less than or equal to 100000"),
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
    f.write_bytes(b"listen: 127.0.0.1:1\nmode: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 26"):
        load(str(f), {}, environ={})


def test_serve_exits_2_for_a_config_file_that_is_not_text(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    r = subprocess.run([sys.executable, "-m", "nstrack", "serve", "--config", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not UTF-8 text" in r.stderr


def test_serve_exits_2_naming_the_field(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("per_namespace_limit: 0\n")
    r = subprocess.run([sys.executable, "-m", "nstrack", "serve", "--config", str(f)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "per_namespace_limit: Input should be greater than or equal to 1 (from config file" in r.stderr
