"""python -m training.prepare_data --input DIR --output DIR [options]

Turns a folder of talking-head videos (any container, frame rate and audio) into LatentSync training data:
25 fps + 16 kHz mono, split at scene cuts (PySceneDetect), cut into 5-10 s segments, faces aligned to the model's
template (our FaceAligner, one smoothing state per segment), segments without a steady face dropped, each segment
scored with SyncNet-v2 and kept when confident enough (its audio shifted by the measured offset), written as
`OUTPUT/clips/*.mp4` with `OUTPUT/fileslist.txt` and `OUTPUT/report.json` (every input and segment, kept or dropped
and why). Re-running skips finished inputs; broken inputs are reported and skipped.

Many processes and machines: `accelerate launch [--num_processes N ...] -m training.prepare_data ...` (on a machine
without GPUs add --multi_gpu to get N CPU processes). Every process (and every --workers worker in it) claims inputs
one at a time, longest first, from claim files in OUTPUT/.prepare_state/claims (`latentsync.claims`, the batch
lip-sync runner's): each input is done exactly once, a stopped process's input is taken over, and the first process
merges every input's report into report.json at the end. With --device cuda each process uses its own GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from latentsync.claims import ClaimBoard, work_through
from latentsync.process_exit import exit_with

from .data.clips import FILESLIST_NAME
from .prepare.process import PrepareSettings, Tools, input_key, process_input, settings_dict, worker_threads

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts")
STATE_DIR = ".prepare_state"
REPORT_NAME = "report.json"
FAILED_SUFFIX = ".failed"  # marks an input that failed in this run (so no other process tries it again)

_TOOLS: Tools | None = None
_SETTINGS: PrepareSettings | None = None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.prepare_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, type=Path, help="folder of videos (searched recursively)")
    p.add_argument("--output", required=True, type=Path, help="data folder to write (clips/, fileslist.txt, report)")
    p.add_argument("--models", type=Path, default=Path("models"),
                   help="models folder (InsightFace buffalo_l, latentsync/auxiliary/syncnet_v2.model)")
    p.add_argument("--resolution", type=int, default=256,
                   help="aligned face size: 256 (LatentSync 1.5) or 512 (1.6); any multiple of 8 works")
    p.add_argument("--workers", type=int, default=1,
                   help="processes (per launched process) working on different inputs")
    p.add_argument("--face-backend", choices=["insightface", "offline"], default="insightface")
    p.add_argument("--min-confidence", type=float, default=3.0, help="SyncNet-v2 confidence a segment needs")
    p.add_argument("--max-offset", type=int, default=6, help="largest |audio-video offset| (frames) corrected")
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--scene-detector", choices=["adaptive", "content"], default="adaptive",
                   help="PySceneDetect detector: adaptive (AdaptiveDetector, as the official pipeline) or content")
    p.add_argument("--scene-threshold", type=float, default=None,
                   help="the detector's threshold (default: adaptive 2, as the official; content 27)")
    p.add_argument("--no-sync-filter", action="store_true", help="keep segments without SyncNet-v2 scoring")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (under accelerate launch: each process's own GPU)")
    p.add_argument("--no-download", action="store_true", help="never download a missing model")
    args = p.parse_args(argv)
    if args.resolution < 64 or args.resolution % 8:
        p.error("--resolution must be a multiple of 8, at least 64")
    if not 0 < args.min_seconds <= args.max_seconds:
        p.error("need 0 < --min-seconds <= --max-seconds")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if not args.input.is_dir():
        p.error(f"--input {args.input} is not a folder")
    if args.output.resolve() == args.input.resolve() or args.input.resolve() in args.output.resolve().parents:
        p.error("--output must not be inside --input (its clips would be read as inputs on the next run)")
    return args


def build_tools(args: argparse.Namespace) -> Tools:
    """Face detector (+ SyncNet-v2 unless --no-sync-filter), from the models folder."""
    from latentsync import hub
    from latentsync.face.detector import create_face_detector

    download = not args.no_download
    models_dir = hub.locate_insightface(args.models, download=download) if args.face_backend == "insightface" else None
    detector = create_face_detector(args.face_backend, models_dir=models_dir, device=args.device)
    syncnet = None
    if not args.no_sync_filter:
        from latentsync.eval import load_syncnet_v2

        syncnet = load_syncnet_v2(hub.locate_syncnet_v2(args.models, download=download), device=args.device)
    return Tools(detector, syncnet, args.device)


def settings_of(args: argparse.Namespace) -> PrepareSettings:
    return PrepareSettings(resolution=args.resolution, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                           min_confidence=args.min_confidence, max_offset=args.max_offset,
                           sync_filter=not args.no_sync_filter, scene_threshold=args.scene_threshold,
                           scene_detector=args.scene_detector)


def _init_worker(args: argparse.Namespace, threads: int | None = None) -> None:
    global _TOOLS, _SETTINGS
    if threads is not None:  # a pool worker: share the cores between the workers
        import torch

        torch.set_num_threads(threads)
    _TOOLS, _SETTINGS = build_tools(args), settings_of(args)


def _work(path: str, out_dir: str, state_file: str) -> dict:
    try:
        report = process_input(Path(path), Path(out_dir), _TOOLS, _SETTINGS)
    except Exception as exc:  # an unexpected failure on one input must not stop the others; it is retried next run
        import traceback

        return {"input": path, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8), "segments": []}
    _write_json(Path(state_file), report)
    return report


def _claim_loop(args: argparse.Namespace, inputs: list[str], output: str, threads: int | None = None) -> list[dict]:
    """Work through `inputs` (longest first) with the other processes and workers, one claimed input at a time;
    the tools are built at the first claimed input. Returns the reports of the inputs this worker did."""
    state = Path(output) / STATE_DIR
    paths = {input_key(Path(p)): p for p in inputs}
    reports = []

    def is_done(key: str) -> bool:  # finished, or failed in this run (retried on the next run)
        return (state / f"{key}.json").is_file() or (state / f"{key}{FAILED_SUFFIX}").is_file()

    def run(key: str, claim) -> None:
        if _TOOLS is None:
            _init_worker(args, threads)
        report = _work(paths[key], output, str(state / f"{key}.json"))
        print(f"prepare_data: {report['status']}: {paths[key]} (process {os.getpid()})", file=sys.stderr, flush=True)
        if report["status"] == "failed":
            _write_json(state / f"{key}{FAILED_SUFFIX}", report)
        reports.append(report)

    with ClaimBoard(state / "claims") as board:
        work_through(board, list(paths), is_done, run)
    return reports


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def find_inputs(folder: Path, output: Path) -> list[Path]:
    out = output.resolve()
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and out not in p.resolve().parents)


def write_outputs(output: Path, inputs: list[Path], state: Path, settings: dict) -> dict:
    """fileslist.txt (every kept clip of every finished input) and report.json, from the per-input state files."""
    entries, clips = [], []
    for path in inputs:
        f = state / f"{input_key(path)}.json"
        if f.is_file():
            entry = json.loads(f.read_text(encoding="utf-8"))
            entries.append(entry)
            clips += [seg["clip"] for seg in entry["segments"] if seg.get("kept") and seg.get("clip")]
    summary = {"inputs": len(inputs), "finished": len(entries),
               "broken": sum(e["status"] == "broken" for e in entries),
               "without_usable_segment": sum(e["status"] == "no_usable_segment" for e in entries),
               "segments": sum(len(e["segments"]) for e in entries), "clips": len(clips),
               "dropped": {}}
    for e in entries:
        for seg in e["segments"]:
            if not seg["kept"]:  # grouped by the kind of reason ("no face in N of N frames")
                why = re.sub(r"-?\d+(\.\d+)?", "N", seg["reason"].split(" (")[0].split(":")[0])
                summary["dropped"][why] = summary["dropped"].get(why, 0) + 1
    (output / FILESLIST_NAME).write_text("".join(f"{c}\n" for c in sorted(clips)), encoding="utf-8")
    _write_json(output / REPORT_NAME, {"settings": settings, "summary": summary, "inputs": entries})
    return summary


def main(argv=None) -> int:
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from latentsync.video_io import media_duration

    args = parse_args(argv)
    import torch

    dist = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    if args.device != "cpu":
        args.device = str(dist.device)  # each launched process on its own GPU
    output = args.output
    state = output / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    inputs = find_inputs(args.input, output)
    if not inputs:
        if dist.is_main_process:
            print(f"prepare_data: no video files in {args.input}", file=sys.stderr)
        return 1
    with dist.main_process_first():
        if dist.is_main_process:  # inputs that failed in an earlier run are tried again
            for marker in state.glob(f"*{FAILED_SUFFIX}"):
                marker.unlink(missing_ok=True)
    todo = [p for p in inputs if not (state / f"{input_key(p)}.json").is_file()]
    if dist.is_main_process:
        print(f"prepare_data: {len(inputs)} inputs, {len(inputs) - len(todo)} already done, {len(todo)} to process"
              + (f" by {dist.num_processes} processes" if dist.num_processes > 1 else ""), flush=True)
    todo.sort(key=lambda p: -(media_duration(p) or -1.0))  # the longest first: no process left with a long one
    bar = tqdm(total=len(todo), desc=f"inputs (process {dist.process_index})" if dist.num_processes > 1 else "inputs",
               unit="video", dynamic_ncols=True, file=sys.stderr, disable=not todo)
    counts = {"clips": 0, "broken": 0, "failed": 0}
    failures = []
    jobs = [str(p) for p in todo]
    if args.workers == 1 or len(todo) <= 1:
        reports = _claim_loop(args, jobs, str(output))
    else:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_claim_loop, args, jobs, str(output), worker_threads(args.workers))
                       for _ in range(args.workers)]
            reports = [r for f in futures for r in f.result()]
    for report in reports:
        counts["clips"] += sum(1 for seg in report["segments"] if seg.get("kept"))
        counts["broken"] += report["status"] == "broken"
        if report["status"] == "failed":
            counts["failed"] += 1
            failures.append(report)
        bar.update(1)
    bar.set_postfix(counts)
    bar.close()
    for report in failures:
        print(f"prepare_data: FAILED on {report['input']} (retried on the next run): {report['error']}\n"
              f"{report['traceback']}", file=sys.stderr)
    dist.wait_for_everyone()
    if not dist.is_main_process:
        return 0
    summary = write_outputs(output, inputs, state, {**settings_dict(settings_of(args)),
                                                    "face_backend": args.face_backend})
    print(f"prepare_data: {summary['clips']} clips from {summary['finished']} inputs "
          f"({summary['broken']} broken, {summary['without_usable_segment']} without a usable segment); "
          f"dropped segments: {summary['dropped'] or 'none'}")
    print(f"prepare_data: wrote {output / FILESLIST_NAME} and {output / REPORT_NAME}")
    failed = sorted(state.glob(f"*{FAILED_SUFFIX}"))
    if failed:
        print(f"prepare_data: {len(failed)} input(s) FAILED (retried on the next run); see the messages above",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_with(main())
