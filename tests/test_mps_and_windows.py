"""Apple silicon (MPS) and Windows, tested by what runs here: the command line with `--device mps` runs the whole
pipeline on a faked MPS device, and no CUDA-only or POSIX-only call is reached on the way.

The fake (`FakeMPS`, a torch function mode) runs the "mps" work on the CPU but behaves like MPS wherever code can tell:
a tensor moved to "mps" (and everything computed from it) reports `device.type == "mps"`, so the code takes its
non-CPU branches; and what MPS refuses is recorded as a violation: a float64 tensor on MPS, `.numpy()` of an MPS
tensor, an operation mixing MPS tensors with CPU tensors (other than 0-d ones and copies/indexing). CUDA-only calls
(torch.cuda queries, `.cuda()`, pinned memory) and POSIX-only ones (`os.rename` over a file, signals, `os.kill`,
`os.fork`) raise. Real MPS and Windows hardware are untested (README, "Apple silicon and Windows").
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import media_factory as mf
from latentsync import __main__ as cli
from latentsync.devices import default_device, unavailable_reason
from latentsync.precision import safe_dtype
from latentsync.runner import default_dtype

MPS = torch.device("mps")
CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
# operations that may take tensors of both devices on real MPS
MIXING_ALLOWED = {"__getitem__", "__setitem__", "copy_", "index_select", "to", "cpu", "__repr__", "__format__",
                  "_has_compatible_shallow_copy_type", "__get__", "__set__", "size", "dim", "numel"}


def _is_mps(value) -> bool:
    return (isinstance(value, str) and value.split(":")[0] == "mps") or (
        isinstance(value, torch.device) and value.type == "mps")


def _is_cpu(value) -> bool:
    return (isinstance(value, str) and value == "cpu") or (isinstance(value, torch.device) and value.type == "cpu")


def _to_cpu(value):
    if _is_mps(value):
        return CPU
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _caller() -> str:
    """The innermost frame of this project's code (where a violation comes from)."""
    import traceback

    ours = [f for f in traceback.extract_stack() if "/latentsync/" in f.filename or "/nodes/" in f.filename]
    return f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"


class FakeMPS(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.violations: set[str] = set()
        self.mps_tensors_made = 0

    def __enter__(self):
        new = torch.nn.Parameter.__new__

        def parameter_keeps_the_device(cls, data=None, requires_grad=True):  # load_state_dict(assign=True) wraps
            param = new(cls, data, requires_grad)
            param._fake_mps = self.on_mps(data) if isinstance(data, torch.Tensor) else False
            return param

        self._parameter_new = new
        torch.nn.Parameter.__new__ = parameter_keeps_the_device
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__new__ = self._parameter_new
        return super().__exit__(*exc)

    @staticmethod
    def on_mps(t: torch.Tensor) -> bool:
        return bool(getattr(t, "_fake_mps", False))

    def tag(self, out, on: bool) -> None:
        for t in _tensors(out):
            t._fake_mps = on
            self.mps_tensors_made += on
            if on and t.dtype == torch.float64:
                self.violations.add("a float64 tensor on MPS, at " + _caller())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func == torch.Tensor.device.__get__:  # method-wrappers: equal, not identical
            return MPS if self.on_mps(args[0]) else func(*args)
        if func == torch.Tensor.data.__set__:  # Module.to() swaps parameter data in place
            func(*args)
            args[0]._fake_mps = self.on_mps(args[1])
            return None
        to_mps = any(_is_mps(a) for a in (*args, *kwargs.values()))
        if func is torch.device or name == "_parse_to":  # device objects stay what they say; tensors go to the CPU
            return func(*args, **kwargs)
        to_cpu = name == "cpu" or (name == "to" and any(map(_is_cpu, (*args[1:], *kwargs.values()))))
        inputs = list(_tensors((args, kwargs)))
        from_mps = any(self.on_mps(t) for t in inputs)
        if from_mps and name == "numpy":
            self.violations.add(".numpy() of an MPS tensor, at " + _caller())
        if from_mps and name not in MIXING_ALLOWED and any(not self.on_mps(t) and t.dim() > 0 for t in inputs):
            self.violations.add(f"{name}: MPS and CPU tensors in one operation, at " + _caller())
        out = func(*_to_cpu(args), **{k: _to_cpu(v) for k, v in kwargs.items()})
        if (to_mps or to_cpu) and any(out is t for t in inputs):  # a real move copies: never retag the source
            out = out.clone()
        if name not in ("__get__", "size", "dim", "numel", "item", "tolist", "numpy"):
            self.tag(out, (from_mps or to_mps) and not to_cpu)
        return out


def _forbid(monkeypatch, owner, attr: str, why: str) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"{why}: {getattr(owner, '__name__', owner)}.{attr} reached on the MPS path")

    monkeypatch.setattr(owner, attr, refuse)


@pytest.fixture
def apple_silicon(monkeypatch):
    """MPS available, CUDA absent, every CUDA-only and POSIX-only call refused."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for attr in ("get_device_capability", "mem_get_info", "synchronize", "empty_cache", "current_device",
                 "set_device", "get_device_properties", "Stream"):
        _forbid(monkeypatch, torch.cuda, attr, "CUDA-only")
    _forbid(monkeypatch, torch.Tensor, "cuda", "CUDA-only")
    _forbid(monkeypatch, torch.nn.Module, "cuda", "CUDA-only")
    _forbid(monkeypatch, torch.Tensor, "pin_memory", "CUDA-only")
    for attr in ("rename", "kill", "fork"):  # os.rename fails on Windows when the target exists: os.replace
        _forbid(monkeypatch, os, attr, "POSIX-only")
    for attr in ("signal", "alarm", "setitimer"):
        if hasattr(signal, attr):
            _forbid(monkeypatch, signal, attr, "POSIX-only")


def test_device_choice_and_dtypes_on_mps(apple_silicon):
    assert default_device() == "mps" and unavailable_reason("mps") is None
    assert "no CUDA GPU" in unavailable_reason("cuda")
    assert default_dtype("mps") == torch.float16  # as ComfyUI picks on MPS; MPS has no float64
    assert safe_dtype(torch.float16, "mps") == torch.float16 and safe_dtype(torch.float32, "mps") == torch.float32


def test_mps_not_available_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cli.main(["--video", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o.mp4"), "--device", "mps"]) == 2
    assert "PyTorch sees no MPS device" in capsys.readouterr().err


def test_the_fake_refuses_what_mps_refuses_and_paste_back_bounds_stay_off_it():
    from latentsync.face.paste import footprint_roi

    on_cpu = torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]]])
    fake = FakeMPS()
    with fake:
        matrix = on_cpu.to("mps")
        assert matrix.device.type == "mps" and torch.zeros(2, device=matrix.device).device.type == "mps"
        assert on_cpu.device.type == "cpu"
        assert footprint_roi(matrix, (20, 10), (100, 100)) == footprint_roi(on_cpu, (20, 10), (100, 100))
        assert not fake.violations
        matrix.double()
        _ = matrix + torch.ones(3)
        matrix.numpy()
        assert matrix.cpu().device.type == "cpu"
    assert {v.split(",")[0] for v in fake.violations} == {
        "a float64 tensor on MPS", "add: MPS and CPU tensors in one operation", ".numpy() of an MPS tensor"}


def test_command_line_runs_the_pipeline_on_a_faked_mps_device(apple_silicon, tiny_model_set, tmp_path, capsys):
    clip = mf.encode(tmp_path / "clip.mp4", mf.clip_frames(4, (200, 200)), 15,
                     audio=mf.speech(16000, 1, 4 / 15), sample_rate=16000)
    out = tmp_path / "out.mp4"
    fake = FakeMPS()
    with fake:
        code = cli.main(["--video", str(clip), "--out", str(out), "--models", str(tiny_model_set), "--device", "mps",
                         "--face-backend", "offline", "--steps", "1", "--no-download", "--length-mode", "cut_off",
                         "--dtype", "fp32",  # fp16 (auto on MPS, checked above) would run emulated here: slow
                         "--no-overlap"])  # a torch function mode is per thread: every stage in this one, under the fake
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert out.is_file() and fake.mps_tensors_made > 1000, fake.mps_tensors_made  # the work did run "on MPS"
    assert "torch.float32, mps" in err  # the U-Net loaded on MPS
    assert not fake.violations, "\n".join(sorted(fake.violations))


def test_no_hard_coded_posix_temp_folder_in_the_pack():
    """Temporary files go through tempfile (or beside their target), never a literal /tmp."""
    files = [*REPO.joinpath("latentsync").rglob("*.py"), *REPO.joinpath("nodes").rglob("*.py"), REPO / "install.py"]
    assert not [str(f) for f in files if re.search(r"""["']/tmp\b""", f.read_text(encoding="utf-8"))]
