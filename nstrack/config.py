"""Configuration of `nstrack serve`: one pydantic model fed by a YAML file, NSTRACK_* variables and flags.

Precedence: flags > environment > file > defaults. An invalid value is reported with the field's name::

    nstrack serve: invalid configuration: rescan_seconds: Input should be greater than or equal to 0.1 (from NSTRACK_RESCAN_SECONDS)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PORT = 9864
ENV_PREFIX = "NSTRACK_"


class ConfigError(ValueError):
    pass


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = Field(f"127.0.0.1:{DEFAULT_PORT}", description="ADDR:PORT to serve on")
    mode: str | None = Field(None, description="force a tracking mode (default: best available)")
    # Every number has bounds (and no infinity or NaN): a rescan every nanosecond is a busy loop, one never
    # keeps /healthz green while nothing is checked.
    rescan_seconds: float | None = Field(None, ge=0.1, le=3600, allow_inf_nan=False,
                                         description="rescan interval, 0.1-3600 (free latency bound in "
                                         "tracepoint mode; default 2 there, 60 in the event modes)")
    holders_seconds: float = Field(30.0, ge=0.5, le=3600, allow_inf_nan=False,
                                   description="how often holders (fds, mounts, sockets) are rescanned in the "
                                   "background, 0.5-3600 (/namespaces and /namespaces/{id} refresh them when older "
                                   "than 1 s)")
    ringbuf_bytes: int = Field(1 << 20, ge=4096, le=1 << 30, description="event ring buffer size (a power of 2, "
                               "4 KiB to 1 GiB)")
    tombstone_seconds: float = Field(300.0, ge=0, le=7 * 86400, allow_inf_nan=False,
                                     description="how long destroyed namespaces stay queryable, up to a week")
    per_namespace_metrics: bool = Field(False, description="export one series per namespace (capped)")
    per_namespace_limit: int = Field(1000, ge=1, le=100_000, description="cap on per-namespace series, 1-100000")
    request_timeout: float = Field(10.0, ge=0.1, le=600, allow_inf_nan=False,
                                   description="seconds a client may take to send a request, 0.1-600")
    web_config_file: str | None = Field(None, description="Prometheus-style web config: TLS cert/key and "
                                        "bcrypt basic-auth users for every endpoint")
    keep_caps: bool = Field(False, description="keep every capability after attaching (default: drop all but "
                            "CAP_BPF and CAP_SYS_PTRACE)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ValueError("expected ADDR:PORT, e.g. 127.0.0.1:9864")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        from .model.nstypes import MODES

        if v is not None and v not in MODES:
            raise ValueError(f"unknown mode {v!r}; valid modes: {', '.join(MODES)}")
        return v

    @field_validator("ringbuf_bytes")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of 2")
        return v

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def read_yaml_mapping(path: str, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or ConfigError saying what is wrong with it."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of settings at the top level")
    return loaded


def load(file: str | None, flags: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    """Merge file, environment and flags (set ones only) into a validated Config."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        loaded = read_yaml_mapping(path)
        data.update(loaded)
        origin.update({k: f"config file {path}" for k in loaded})
    for name in Config.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            data[name] = env[key]
            origin[name] = key
    for name, value in flags.items():
        if value is not None:
            data[name] = value
            origin[name] = f"--{name.replace('_', '-')}"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"]) or "config"
            src = origin.get(str(e["loc"][0]) if e["loc"] else "", "")
            msg = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"{field}: {msg}" + (f" (from {src})" if src else ""))
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
