"""The standalone server's persisted identity: a JSON file holding its private key.

The format matches derper's ``-c`` file, ``{"PrivateKey": "privkey:<hex>"}``,
so a key can move between derper and this server and keep the same identity
(clients pin a DERP server's public key only loosely, but mesh peers log it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pyheadscale.tailkey import NodePrivate


class ConfigError(ValueError):
    """The config file exists but cannot be used."""


def load_or_create_private_key(path: str | os.PathLike[str]) -> NodePrivate:
    """Read the key from ``path``, creating the file (mode 0600) with a new key if missing."""
    config_path = Path(path)
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        key = NodePrivate.generate()
        _write_atomically(config_path, json.dumps({"PrivateKey": key.to_text()}, indent="\t"))
        return key
    try:
        doc = json.loads(raw)
        return NodePrivate.from_text(doc["PrivateKey"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: no usable PrivateKey: {exc}") from exc


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
