"""Dataclass configs with presets and validation (used by every chapter).

Every trainable component has a config dataclass deriving from :class:`Config`. Presets are
class methods (``tiny()``, ``base()``); ``validate()`` runs on construction and raises
``ValueError`` naming the bad field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable, TypeVar

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base class: JSON round trip, presets by name, validation on construction."""

    def __post_init__(self) -> None:
        self.validate()

    # -- validation helpers ---------------------------------------------------------------
    def validate(self) -> None:
        """Check every field; subclasses extend this and call ``super().validate()``."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # Under `from __future__ import annotations` the field type is the string "int".
            expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", None)
            if expected == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{type(self).__name__}.{f.name} must be an int, got {value!r}")
            if expected == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{type(self).__name__}.{f.name} must be a number, got {value!r}")
            if expected == "bool" and not isinstance(value, bool):
                raise ValueError(f"{type(self).__name__}.{f.name} must be True or False, got {value!r}")
            if expected == "str" and not isinstance(value, str):
                raise ValueError(f"{type(self).__name__}.{f.name} must be a string, got {value!r}")
            if expected == "float" and not math.isfinite(value):
                raise ValueError(f"{type(self).__name__}.{f.name} must be finite, got {value!r}")

    def _fail(self, field: str, why: str) -> None:
        raise ValueError(f"{type(self).__name__}.{field} {why} (got {getattr(self, field)!r})")

    def check_positive(self, *names: str) -> None:
        """Raise ValueError unless every named field is > 0."""
        for n in names:
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                self._fail(n, "must be > 0")

    def check_non_negative(self, *names: str) -> None:
        """Raise ValueError unless every named field is >= 0."""
        for n in names:
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                self._fail(n, "must be >= 0")

    def check_range(self, name: str, lo: float, hi: float) -> None:
        """Raise ValueError unless lo <= field <= hi."""
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            self._fail(name, f"must lie in [{lo}, {hi}]")

    def check_choice(self, name: str, choices: Iterable[Any]) -> None:
        """Raise ValueError unless the field is one of ``choices``."""
        choices = tuple(choices)
        if getattr(self, name) not in choices:
            self._fail(name, f"must be one of {choices}")

    def check_divisible(self, name: str, by: int, by_name: str | None = None) -> None:
        """Raise ValueError unless the field is a multiple of ``by``."""
        if getattr(self, name) % by != 0:
            self._fail(name, f"must be divisible by {by_name or by}")

    # -- presets and serialisation ------------------------------------------------------
    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """Build a named preset (``"tiny"``, ``"base"`` …) with optional field overrides."""
        maker = getattr(cls, name, None)
        if name.startswith("_") or not callable(maker) or name in _NOT_PRESETS:
            raise ValueError(f"{cls.__name__} has no preset {name!r}; try one of {cls.presets()}")
        cfg = maker()
        return cfg.replace(**overrides) if overrides else cfg

    @classmethod
    def presets(cls) -> list[str]:
        """Names of the presets this config defines."""
        return [n for n in ("tiny", "small", "base", "large") if callable(getattr(cls, n, None))]

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed."""
        self._check_keys(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], require_all: bool = False) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError, and so do missing ones
        with ``require_all`` (how saved models are read: no field silently takes a default)."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}")
        cls._check_keys(data)
        if require_all:
            missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data)
            if missing:
                raise ValueError(f"{cls.__name__} is missing field(s) {missing}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                v = data[f.name]
                if isinstance(v, list) and "tuple" in str(f.type):
                    v = tuple(v)
                kwargs[f.name] = v
        return cls(**kwargs)

    @classmethod
    def _check_keys(cls, data: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields are {sorted(known)}")

    def save_json(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_json(cls: type[C], path: str | Path) -> C:
        """Read a config written by :meth:`save_json`."""
        try:
            data = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        except RecursionError:
            raise ValueError(f"{path} is nested too deeply to be a config") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None


_NOT_PRESETS = {"preset", "presets", "replace", "to_dict", "from_dict", "save_json", "load_json", "validate"}
