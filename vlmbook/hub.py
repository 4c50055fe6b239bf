"""Saving, loading and caching models: ``save_pretrained``/``from_pretrained`` and artifacts.

Checkpoints are a ``config.json`` plus ``model.safetensors``; nothing is ever unpickled.
Artifacts are small named models that later chapters stand on: loaded from the repository
when committed there, otherwise rebuilt by a registered ``vlmbook`` function with a fixed seed
and cached (Chapter 0, "How to read this book").
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors.torch import load_file, save_file

from .config import Config

M = TypeVar("M", bound="PretrainedMixin")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LOG_NAME = "training_log.json"


class PretrainedMixin:
    """Adds ``save_pretrained``/``from_pretrained`` to an ``nn.Module`` with a ``config``.

    Subclasses set ``config_class`` and take the config as their only constructor argument. A
    model's ``training_log`` (a list of dicts, such as held-out scores during training) travels
    with it as ``training_log.json``.
    """

    config_class: type[Config] = Config
    config: Config

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` (with the class name) and ``model.safetensors`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"class": f"{type(self).__module__}.{type(self).__qualname__}", "config": self.config.to_dict()}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        save_file(_dedupe_shared(state), str(path / WEIGHTS_NAME))
        log = getattr(self, "training_log", None)
        if log:
            (path / LOG_NAME).write_text(json.dumps(log, indent=1) + "\n")
        return path

    @classmethod
    def from_pretrained(cls: type[M], path: str | os.PathLike, device: str | torch.device = "cpu") -> M:
        """Rebuild the model from a folder written by :meth:`save_pretrained`.

        Everything is checked before the model is allocated: the config (every field present and
        valid), the parameter count (``MAX_PARAMS``) and every tensor's name, shape and dtype in
        the weights file's header. Loaded weights must be finite, and a model may add its own
        checks in ``check_loaded()``. Any problem raises ``ValueError`` naming the file and field.
        """
        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not cfg_file.is_file() or not w_file.is_file():
            raise FileNotFoundError(f"{path} must contain {CONFIG_NAME} and {WEIGHTS_NAME}")
        meta = _read_json(cfg_file)
        if not isinstance(meta, dict):
            raise ValueError(f"{cfg_file} must hold a JSON object with 'class' and 'config', got a {type(meta).__name__}")
        expected = f"{cls.__module__}.{cls.__qualname__}"
        for key in ("class", "config"):
            if key not in meta:
                raise ValueError(f"{cfg_file} has no {key!r} field")
        if meta["class"] != expected:
            raise ValueError(f"{cfg_file}: field 'class' holds a {meta['class']!r}, not a {expected!r}")
        try:
            cfg = cls.config_class.from_dict(meta["config"], require_all=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{cfg_file}: field 'config': {e}") from None
        header = _weights_header(w_file)
        shapes = _planned_shapes(cls, cfg, cfg_file)
        if shapes is not None:
            _check_header(cls, shapes, header, w_file)
        model = cls(cfg)  # type: ignore[call-arg]
        try:
            state = load_file(str(w_file), device=str(device))
        except Exception as e:  # safetensors raises its own error types on corrupt files
            raise ValueError(f"{w_file} is not a readable safetensors file: {e}") from None
        missing, unexpected = _load_state(model, state, w_file, cls.__name__)
        missing = [k for k in missing if not _is_tied(model, k, state)]
        if missing or unexpected:
            raise ValueError(f"{w_file} does not match {cls.__name__}: missing {missing}, unexpected {unexpected}")
        for k, v in state.items():
            if v.is_floating_point() and torch.isnan(v).any():
                raise ValueError(f"{w_file}: tensor {k!r} holds NaN")
        check = getattr(model, "check_loaded", None)
        if callable(check):
            try:
                check()
            except ValueError as e:
                raise ValueError(f"{w_file}: {e}") from None
        if (path / LOG_NAME).is_file():
            model.training_log = _read_json(path / LOG_NAME)  # type: ignore[attr-defined]
        return model.to(device)  # type: ignore[attr-defined,return-value]


#: Largest model :meth:`PretrainedMixin.from_pretrained` builds from a config: 2**30 parameters
#: (4 GB in float32), checked on the meta device before anything is allocated.
MAX_PARAMS = 1 << 30
#: Largest config.json / training_log.json read (bytes).
MAX_JSON_BYTES = 16 << 20


def _read_json(file: Path) -> Any:
    if file.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{file} is {file.stat().st_size:,} bytes, more than the {MAX_JSON_BYTES:,} a config may hold")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{file} is nested too deeply to be a config") from None


def _weights_header(w_file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    from safetensors import safe_open

    try:
        with safe_open(str(w_file), framework="pt") as f:
            return {k: (str(f.get_slice(k).get_dtype()), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as e:  # SafetensorError and friends: a truncated or foreign file
        raise ValueError(f"{w_file} is not a readable safetensors file: {e}") from None


def _planned_shapes(cls: type, cfg: Config, cfg_file: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]] | None:
    # Build the model on the meta device: shapes without memory, so a config asking for
    # terabytes is refused here. A model whose constructor cannot run on meta is checked after.
    try:
        with torch.device("meta"):
            probe = cls(cfg)
    except Exception:
        return None
    sd = probe.state_dict()
    n = sum(v.numel() for v in sd.values())
    if n > MAX_PARAMS:
        raise ValueError(f"{cfg_file}: field 'config' describes {n:,} parameters, more than MAX_PARAMS = {MAX_PARAMS:,}")
    return {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _check_header(cls: type, shapes: dict, header: dict, w_file: Path) -> None:
    for k, (dtype, shape) in header.items():
        if k not in shapes:
            raise ValueError(f"{w_file}: unexpected tensor {k!r} for {cls.__name__}")
        want_dtype, want_shape = shapes[k]
        if math.prod(want_shape) == 0:
            continue  # an empty placeholder that loading resizes (e.g. a codec's CDF tables)
        if shape != want_shape:
            raise ValueError(f"{w_file}: tensor {k!r} has shape {shape}, {cls.__name__} needs {want_shape}")
        if _ST_DTYPES.get(dtype, dtype) != want_dtype:
            raise ValueError(f"{w_file}: tensor {k!r} has dtype {dtype}, {cls.__name__} needs {want_dtype}")


def _load_state(model: Any, state: dict[str, torch.Tensor], w_file: Path, name: str) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].numel() and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"{w_file}: tensor {k!r} has shape {tuple(v.shape)}, {name} needs {tuple(own[k].shape)}")
    try:
        return model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{w_file} does not fit {name}: {e}") from None


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied embeddings); keep the first name.
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            continue
        seen[key] = k
        out[k] = v.clone() if v.untyped_storage().nbytes() != v.numel() * v.element_size() else v
    return out


def _is_tied(model: Any, key: str, state: dict[str, torch.Tensor]) -> bool:
    # A missing key is fine only when its parameter is the same tensor as a loaded one.
    params = dict(model.state_dict(keep_vars=True))
    p = params.get(key)
    if p is None:
        return False
    return any(params[k] is p for k in state if k in params)


# ---------------------------------------------------------------------------------------
# Artifacts: named, versioned small models shared between chapters.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArtifactSpec:
    """How an artifact is made: ``builder`` is ``"module:function"`` taking ``(seed)``."""

    name: str
    version: str
    builder: str
    seed: int = 0
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-v{self.version}"


_REGISTRY: dict[str, ArtifactSpec] = {}
REPO_ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def register_artifact(spec: ArtifactSpec) -> ArtifactSpec:
    """Add an artifact to the registry (each chapter module registers its own)."""
    _REGISTRY[spec.name] = spec
    return spec


def artifact_specs() -> dict[str, ArtifactSpec]:
    """All registered artifacts (imports the chapter modules that register them)."""
    for mod in ("vlmbook.vq", "vlmbook.codec", "vlmbook.vision", "vlmbook.resample", "vlmbook.fusion", "vlmbook.train"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return dict(_REGISTRY)


def cache_dir() -> Path:
    """Where rebuilt artifacts are cached (``VLMBOOK_CACHE`` or ``~/.cache/vlmbook``)."""
    return Path(os.environ.get("VLMBOOK_CACHE", Path.home() / ".cache" / "vlmbook"))


def _resolve_builder(builder: str) -> Callable[[int], Any]:
    mod, _, fn = builder.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _spec(name: str) -> ArtifactSpec:
    # The module that uses an artifact has usually registered it on import: only import every
    # chapter module (seconds of start-up) when the name is not known yet.
    if name in _REGISTRY:
        return _REGISTRY[name]
    specs = artifact_specs()
    if name not in specs:
        raise ValueError(f"unknown artifact {name!r}; known: {sorted(specs)}")
    return specs[name]


def build_artifact(name: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Rebuild artifact ``name`` with its registered builder and seed; returns its folder."""
    spec = _spec(name)
    out = Path(out_dir) if out_dir else cache_dir() / spec.key
    model = _resolve_builder(spec.builder)(spec.seed)
    model.save_pretrained(out)
    (out / "artifact.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n")
    return out


def load_artifact(name: str, cls: type[M], device: str | torch.device = "cpu", rebuild: bool = False) -> M:
    """Load artifact ``name``: committed copy, else cached copy, else rebuild and cache it."""
    spec = _spec(name)
    for folder in (REPO_ARTIFACTS / spec.key, cache_dir() / spec.key):
        if not rebuild and (folder / WEIGHTS_NAME).is_file():
            return cls.from_pretrained(folder, device=device)
    return cls.from_pretrained(build_artifact(name), device=device)


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (to compare rebuilt artifacts)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
