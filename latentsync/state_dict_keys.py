"""Strict state-dict key checks with readable messages, shared by the model loaders (no heavy imports)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

SHOW = 5  # keys named per problem in error messages


def names(keys: list[str]) -> str:
    """'3: a, b, c' — a count and the first few keys."""
    shown = ", ".join(keys[:SHOW])
    more = f" (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return f"{len(keys)}: {shown}{more}"


def key_problems(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor],
                 optional_suffixes: tuple[str, ...] = ()) -> list[str]:
    """What keeps ``state_dict`` from loading strictly into a model whose state dict is ``expected``: missing keys
    (except those ending in ``optional_suffixes``), unexpected keys, shape mismatches; [] when it fits."""
    missing = [k for k in expected if k not in state_dict and not k.endswith(optional_suffixes)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
                  for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {names(mismatched)}")
    return problems


def unwrap_state_dict(obj, source, error: type[Exception], prefixes: tuple[str, ...] = ("module.",)) -> dict:
    """A loaded checkpoint object -> ``{name: tensor}``: a ``{"state_dict": ...}`` wrapper is opened, every entry
    must be a tensor (else ``error`` naming ``source``), and a prefix shared by every key (DDP's ``module.``) is
    stripped."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise error(f"{source} holds a {type(obj).__name__}, expected a state dict or {{'state_dict': ...}}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise error(f"{source}: entries that are not tensors {names(not_tensors)}")
    state = dict(obj)
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state
