from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs_err: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= self.tol

    def line(self) -> str:
        return f"{self.name} max_abs_err={self.max_abs_err:.3g} tol={self.tol:g} {'OK' if self.ok else 'FAIL'}"


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> Comparison:
    """Max absolute difference of two tensors (as float64); a shape mismatch is an infinite error."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        return Comparison(f"{name}[shape {tuple(actual.shape)} != {tuple(expected.shape)}]", float("inf"), tol)
    if actual.numel() == 0:
        return Comparison(name, 0.0, tol)
    err = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs().max().item()
    if err != err:  # NaN
        err = float("inf")
    return Comparison(name, err, tol)


def load_fixture(path) -> dict:
    """Golden fixtures hold only plain containers and tensors: load them safely."""
    return torch.load(path, map_location="cpu", weights_only=True)
