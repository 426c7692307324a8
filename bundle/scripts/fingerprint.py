"""Fingerprints of configured objects: a stable hash of everything that shapes what a pipeline makes.

:func:`describe` turns an object graph (MONAI transforms, ``Compose``, dataclasses, arrays, plain values) into a
JSON-able description: each object by its class and its public attributes, recursively; arrays and tensors by their
shape, dtype and a hash of their bytes (so the contents of a histogram-landmarks file count, not its name). Random
generators, private attributes, what an object keeps from its last call (a reader's last file names) and a torch
module's train/eval mode are left out: they do not shape the output. :func:`fingerprint` hashes the
description. A cache keyed on the fingerprint of the configured preprocessing is rebuilt whenever any setting of
any step changes, without a hand-kept list of the settings that matter.

A class may name, in its ``not_settings`` class attribute, public attributes that do not shape what it makes (memory
and speed knobs such as ``inplace`` or ``slab``, output folders, gates that refuse a study but never change a map).
``describe(obj, settings_only=True)`` leaves them out (``scripts.settings``: what weights and calibrations record);
the fingerprint keeps them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import types
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np
import torch

MAX_DEPTH = 8
"""Attribute levels followed below the object given; deeper objects are described by their class alone."""

_SKIPPED = (np.random.RandomState, np.random.Generator, torch.Generator)
_RUNTIME = frozenset({"filenames"})  # state a transform keeps from its last call (MONAI's image readers)


DIGEST_KEYS = frozenset({"shape", "dtype", "sha1"})
"""The keys of an array's description (:func:`_array_digest`)."""


def _array_digest(array: np.ndarray) -> dict[str, object]:
    array = np.ascontiguousarray(array)
    return {"shape": list(array.shape), "dtype": str(array.dtype), "sha1": hashlib.sha1(array.tobytes()).hexdigest()}


def not_settings(cls: type) -> frozenset[str]:
    """The attributes that ``cls`` and its bases name in ``not_settings`` (see the module docstring)."""
    return frozenset(name for klass in cls.__mro__ for name in vars(klass).get("not_settings", ()))


def describe(obj: object, _depth: int = 0, _seen: frozenset[int] = frozenset(), settings_only: bool = False) -> object:
    """A JSON-able description of ``obj`` (see the module docstring); ``settings_only`` leaves out what each class
    names in ``not_settings``."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (PurePath, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, torch.Tensor):
        return _array_digest(torch.as_tensor(obj).detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return _array_digest(obj)
    if isinstance(obj, (np.generic, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, _SKIPPED):
        return type(obj).__name__
    if id(obj) in _seen or _depth >= MAX_DEPTH:
        return f"<{type(obj).__qualname__}>"
    seen = _seen | {id(obj)}

    def entries(mapping: Mapping) -> dict[str, object]:
        return {
            str(k): describe(v, _depth + 1, seen, settings_only)
            for k, v in sorted(mapping.items(), key=lambda kv: str(kv[0]))
        }

    if isinstance(obj, Mapping):
        return entries(obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [describe(v, _depth + 1, seen, settings_only) for v in items]
    if isinstance(obj, functools.partial):  # a function with bound settings (e.g. scripts.noise.get_noise_fn)
        bound = {"func": obj.func, "args": list(obj.args), **obj.keywords}
        return {"class": "functools.partial", **entries(bound)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        left_out = not_settings(type(obj)) if settings_only else frozenset()
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in left_out}
        return {"class": type(obj).__qualname__, **entries(fields)}
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return f"{obj.__module__}.{obj.__qualname__}"
    if callable(obj) and not hasattr(obj, "__dict__"):
        return getattr(obj, "__qualname__", type(obj).__qualname__)
    if isinstance(obj, type) or not hasattr(obj, "__dict__"):
        return getattr(obj, "__qualname__", None) or type(obj).__qualname__
    left_out = _RUNTIME | (not_settings(type(obj)) if settings_only else frozenset())
    if isinstance(obj, torch.nn.Module):
        left_out |= {"training"}  # train or eval mode: the module's state, not its settings
    public = {k: v for k, v in vars(obj).items() if not k.startswith("_") and k not in left_out}
    return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", **entries(public)}


def fingerprint(*objs: object, length: int = 16) -> str:
    """A hex digest of the descriptions of ``objs`` (``length`` characters)."""
    text = json.dumps([describe(o) for o in objs], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]
