"""The deployment's names, read from deploy/values.yaml: the one source every generated manifest and the pipeline use.

``load()`` returns a frozen ``Settings``; a missing key, an unknown key or a malformed value raises
``SettingsError`` naming it, so a typo in the values file fails `make manifests` instead of shipping a manifest
with a default. ``as_dict``/``from_dict`` carry the settings into a pipeline step unchanged (the compiled
pipeline holds them as a constant, so a run uses the names it was compiled with, not whatever file is in the
image).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

VALUES_FILE = Path(__file__).resolve().parent / "values.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CRON = re.compile(r"^\S+ \S+ \S+ \S+ \S+$")


class SettingsError(ValueError):
    """The values file is missing a key, has an unknown one, or a value of the wrong form."""


@dataclass(frozen=True)
class ServiceAccounts:
    spark: str
    pipeline: str
    serving: str
    annotations: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Images:
    batch: str
    serving: str


@dataclass(frozen=True)
class Storage:
    lake: str
    input: str
    snapshots: str
    endpoint: str = ""
    region: str = ""
    credentials_secret: str = ""
    credentials_provider: str = ""


@dataclass(frozen=True)
class Seldon:
    deployment: str
    replicas: int = 2


@dataclass(frozen=True)
class Schedules:
    nightly: str


@dataclass(frozen=True)
class Settings:
    namespace: str
    kubeflow_namespace: str
    service_accounts: ServiceAccounts
    images: Images
    storage: Storage
    seldon: Seldon
    schedules: Schedules

    def as_dict(self) -> dict:
        return asdict(self)


SECTIONS = {"service_accounts": ServiceAccounts, "images": Images, "storage": Storage, "seldon": Seldon,
            "schedules": Schedules}


def _section(name: str, cls, raw) -> object:
    if not isinstance(raw, dict):
        raise SettingsError(f"{name}: expected a mapping, got {raw!r}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"{name}: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**{k: ("" if v is None else v) for k, v in raw.items()})
    except TypeError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def from_dict(raw: dict) -> Settings:
    """Settings from a parsed values file (or ``Settings.as_dict()``); SettingsError on any problem."""
    expected = {"namespace", "kubeflow_namespace", *SECTIONS}
    if set(raw) != expected:
        raise SettingsError(f"values: missing {sorted(expected - set(raw))}, unknown {sorted(set(raw) - expected)}")
    settings = Settings(namespace=raw["namespace"], kubeflow_namespace=raw["kubeflow_namespace"],
                        **{name: _section(name, cls, raw[name]) for name, cls in SECTIONS.items()})
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    names = {"namespace": s.namespace, "kubeflow_namespace": s.kubeflow_namespace,
             "service_accounts.spark": s.service_accounts.spark, "service_accounts.pipeline": s.service_accounts.pipeline,
             "service_accounts.serving": s.service_accounts.serving, "seldon.deployment": s.seldon.deployment}
    for key, value in names.items():
        if not isinstance(value, str) or not DNS_LABEL.match(value):
            raise SettingsError(f"{key}: {value!r} is not a DNS-1123 label")
    for key in ("batch", "serving"):
        if ":" not in getattr(s.images, key).rsplit("/", 1)[-1]:
            raise SettingsError(f"images.{key}: {getattr(s.images, key)!r} has no tag (pin one)")
    for key in ("lake", "input", "snapshots"):
        if "://" not in getattr(s.storage, key):
            raise SettingsError(f"storage.{key}: {getattr(s.storage, key)!r} is not a URI (pods share no disk)")
    if s.storage.endpoint and not re.match(r"^https?://", s.storage.endpoint):
        raise SettingsError(f"storage.endpoint: {s.storage.endpoint!r} must start with http:// or https://")
    if not CRON.match(s.schedules.nightly):
        raise SettingsError(f"schedules.nightly: {s.schedules.nightly!r} is not a five-field cron expression")
    if not isinstance(s.seldon.replicas, int) or s.seldon.replicas < 1:
        raise SettingsError(f"seldon.replicas: {s.seldon.replicas!r} must be a positive integer")


def load(path: Path | str | None = None) -> Settings:
    """The settings in ``path`` (default: deploy/values.yaml)."""
    path = Path(path) if path else VALUES_FILE
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping at the top")
    return from_dict(raw)
