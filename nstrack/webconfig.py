"""TLS and basic auth for `nstrack serve`, configured like Prometheus' web configuration file::

    tls_server_config:
      cert_file: /etc/nstrack/tls.crt
      key_file: /etc/nstrack/tls.key
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt hash, e.g. from `htpasswd -nBC 10 prometheus`

Every endpoint then needs the credentials (401 otherwise). Verified passwords are cached in memory
(by a SHA-256 of user, password and hash) so that bcrypt's cost is paid once, not per scrape.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .config import ConfigError, read_yaml_mapping


class TLSServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: str
    key_file: str


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt(cls, v: dict[str, str]) -> dict[str, str]:
        for user, h in v.items():
            if not h.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"password of {user!r} is not a bcrypt hash ($2y$...)")
        return v


def load_web_config(path: str) -> WebConfig:
    data = read_yaml_mapping(path, "web config file")
    try:
        cfg = WebConfig.model_validate(data)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"]) or "web config"
            parts.append(f"{field}: {'unknown setting' if e['type'] == 'extra_forbidden' else e['msg']}")
        raise ConfigError(f"invalid web config file {path}: " + "; ".join(parts)) from None
    if cfg.tls_server_config:
        for f in (cfg.tls_server_config.cert_file, cfg.tls_server_config.key_file):
            if not Path(f).is_file():
                raise ConfigError(f"invalid web config file {path}: tls_server_config: no such file {f}")
    return cfg


def ssl_context(cfg: WebConfig) -> ssl.SSLContext | None:
    if cfg.tls_server_config is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_server_config.cert_file, cfg.tls_server_config.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls_server_config: cannot load certificate and key: {exc}") from None
    return ctx


class BasicAuth:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = {u: h.encode() for u, h in users.items()}
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def check(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        with self._lock:
            if any(hmac.compare_digest(key, k) for k in self._ok):
                return True
        import bcrypt

        if bcrypt.checkpw(password.encode(), b"$2b$" + hashed[4:] if hashed.startswith(b"$2y$") else hashed):
            with self._lock:
                self._ok.add(key)
            return True
        return False
