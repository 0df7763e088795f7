"""API keys: who a caller of `ragmart serve` is, and therefore what it may see.

A request's access groups come from its key and from nothing else: the request body has no
field for them (unknown fields are refused), and no header or query parameter is read for them.
The operator switch that admits every document (`all_groups`) is a property of a key, set when
the key is created, never something a request can ask for.

The keys file (RAGMART_API_KEYS_FILE, JSON, or YAML read with ragmart.safe_yaml) holds no key:
each entry is the key's SHA-256 (a key is 256 random bits, so a fast hash is as strong as a slow
one: there is nothing to guess), its name, its groups and the switch:

    {"keys": [{"name": "helpdesk", "sha256": "9f2c...", "groups": ["all-staff"],
               "all_groups": false, "created_at": "2026-11-30T08:00:00"}]}

A presented key is hashed and compared with every stored hash by `hmac.compare_digest`, all of
them every time: the time taken does not depend on which entry, if any, matches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragmart.retrieval.request import ALL_GROUPS, Groups

KEYS_ENV = "RAGMART_API_KEYS_FILE"
PREFIX = "rmk_"
_HEX = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")
# what a bearer token may look like (RFC 6750 b64token), bounded: anything else is no key
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,256}=*")
_FIELDS = {"name", "sha256", "groups", "all_groups", "created_at"}


class KeysFileError(ValueError):
    """A keys file that cannot be read, or an entry in it that is not valid."""


@dataclass(frozen=True)
class ApiKey:
    """One key's entry: never the key itself."""

    name: str
    sha256: str
    groups: tuple[str, ...] = ()
    all_groups: bool = False
    created_at: str | None = None

    @property
    def access(self) -> Groups:
        """The groups a search runs with: ALL_GROUPS for the operator switch, else the list."""
        return ALL_GROUPS if self.all_groups else list(self.groups)

    def to_dict(self) -> dict:
        return {**asdict(self), "groups": list(self.groups)}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def keys_path(path: str | Path | None = None) -> Path:
    """The keys file: `path`, else $RAGMART_API_KEYS_FILE; KeysFileError when neither is set."""
    chosen = path or os.environ.get(KEYS_ENV, "").strip()
    if not chosen:
        raise KeysFileError(f"no API keys file: pass --keys FILE or set {KEYS_ENV} (create one "
                            "with `ragmart keys add NAME --groups G`)")
    return Path(chosen)


@dataclass(frozen=True)
class KeyRing:
    """The keys of one keys file, as read."""

    path: Path
    keys: tuple[ApiKey, ...] = field(default=())

    @classmethod
    def load(cls, path: str | Path, *, missing_ok: bool = False) -> KeyRing:
        """Every entry of `path`, checked; KeysFileError listing every bad entry at once."""
        path = Path(path)
        if not path.exists():
            if missing_ok:
                return cls(path)
            raise KeysFileError(f"API keys file {path} does not exist; create it with "
                                "`ragmart keys add NAME --groups G`")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeysFileError(f"API keys file {path} cannot be read: {exc}") from None
        data = _parse(text, path)
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list) or set(data) - {"keys"}:
            raise KeysFileError(f"API keys file {path}: expected an object with one field "
                                '"keys", a list of entries (see `ragmart keys add`)')
        keys, errors = [], []
        for i, entry in enumerate(entries):
            try:
                keys.append(_entry(entry))
            except KeysFileError as exc:
                errors.append(f"entry {i + 1}: {exc}")
        names = [k.name for k in keys]
        errors += [f"the name {n!r} is used twice" for n in sorted(set(names))
                   if names.count(n) > 1]
        if errors:
            raise KeysFileError(f"API keys file {path}: " + "; ".join(errors))
        return cls(path, tuple(keys))

    def find(self, presented: str) -> ApiKey | None:
        """The entry of the key `presented`, or None; every stored hash is compared."""
        digest = key_hash(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256) and found is None:
                found = key
        return found

    def add(self, name: str, groups: list[str], *, all_groups: bool = False
            ) -> tuple[KeyRing, str]:
        """A ring with a new key named `name`, and the key (shown once, stored hashed)."""
        if any(k.name == name for k in self.keys):
            raise KeysFileError(f"a key named {name!r} exists in {self.path}; choose another "
                                f"name or remove it first (`ragmart keys remove {name}`)")
        key = PREFIX + secrets.token_urlsafe(32)
        entry = _entry({"name": name, "sha256": key_hash(key), "groups": groups,
                        "all_groups": all_groups,
                        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)
                        .isoformat(timespec="seconds")})
        return KeyRing(self.path, (*self.keys, entry)), key

    def remove(self, name: str) -> KeyRing:
        if not any(k.name == name for k in self.keys):
            known = ", ".join(k.name for k in self.keys) or "(none)"
            raise KeysFileError(f"no key named {name!r} in {self.path}; keys: {known}")
        return KeyRing(self.path, tuple(k for k in self.keys if k.name != name))

    def save(self) -> None:
        """Write the file atomically, readable by its owner only (JSON, or YAML by suffix)."""
        from ragmart.serving.pointer import write_atomic

        data = {"keys": [k.to_dict() for k in self.keys]}
        if self.path.suffix.lower() in (".yml", ".yaml"):
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        else:
            text = json.dumps(data, indent=2) + "\n"
        write_atomic(self.path, text)
        os.chmod(self.path, 0o600)


def bearer_token(values: list[str]) -> str | None:
    """The key of a request's Authorization headers: exactly one header, `Bearer <token>`;
    None otherwise (no header, two headers, another scheme, a malformed token)."""
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        return None
    return token


def _parse(text: str, path: Path) -> object:
    if path.suffix.lower() in (".yml", ".yaml"):
        from ragmart.safe_yaml import load_yaml

        return load_yaml(text, str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeysFileError(f"API keys file {path} is not valid JSON: {exc}") from None


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeysFileError(f"name {name!r} must be 1 to 64 letters, digits or . _ @ : - "
                            "(starting with a letter or digit)")
    return name


def _entry(entry: object) -> ApiKey:
    if not isinstance(entry, dict):
        raise KeysFileError("expected an object with name, sha256, groups")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise KeysFileError(f"unknown field(s) {unknown}: an entry holds {sorted(_FIELDS)} "
                            "(never the key itself)")
    name = check_name(entry.get("name"))
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX.fullmatch(digest):
        raise KeysFileError(f"{name}: sha256 must be 64 lowercase hex digits (the key's "
                            "SHA-256, as `ragmart keys add` writes it)")
    groups = entry.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() and g == g.strip()
                                               for g in groups):
        raise KeysFileError(f"{name}: groups must be a list of group names, e.g. [hr, managers]")
    switch = entry.get("all_groups", False)
    if not isinstance(switch, bool):
        raise KeysFileError(f"{name}: all_groups must be true or false, got {switch!r}")
    if switch and groups:
        raise KeysFileError(f"{name}: all_groups admits every document; drop its groups")
    created = entry.get("created_at")
    if created is not None and not isinstance(created, str):
        raise KeysFileError(f"{name}: created_at must be a string")
    return ApiKey(name, digest, tuple(dict.fromkeys(groups)), switch, created)
