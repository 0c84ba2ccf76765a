"""One process of a batch: loads the models once (at its first job that needs them), then lip-syncs the jobs it
claims, one at a time, each into a hidden part file renamed into place, and records each job's result."""
from __future__ import annotations

import os
import re
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..claims import Claim, ClaimLost
from ..options import ModelOptions
from .job_list import Job
from .report import Ledger

_PART = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{12}\.part(?P<suffix>\.[^.]+)$")  # VideoWriter's part files


class ModelsUnavailable(RuntimeError):
    """The models cannot be loaded: no job can run in this process (the batch stops, nothing is recorded)."""


def stale_parts(output: Path) -> list[Path]:
    """Part files a stopped process left beside `output` (only its claimer may write there, so all are stale)."""
    folder = output.parent
    if not folder.is_dir():
        return []
    found = []
    for name in os.listdir(folder):
        m = _PART.match(name)
        if m and m["stem"] == output.stem and m["suffix"] == (output.suffix or ".mp4"):
            found.append(folder / name)
    return found


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _frames_of(path: Path) -> tuple[int | None, float | None]:
    """(frames, seconds) of a written output from its header."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        return (int(stream.frames) or None), seconds


@dataclass
class BatchWorker:
    jobs: dict[str, Job]
    ledger: Ledger
    model: ModelOptions
    device: str
    process: int
    run_id: str
    retry_failed: bool = False
    score: bool = False
    overwrite: bool = False
    log: Callable[[str], None] = print
    counts: dict = field(default_factory=lambda: {"done": 0, "failed": 0, "frames": 0, "seconds": 0.0})
    _pipe: object = None
    _syncnet: object = None

    # -- what is done
    def is_done(self, key: str) -> bool:
        entry = self.ledger.entry(key)
        if entry is None:
            return False
        if entry["status"] == "failed" and self.retry_failed:
            return entry.get("run") == self.run_id  # failed before this run: try again (once)
        return True

    # -- models, once per process
    def pipeline(self):
        if self._pipe is None:
            from ..runner import build_pipeline

            try:
                self._pipe, _ = build_pipeline(self.model.models, self.model.version, self.model.face_backend,
                                               self.device, dtype=self.model.torch_dtype(),
                                               download=self.model.download, log=self.log)
            except Exception as exc:  # noqa: BLE001 - whatever stops the models loading stops this process
                raise ModelsUnavailable(f"the models could not be loaded: {exc}") from exc
        return self._pipe

    def _score(self, output: Path) -> dict:
        from ..eval import SyncScoreError, load_syncnet_v2
        from ..eval.files import score_file
        from ..hub import locate_syncnet_v2

        if self._syncnet is None:
            self._syncnet = load_syncnet_v2(locate_syncnet_v2(self.model.models, download=self.model.download),
                                            device=self.device)
        try:
            s = score_file(output, syncnet=self._syncnet, detector=self.pipeline().face_detector, device=self.device)
        except SyncScoreError as exc:
            return {"score_error": str(exc)}
        return {"score": {"confidence": round(s.confidence, 4), "offset_frames": int(s.offset_frames),
                          "distance": round(s.distance, 4)}}

    # -- one job
    def run(self, key: str, claim: Claim) -> None:
        from ..__main__ import error_text, user_errors
        from ..runner import run_lipsync

        job = self.jobs[key]
        for part in stale_parts(job.output):
            part.unlink(missing_ok=True)
        entry = {"key": key, "video": str(job.video), "audio": str(job.audio) if job.audio else None,
                 "output": str(job.output), "where": job.where, "video_seconds": job.duration_s,
                 "options": job.overrides, "device": self.device, "host": socket.gethostname(),
                 "process": self.process, "run": self.run_id, "started": _now(), "recovered": False}
        t0 = time.monotonic()
        if job.problem:
            entry.update(status="failed", error=job.problem)
        elif job.output.exists() and claim.took_over and self.ledger.entry(key) is None:
            # its process stopped after the output took its name and before the entry was written: it is whole
            frames, seconds = _frames_of(job.output)
            entry.update(status="done", recovered=True, output_frames=frames, output_seconds=seconds,
                         warnings=["recorded after a stopped process: the output was complete, not written again"])
        else:
            job.output.parent.mkdir(parents=True, exist_ok=True)
            try:
                result = run_lipsync(job.video, job.audio, job.output, job.options, self.model,
                                     log=self._job_log, overwrite=self.overwrite, pipeline=self.pipeline,
                                     before_commit=claim.check)
            except (ClaimLost, ModelsUnavailable, KeyboardInterrupt):
                raise
            except user_errors() as exc:
                entry.update(status="failed", error=error_text(exc))
            except Exception as exc:  # noqa: BLE001 - one job's unexpected failure is recorded, the batch goes on
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc(limit=12))
            else:
                summary = result.to_dict()
                entry.update(status="done", output_frames=summary["output_frames"],
                             output_seconds=summary["output_seconds"], coverage=summary["coverage"],
                             length_mode=summary["length_mode"], fps=summary["fps"], warnings=summary["warnings"])
                if self.score:
                    entry.update(self._score(job.output))
        seconds = time.monotonic() - t0
        frames = entry.get("output_frames") or 0
        entry.update(finished=_now(), seconds=round(seconds, 3),
                     frames_per_second=round(frames / seconds, 3) if frames and seconds > 0 else None)
        claim.check()  # taken over meanwhile: the taker records the job
        self.ledger.record(key, entry)
        self.counts[entry["status"]] += 1
        self.counts["frames"] += frames
        self.counts["seconds"] += seconds
        self._progress(job, entry)

    def _job_log(self, message: str) -> None:
        if message.startswith(("WARNING", "NOTE", "loading", "face detector")):
            self.log(message)

    def _progress(self, job: Job, entry: dict) -> None:
        c = self.counts
        rate = c["frames"] / c["seconds"] if c["seconds"] > 0 else 0.0
        what = (f"done in {entry['seconds']:.1f} s ({entry.get('output_frames')} frames)" if entry["status"] == "done"
                else f"FAILED: {entry['error']}")
        self.log(f"{job.where}: {what}; this process: {c['done']} done, {c['failed']} failed, {rate:.1f} frames/s; "
                 f"overall {self.ledger.finished()}/{len(self.jobs)} finished")
