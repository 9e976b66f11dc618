"""The till's keys, kept as files in the data folder.

- keys/terminal.pem: this terminal's Ed25519 key; it signs receipt-claim QR codes.
- keys/member-signing.pem: only on a till that runs without head office; it signs member
  cards. Enrolling with head office hands that role over: HQ's public key is then trusted.
- keys/trusted.json: public keys this till trusts, {"members": {key_id: hex},
  "terminals": {terminal_id: hex}}.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..loyalty import tokens


@dataclass
class Keys:
    """Signing keys and trusted public keys of one till."""

    terminal_id: str
    terminal: Ed25519PrivateKey
    member_signing: Ed25519PrivateKey | None = None
    member_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    terminal_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.terminal_keys.setdefault(self.terminal_id, self.terminal.public_key())
        if self.member_signing is not None:
            pub = self.member_signing.public_key()
            self.member_keys.setdefault(tokens.key_id(pub), pub)

    @classmethod
    def generate(cls, terminal_id: str, *, standalone: bool = True) -> Keys:
        """Fresh keys for a new till; a standalone till also signs member cards itself."""
        return cls(terminal_id, tokens.new_private_key(), tokens.new_private_key() if standalone else None)

    def save(self, folder: Path) -> None:
        """Write the keys into `folder` (private keys readable by the owner only)."""
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(folder / "terminal.pem", tokens.private_pem(self.terminal))
        if self.member_signing is not None:
            _write_private(folder / "member-signing.pem", tokens.private_pem(self.member_signing))
        trusted = {
            "members": {k: tokens.public_bytes(v).hex() for k, v in self.member_keys.items()},
            "terminals": {k: tokens.public_bytes(v).hex() for k, v in self.terminal_keys.items()},
        }
        tmp = folder / "trusted.json.tmp"
        tmp.write_text(json.dumps(trusted, indent=2, sort_keys=True))
        os.replace(tmp, folder / "trusted.json")

    @classmethod
    def load(cls, folder: Path, terminal_id: str) -> Keys:
        """Read the keys written by `save`."""
        terminal = tokens.load_private_pem((folder / "terminal.pem").read_bytes())
        ms_path = folder / "member-signing.pem"
        member_signing = tokens.load_private_pem(ms_path.read_bytes()) if ms_path.exists() else None
        trusted = json.loads((folder / "trusted.json").read_text()) if (folder / "trusted.json").exists() else {}
        return cls(
            terminal_id,
            terminal,
            member_signing,
            {k: tokens.public_from_bytes(bytes.fromhex(v)) for k, v in trusted.get("members", {}).items()},
            {k: tokens.public_from_bytes(bytes.fromhex(v)) for k, v in trusted.get("terminals", {}).items()},
        )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
