"""The jobs of a batch: from a folder (videos matched to speech files by name), a CSV file with a header row, or a
JSON-lines file; every row checked (files exist, options valid) before any model loads, a bad row named by its line.

Folder rule: every video (FOLDER/**/NAME.mp4, .mov, .mkv, .avi, .webm, .m4v) is lip-synced to the speech file beside
it with the same name (NAME.wav, .mp3, .m4a, .aac, .flac, .ogg or .opus) into DIR/<the same sub-folders>/NAME.mp4.
A video without its speech file is a job that fails with that message (the batch goes on). Hidden files and the
output folder are skipped.

Job files: fields `video` (required), `audio` (empty or absent: the video's own audio track), `output` (default:
NAME.mp4 of the video; relative to DIR), and any lip-sync option named as the command line's option without the
dashes (`steps`, `seed`, `length_mode`, ...): empty cells keep the command line's value. Relative `video` / `audio`
paths are relative to the job file's folder.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..options import LipSyncOptions, OptionError
from ..video_io import media_duration

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus")
PATH_FIELDS = ("video", "audio", "output")


class JobListError(ValueError):
    """A job file or folder that cannot be used; the message lists every bad row with its line number."""


@dataclass(frozen=True)
class Job:
    video: Path
    audio: Path | None
    output: Path
    options: LipSyncOptions
    overrides: dict = field(default_factory=dict)  # the options this job sets itself
    where: str = ""  # "jobs.csv line 4" / "FOLDER/sub/name.mp4"
    problem: str | None = None  # known before running: the job fails with this message
    duration_s: float | None = None  # from the container header (None: unreadable)

    @property
    def key(self) -> str:
        return job_key(self.output)


def job_key(output: Path) -> str:
    """A file-name-safe key per output file: readable, unique by a hash of the full path."""
    text = str(Path(output).resolve())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(output).stem)[:60]
    return f"{stem}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _folder_jobs(folder: Path, out_dir: Path, base: LipSyncOptions) -> list[Job]:
    jobs = []
    for video in sorted(folder.rglob("*")):
        rel = video.relative_to(folder)
        if (video.suffix.lower() not in VIDEO_SUFFIXES or not video.is_file() or _inside(video, out_dir)
                or any(part.startswith(".") for part in rel.parts)):
            continue
        speech = [video.with_suffix(s) for s in AUDIO_SUFFIXES if video.with_suffix(s).is_file()]
        problem = None
        if not speech:
            problem = (f"no speech file for {video}: put {video.stem}.wav (or {', '.join(AUDIO_SUFFIXES[1:])}) "
                       "beside it")
        elif len(speech) > 1:
            problem = f"several speech files for {video}: {', '.join(p.name for p in speech)}; keep one"
        jobs.append(Job(video=video, audio=speech[0] if len(speech) == 1 else None,
                        output=out_dir / rel.with_suffix(".mp4"), options=base, where=str(video), problem=problem))
    if not jobs:
        raise JobListError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {folder}")
    return jobs


def _rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, fields) of each job of a CSV (header row) or JSON-lines file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobListError(f"{path.name} line {number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise JobListError(f"{path.name} line {number}: not a JSON object")
            rows.append((number, row))
        return rows
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "video" not in [f.strip() for f in reader.fieldnames]:
        raise JobListError(f"{path.name} line 1: the header row needs a 'video' column (and optionally audio, output "
                           f"and options: {', '.join(LipSyncOptions.names())})")
    rows = []
    for row in reader:
        if None in row:
            raise JobListError(f"{path.name} line {reader.line_num}: more cells than header columns")
        rows.append((reader.line_num, {k.strip(): v for k, v in row.items()}))
    return rows


def _file_job(path: Path, number: int, row: dict, out_dir: Path, base: LipSyncOptions) -> Job:
    where = f"{path.name} line {number}"
    folder = path.parent

    def resolve(name: str, relative_to: Path) -> Path | None:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        p = Path(str(value).strip()).expanduser()
        return p if p.is_absolute() else relative_to / p

    video = resolve("video", folder)
    if video is None:
        raise JobListError(f"{where}: no video")
    if not video.is_file():
        raise JobListError(f"{where}: video file not found: {video}")
    audio = resolve("audio", folder)
    if audio is not None and not audio.is_file():
        raise JobListError(f"{where}: audio file not found: {audio}")
    output = resolve("output", out_dir) or out_dir / f"{video.stem}.mp4"
    overrides = {k: v for k, v in row.items() if k not in PATH_FIELDS}
    try:
        options = LipSyncOptions.from_mapping(overrides, base=base)
    except OptionError as exc:
        raise JobListError(f"{where}: {exc}") from None
    set_here = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None and str(v).strip()}
    return Job(video=video, audio=audio, output=output, options=options,
               overrides={k: getattr(options, k) for k in set_here}, where=where)


def read_jobs(source: str | Path, out_dir: str | Path, base: LipSyncOptions | None = None) -> list[Job]:
    """Every job of `source` (folder, .csv, .jsonl), checked; raises `JobListError` naming every bad row."""
    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    base = (base or LipSyncOptions()).validate()
    if source.is_dir():
        jobs = _folder_jobs(source, out_dir, base)
    elif source.is_file():
        jobs, errors = [], []
        for number, row in _rows(source):
            try:
                jobs.append(_file_job(source, number, row, out_dir, base))
            except JobListError as exc:
                errors.append(str(exc))
        if errors:
            raise JobListError("\n".join(errors))
        if not jobs:
            raise JobListError(f"{source} has no jobs")
    else:
        raise JobListError(f"--jobs {source}: no such folder or file")
    seen: dict[str, str] = {}
    for job in jobs:
        other = seen.setdefault(str(job.output.resolve()), job.where)
        if other != job.where:
            raise JobListError(f"{job.where}: writes the same output as {other}: {job.output}")
        if job.output.resolve() in (job.video.resolve(), job.audio.resolve() if job.audio else None):
            raise JobListError(f"{job.where}: the output would overwrite its input {job.output}")
    return jobs


def longest_first(jobs: list[Job]) -> list[Job]:
    """Jobs with their durations read from the headers, longest first (unreadable ones last, in list order)."""
    timed = [dataclasses.replace(job, duration_s=media_duration(job.video)) for job in jobs]
    return sorted(timed, key=lambda j: -(j.duration_s or -1.0))
