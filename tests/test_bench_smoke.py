"""The benchmarks run and print complete tables. Timings are measured, never asserted: only that every figure
is there, finite and positive. The real-size runs (minutes to hours on a CPU) are not part of the tests."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import stages, unet_chunk

REPO_ROOT = Path(__file__).resolve().parents[1]
SECONDS = re.compile(r"^(?P<s>[-+0-9.eE]+|nan|inf) s \((?P<ms>[-+0-9.eE]+|nan|inf) ms/frame\)")
FPS = re.compile(r"^(?P<fps>[-+0-9.eE]+|nan|inf) fps \((?P<ms>[-+0-9.eE]+|nan|inf) ms/frame\)")


def _table_rows(text: str, header_start: str) -> tuple[list[str], dict[str, list[str]]]:
    """Columns and rows (label -> cells) of the markdown table whose header starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    columns = [c.strip() for c in lines[start].strip("|").split("|")][1:]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return columns, rows


def _positive(value: str) -> bool:
    x = float(value)
    return math.isfinite(x) and x > 0


@pytest.mark.slow
def test_bench_quick_prints_every_stage(tmp_path):
    # A fake U-Net results file in the format of `bench.unet_chunk --json`: the loop figure must reach the table.
    unet_results = tmp_path / "unet.jsonl"
    unet_results.write_text(
        json.dumps({"size": 256, "dtype": "fp32", "case": "forward_cfg", "seconds": 30.0}) + "\n"
        + json.dumps({"size": 256, "dtype": "fp32", "case": "loop20_deepcache", "seconds": 321.0}) + "\n\n")
    out_json = tmp_path / "stages.json"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--unet-results", str(unet_results), "--json", str(out_json)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout

    columns, rows = _table_rows(text, "| stage |")
    assert columns == ["256 fp32"]
    for _key, label in stages.STAGES + (("total", stages.TOTAL_LABEL),):
        assert label in rows, f"stage row {label!r} missing:\n{text}"
        for cell in rows[label]:
            m = SECONDS.match(cell)
            assert m, f"{label}: {cell!r}"
            assert _positive(m["s"]) and _positive(m["ms"]), f"{label}: {cell!r}"
    # The U-Net figure is for a 16-frame chunk: per frame over 16, and left out of the 4-frame quick total.
    unet_cell = rows[dict(stages.STAGES)["unet_loop"]][0]
    assert float(SECONDS.match(unet_cell)["s"]) == pytest.approx(321.0)
    assert float(SECONDS.match(unet_cell)["ms"]) == pytest.approx(321.0 * 1000 / 16, rel=1e-3)
    assert "not in total" in unet_cell and "(without U-Net)" in rows[stages.TOTAL_LABEL][0]

    columns, rows = _table_rows(text, "| sub-stage |")
    assert columns == ["R=256"]
    for _key, label in stages.HD_STAGES:
        assert label in rows, f"1080p row {label!r} missing:\n{text}"
        m = FPS.match(rows[label][0])
        assert m and _positive(m["fps"]) and _positive(m["ms"]), f"{label}: {rows[label][0]!r}"

    assert "python -m bench.unet_chunk" in text  # how to run the long U-Net benchmark
    doc = json.loads(out_json.read_text())
    assert doc["quick"] is True
    (chunk,) = doc["chunk"]
    assert chunk["faces_found"] == chunk["frames"] == 4 and chunk["finite"]
    (hd,) = doc["throughput_1080p"]
    assert hd["faces_found"] == hd["frames"] and hd["frame_hw"] == [1080, 1920]
    assert 600 < hd["face_height_px"] < 1080  # the upscaled face is large, as in a close-up 1080p video
    (close,) = doc["throughput_1080p_closeup"]
    assert close["faces_found"] == close["frames"] and hd["face_height_px"] < close["face_height_px"] < 1080


def _chunk(unet):
    r = stages.ChunkResult(256, "fp32", 16, seconds={"detect_align": 0.5, "audio": 1.0, "vae_encode": 8.0,
                                                     "vae_decode": 4.0, "paste": 0.25})
    r.seconds["unet_loop"], r.notes["unet_loop"], frames = stages.unet_figure(unet, 256, "fp32")
    assert frames == 16
    return r


def test_chunk_table_without_unet_results_points_to_unet_bench():
    _, rows = _table_rows(stages.chunk_table([_chunk(None)]), "| stage |")
    assert rows["U-Net 20 steps, CFG, DeepCache"] == [stages.UNET_HINT]
    assert rows["VAE encode (masked + reference)"] == ["8.000 s (500.0 ms/frame)"]
    assert rows[stages.TOTAL_LABEL] == ["13.750 s (859.4 ms/frame) (without U-Net)"]


def test_chunk_table_total_includes_unet_of_a_16_frame_chunk():
    r = _chunk([{"size": 256, "dtype": "fp32", "case": "loop20_deepcache", "seconds": 100.0, "frames": 16,
                 "computed": True}])
    _, rows = _table_rows(stages.chunk_table([r]), "| stage |")
    assert rows["U-Net 20 steps, CFG, DeepCache"] == ["100.000 s (6250.0 ms/frame) est."]
    assert rows[stages.TOTAL_LABEL] == ["113.750 s (7109.4 ms/frame)"]
    assert r.as_dict()["total_includes_unet"]


def test_unet_figure_reads_latest_matching_result():
    rows = [
        {"size": 256, "dtype": "fp32", "case": "loop20_deepcache", "seconds": 100.0},
        {"size": 512, "dtype": "fp32", "case": "loop20_deepcache", "seconds": 400.0},
        {"size": 256, "dtype": "fp32", "case": "loop20_deepcache", "seconds": 90.0, "computed": True},
    ]
    assert stages.unet_figure(rows, 256, "fp32") == (90.0, "est.", 16)
    assert stages.unet_figure(rows, 512, "fp32") == (400.0, "", 16)
    secs, note, _ = stages.unet_figure(rows, 256, "bf16")
    assert secs is None and "256 bf16" in note


def test_unet_chunk_estimate_math():
    assert unet_chunk.full_steps(20, 3) == 7  # steps 0, 3, ..., 18
    assert unet_chunk.full_steps(20, 1) == 20 and unet_chunk.full_steps(20, 0) == 20
    assert unet_chunk.full_steps(21, 3) == 7 and unet_chunk.full_steps(22, 3) == 8
    est = unet_chunk.estimate_loops(10.0, 2.0)
    assert est == {"loop20": 200.0, "loop20_deepcache": 7 * 10.0 + 13 * 2.0}
    assert unet_chunk.estimate_loops(10.0, 2.0, steps=20, interval=1)["loop20_deepcache"] == 200.0


def test_unet_chunk_parser_and_results_file(tmp_path):
    args = unet_chunk.build_parser().parse_args([])
    assert args.sizes == [256, 512] and args.dtypes == ["fp32", "bf16"] and list(args.cases) == list(unet_chunk.CASES)
    args = unet_chunk.build_parser().parse_args(
        ["--sizes", "256", "--dtypes", "bf16", "--estimate-loops", "--json", "x.jsonl", "--one", "256", "fp32",
         "forward_cfg"])
    assert args.sizes == [256] and args.dtypes == ["bf16"] and args.estimate_loops and args.json == "x.jsonl"
    assert args.one == ["256", "fp32", "forward_cfg"]
    with pytest.raises(SystemExit):
        unet_chunk.build_parser().parse_args(["--dtypes", "int8"])
    with pytest.raises(SystemExit):
        unet_chunk.build_parser().parse_args(["--cases", "loop30"])

    path = tmp_path / "unet.jsonl"
    path.write_text('{"size": 256, "dtype": "fp32", "case": "forward_cfg", "seconds": 1.5}\n\n')
    assert unet_chunk.load_results(path) == [{"size": 256, "dtype": "fp32", "case": "forward_cfg", "seconds": 1.5}]
    path.write_text("256 fp32 forward_cfg 1.5 s\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        unet_chunk.load_results(path)


def test_stages_parser_defaults():
    full = stages.resolve_args(stages.build_parser().parse_args([]))
    assert full.sizes == [256, 512] and full.dtypes == ["fp32", "bf16"]
    assert full.frames == stages.CHUNK_FRAMES == 16 and full.frames_1080p == 16
    quick = stages.resolve_args(stages.build_parser().parse_args(["--quick"]))
    assert quick.sizes == [256] and quick.dtypes == ["fp32"] and quick.frames == 4
    assert quick.video.is_file() and quick.audio.is_file()
    with pytest.raises(SystemExit):
        stages.resolve_args(stages.build_parser().parse_args(["--sizes", "250"]))


def test_to_1080p_keeps_aspect_and_centres():
    import torch

    frames = torch.full((1, 350, 350, 3), 200, dtype=torch.uint8)
    hd = stages.to_1080p(frames)
    assert hd.shape == (1, 1080, 1920, 3) and hd.dtype == torch.uint8
    assert int(hd[0, :, :420].max()) == 0 and int(hd[0, :, 1500:].max()) == 0  # black pillarbox
    assert int(hd[0, 540, 960, 0]) == 200


@pytest.mark.integration
def test_bench_startup_prints_every_row(tmp_path):
    """`python -m bench.startup --repeats 1`: two real servers (without and with the pack) and the probe; every
    row of the table is there, the figures are positive, and the pack's import-time line was found."""
    out_json = tmp_path / "startup.json"
    proc = subprocess.run([sys.executable, "-m", "bench.startup", "--repeats", "1", "--json", str(out_json)],
                          cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _columns, rows = _table_rows(proc.stdout, "| start-up (1 repeats")
    assert len(rows) == 8, proc.stdout
    doc = json.loads(out_json.read_text())
    assert doc["ready_without_s"] > 0 and doc["ready_with_s"] > 0 and doc["import_line_s"] >= 0
    assert doc["probe"]["heavy_imported"] == [] and doc["probe"]["nodes"] == 15


# ---------------------------------------------------------------------------------------------------------------
# bench.gpu: its tiny CPU configuration, and the import of the official U-Net from a checkout


def test_bench_gpu_tiny_cpu_configuration_writes_every_figure(tmp_path):
    from bench import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main(["--tiny", "--device", "cpu", "--sizes", "256", "--dtypes", "fp32", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["unet"]
    ours = row["ours"]
    for figure in ("cfg_forward", "deepcache_step", "window20", "window20_no_deepcache"):
        stats = ours[figure]
        assert stats["p10_s"] <= stats["median_s"] <= stats["p90_s"] and stats["p10_s"] > 0, figure
    assert ours["cfg_forward"]["calls"] == 2 and ours["activation_estimate"] > 0
    assert "official" not in row  # no --official checkout given
    (pipe,) = report["pipeline"]
    assert pipe["frame_size"] == [1080, 1920]
    for mode in pipe["modes"].values():
        assert math.isfinite(mode["frames_per_s"]) and mode["frames_per_s"] > 0
        assert {"detect", "vae_encode", "unet", "vae_decode", "encode"} <= set(mode["stages"])
    assert ("overlapped" in pipe["modes"]) == gpu.pipeline_has_overlap()


def test_bench_gpu_imports_the_official_model_files_without_their_dependencies(tmp_path):
    """A checkout's `latentsync/models/unet.py` imports `..utils.util` (the official data/video helpers): bench.gpu
    replaces that module, so only the model files load. Checked on a stand-in checkout with the same imports."""
    from bench import gpu

    models = tmp_path / "checkout" / "latentsync" / "models"
    models.mkdir(parents=True)
    (tmp_path / "checkout" / "latentsync" / "utils").mkdir()
    (tmp_path / "checkout" / "latentsync" / "utils" / "util.py").write_text("raise ImportError('data deps')\n")
    (models / "utils.py").write_text("def zero_module(m):\n    return m\n")
    (models / "unet.py").write_text(
        "import torch\nfrom ..utils.util import zero_rank_log\nfrom .utils import zero_module\n\n"
        "class UNet3DConditionModel(torch.nn.Module):\n    pass\n")
    for name in [n for n in sys.modules if n.startswith(gpu.OFFICIAL_PACKAGE)]:
        del sys.modules[name]
    try:
        cls = gpu.import_official_unet(tmp_path / "checkout")
        assert cls.__module__ == f"{gpu.OFFICIAL_PACKAGE}.models.unet" and issubclass(cls, torch.nn.Module)
    finally:
        for name in [n for n in sys.modules if n.startswith(gpu.OFFICIAL_PACKAGE)]:
            del sys.modules[name]
    with pytest.raises(FileNotFoundError, match="not a checkout of bytedance/LatentSync"):
        gpu.import_official_unet(tmp_path)


def test_bench_pipeline_quick_stand_in_runs_serial_and_overlapped(tiny_model_set, tmp_path, capsys):
    """The tiny CPU configuration of `python -m bench.pipeline` (device stand-in only, 20 frames at 360p): every
    figure is there, finite and positive; the close-up's face is as large as the bench says."""
    from bench import pipeline

    out = tmp_path / "pipeline.json"
    assert pipeline.main(["--quick", "--skip-model", "--models", str(tiny_model_set), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] and doc["frame_hw"] == [360, 640]
    runs = doc["runs"]
    assert [(r["overlap"], r["stand_in_window_s"]) for r in runs] == [(False, 0.02), (True, 0.02)]
    for r in runs:
        assert r["frames"] == 20 and r["faces"] == 20 and r["decoded_frames"] == 20
        assert _positive(r["fps"]) and _positive(r["limit_fps"]) and r["slowest"] in r["thread_seconds"]
        assert all(math.isfinite(s) and s >= 0 for s in r["stage_seconds"].values())
    text = capsys.readouterr().out
    assert "| overlapped, stand-in 0.02 s/window |" in text and "of the host-side limit" in text


def test_bench_pipeline_closeup_face_is_about_1000_px():
    import numpy as np

    from bench import pipeline

    frame = np.zeros((1, 350, 350, 3), np.uint8)
    frame[0, 40:310, 100:250] = 200  # the clip's face box: ~270 of 350 px
    hd = stages.closeup_1080p(frame)
    rows = np.nonzero(hd[0, :, :, 0].max(1))[0]
    assert hd.shape == (1, 1080, 1920, 3) and 950 <= rows[-1] - rows[0] + 1 <= 1080


def test_bench_face_detect_quick_times_every_case(tmp_path, capsys):
    """`python -m bench.face_detect --quick`: onnxruntime and torch, per frame and batched, on the three inputs."""
    from bench import face_detect

    out = tmp_path / "face_detect.json"
    assert face_detect.main(["--quick", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["runtime"], r["device"], r["call"]) for r in rows] == [
        ("onnxruntime", "cpu", "frame"), ("onnxruntime", "cpu", "batch"), ("torch", "cpu", "frame"),
        ("torch", "cpu", "batch")]
    for r in rows:
        assert all(_positive(r[k]) for k in ("clip 350x350", "1080p", "1080p close-up"))
    assert "| torch | cpu | batch |" in capsys.readouterr().out
