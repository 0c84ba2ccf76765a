"""The batch's record: one entry per finished job (``DIR/.batch/jobs/KEY.json``, written atomically when the job
finishes), one per process run (``DIR/.batch/processes/``), merged at the end into ``DIR/batch_report.json`` and
``DIR/batch_report.csv`` with a summary line."""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
from pathlib import Path

STATE_DIR = ".batch"
REPORT_JSON = "batch_report.json"
REPORT_CSV = "batch_report.csv"
CSV_COLUMNS = ("key", "status", "video", "audio", "output", "error", "video_seconds", "output_frames",
               "output_seconds", "processed_frames", "passed_through_frames", "bridged_frames", "seconds",
               "frames_per_second", "device", "host", "process", "started", "finished", "run", "recovered",
               "sync_confidence", "sync_offset_frames", "sync_distance", "score_error", "options", "warnings")


def write_json(path: Path, data) -> None:
    """Written beside its final name and renamed into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Ledger:
    """The per-job entries and per-process records under ``DIR/.batch``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / STATE_DIR
        self.jobs_dir = self.root / "jobs"
        self.processes_dir = self.root / "processes"
        self.claims_dir = self.root / "claims"
        for folder in (self.jobs_dir, self.processes_dir, self.claims_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def entry(self, key: str) -> dict | None:
        try:
            return json.loads((self.jobs_dir / f"{key}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def record(self, key: str, entry: dict) -> None:
        write_json(self.jobs_dir / f"{key}.json", entry)

    def finished(self) -> int:
        return sum(1 for name in os.listdir(self.jobs_dir) if name.endswith(".json"))

    def record_process(self, name: str, data: dict) -> None:
        write_json(self.processes_dir / f"{name}.json", data)

    def processes(self, run: str) -> list[dict]:
        out = []
        for path in sorted(self.processes_dir.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("run") == run:
                out.append(data)
        return out


def summarize(entries: list[dict], processes: list[dict], run: str) -> dict:
    done = [e for e in entries if e["status"] == "done" and e.get("run") == run]
    failed = [e for e in entries if e["status"] == "failed" and e.get("run") == run]
    earlier = [e for e in entries if e["status"] in ("done", "failed") and e.get("run") != run]
    video_min = sum(e.get("output_seconds") or 0.0 for e in done) / 60
    process_hours = sum(p.get("wall_s", 0.0) for p in processes) / 3600
    return {
        "jobs": len(entries), "done": len(done), "failed": len(failed), "skipped": len(earlier),
        "skipped_done": sum(e["status"] == "done" for e in earlier),
        "skipped_failed": sum(e["status"] == "failed" for e in earlier),
        "pending": sum(e["status"] == "pending" for e in entries),
        "video_minutes": round(video_min, 4),
        "all_video_minutes": round(sum(e.get("output_seconds") or 0.0 for e in entries
                                       if e["status"] == "done") / 60, 4),
        "processes": len(processes), "process_hours": round(process_hours, 6),
        "video_minutes_per_gpu_hour": round(video_min / process_hours, 3) if process_hours > 0 else None,
        "wall_s": round(max((p.get("wall_s", 0.0) for p in processes), default=0.0), 3),
    }


def summary_line(s: dict) -> str:
    rate = s["video_minutes_per_gpu_hour"]
    skipped = (f"{s['skipped']} skipped (finished earlier: {s['skipped_done']} done, {s['skipped_failed']} failed)"
               if s["skipped"] else "0 skipped")
    pending = f", {s['pending']} not finished" if s["pending"] else ""
    return (f"batch: {s['done']} done, {s['failed']} failed, {skipped}{pending} of {s['jobs']} jobs; "
            f"{s['video_minutes']:.2f} min of video in this run ({s['all_video_minutes']:.2f} min in all), "
            f"{'-' if rate is None else f'{rate:.1f}'} min of video per GPU-hour ({s['processes']} "
            f"process{'' if s['processes'] == 1 else 'es'}, "
            f"{s['wall_s']:.1f} s)")


def csv_row(entry: dict) -> dict:
    coverage = entry.get("coverage") or {}
    score = entry.get("score") or {}
    row = {k: entry.get(k) for k in CSV_COLUMNS}
    row.update(processed_frames=coverage.get("processed"), passed_through_frames=coverage.get("passed_through"),
               bridged_frames=coverage.get("bridged"), sync_confidence=score.get("confidence"),
               sync_offset_frames=score.get("offset_frames"), sync_distance=score.get("distance"),
               options=json.dumps(entry.get("options") or {}, sort_keys=True),
               warnings=" | ".join(entry.get("warnings") or []))
    return {k: "" if v is None else v for k, v in row.items()}


def write_reports(out_dir: Path, entries: list[dict], summary: dict, processes: list[dict]) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / REPORT_JSON, out_dir / REPORT_CSV
    write_json(json_path, {"summary": summary, "summary_line": summary_line(summary), "processes": processes,
                           "jobs": entries})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for entry in entries:
        writer.writerow(csv_row(entry))
    tmp = csv_path.with_name(f".{csv_path.name}.{secrets.token_hex(4)}.part")
    tmp.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    os.replace(tmp, csv_path)
    return json_path, csv_path
