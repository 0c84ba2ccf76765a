"""Claim files: many processes, on one machine or on several sharing a folder, work through one list of jobs, each
job done once, and a crashed process's jobs taken over by the others or by the next run.

A process claims a job by creating ``FOLDER/KEY.0.claim`` with ``O_CREAT | O_EXCL`` (exactly one creator wins)
and writes into it who it is (host, pid, process start time) and a heartbeat time. While it works, a thread rewrites
the heartbeat every `heartbeat` seconds (a temporary file `os.replace`d over the claim, so a reader sees a whole
claim). A claim whose heartbeat is older than `missed` periods has expired (its owner died, or its machine did); on
the same host a claim whose process no longer runs has expired at once. An expired claim of generation g is taken
over by creating ``KEY.(g+1).claim``, again with ``O_EXCL``, so one taker wins; the old owner, should it come back,
sees the newer generation and gives the job up (`Claim.check` before it commits its output). A released job's claim
files are deleted.

What the folder needs (a local disk has it; NFS v3+, SMB and the usual cluster file systems do): exclusive create,
atomic rename over an existing file within one folder, and the machines' clocks agreeing to well within the expiry
time (NTP; the default expiry is 4 x 30 s = 2 minutes).

`work_through` is the loop both the batch lip-sync runner and `training.prepare_data` use: longest job first, skip
what is done, claim, run, release, and wait for (or take over) jobs other processes hold until every job is done.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEAT_S = 30.0
MISSED_BEATS = 4
SUFFIX = ".claim"


class ClaimLost(RuntimeError):
    """Another process took this job over (this one was presumed dead): its result must not be committed."""


def _process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when it does not run (or cannot be asked)."""
    import psutil  # a dependency of accelerate

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # it runs, under another user


def identity() -> dict:
    """Who this process is, as written into its claims."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_started": _process_started(pid),
            "owner": f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}"}


@dataclass
class Claim:
    key: str
    generation: int
    path: Path
    previous: dict | None = None  # the expired claim this one took over, if any
    lost: bool = False

    @property
    def took_over(self) -> bool:
        return self.generation > 0

    def check(self) -> None:
        """Raise `ClaimLost` when a newer claim exists (this process was presumed dead and the job taken over)."""
        newer = self.path.with_name(f"{self.key}.{self.generation + 1}{SUFFIX}")
        if self.lost or newer.exists():
            self.lost = True
            raise ClaimLost(f"job {self.key} was taken over by another process (this one missed its heartbeats)")


class ClaimBoard:
    """The claim files of one folder, for this process. Use as a context manager (stops the heartbeat and
    releases what is still held)."""

    def __init__(self, folder: str | Path, heartbeat: float = HEARTBEAT_S, missed: int = MISSED_BEATS):
        if heartbeat <= 0 or missed < 2:
            raise ValueError("the heartbeat must be positive and at least 2 beats may be missed")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.heartbeat, self.missed = float(heartbeat), int(missed)
        self.me = identity()
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def expiry(self) -> float:
        return self.heartbeat * self.missed

    # -- reading
    def _path(self, key: str, generation: int) -> Path:
        return self.folder / f"{key}.{generation}{SUFFIX}"

    def _current(self, key: str) -> int | None:
        """The newest generation of `key`'s claim, or None when it is not claimed."""
        generation = None
        while self._path(key, 0 if generation is None else generation + 1).exists():
            generation = 0 if generation is None else generation + 1
        return generation

    def _read(self, path: Path) -> dict | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {}  # being created or rewritten right now (or its writer died in between)

    def expired(self, path: Path, content: dict | None = None) -> bool:
        content = self._read(path) if content is None else content
        if content is None:
            return True  # released meanwhile
        now = time.time()
        if not content:
            try:
                return now - path.stat().st_mtime > self.expiry
            except FileNotFoundError:
                return True
        if now - float(content.get("heartbeat", 0)) > self.expiry:
            return True
        if content.get("host") == self.me["host"] and content.get("process_started") not in (None, -1.0):
            started = _process_started(int(content["pid"]))
            if started != -1.0 and (started is None or abs(started - content["process_started"]) > 1.0):
                return True  # its process on this machine has ended (or the pid now belongs to another process)
        return False

    def holder(self, key: str) -> dict | None:
        """The live claim on `key` (its content), or None when the job is free or its claim has expired."""
        generation = self._current(key)
        if generation is None:
            return None
        path = self._path(key, generation)
        content = self._read(path)
        return None if self.expired(path, content) else (content or {})

    # -- claiming
    def claim(self, key: str) -> Claim | None:
        """Claim `key`, or take over its expired claim; None when a live process holds it (or won the race)."""
        generation = self._current(key)
        previous = None
        if generation is not None:
            path = self._path(key, generation)
            previous = self._read(path)
            if not self.expired(path, previous):
                return None
        target = 0 if generation is None else generation + 1
        path = self._path(key, target)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        now = time.time()
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps({**self.me, "key": key, "generation": target, "claimed": now, "heartbeat": now,
                                "heartbeat_period_s": self.heartbeat, "expires_after_s": self.expiry}))
        claim = Claim(key, target, path, previous=previous)
        with self._lock:
            self._held[key] = claim
        self._start_heartbeat()
        return claim

    def release(self, claim: Claim) -> None:
        """Give the job up (done, failed, or interrupted): its claim files are deleted, oldest first (the newest
        stays until last, so nobody sees an older, expired generation alone and claims a finished job)."""
        with self._lock:
            self._held.pop(claim.key, None)
        if claim.lost or self._path(claim.key, claim.generation + 1).exists():
            return  # the taker owns the files now
        for generation in range(claim.generation + 1):
            self._path(claim.key, generation).unlink(missing_ok=True)

    # -- heartbeat
    def _start_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                for claim in list(self._held.values()):
                    if self._path(claim.key, claim.generation + 1).exists():
                        claim.lost = True
                        continue
                    content = self._read(claim.path)
                    if not content:
                        continue
                    content["heartbeat"] = time.time()
                    tmp = claim.path.with_name(f".{claim.path.name}.{secrets.token_hex(4)}.beat")
                    try:
                        tmp.write_text(json.dumps(content), encoding="utf-8")
                        os.replace(tmp, claim.path)
                    except OSError:  # e.g. a reader holds the file open on Windows: the next beat renews it
                        tmp.unlink(missing_ok=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat + 5)
        with self._lock:
            held = list(self._held.values())
        for claim in held:
            self.release(claim)

    def __enter__(self) -> ClaimBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class WorkStats:
    """What one process did in `work_through`: jobs run, seconds working and seconds waiting for others."""

    ran: list[str] = field(default_factory=list)
    busy_s: float = 0.0
    idle_s: float = 0.0
    wall_s: float = 0.0


def work_through(board: ClaimBoard, keys: Sequence[str], is_done: Callable[[str], bool],
                 run: Callable[[str, Claim], None], poll: float | None = None,
                 on_wait: Callable[[list[str]], None] | None = None) -> WorkStats:
    """Run every job of `keys` (in this order: put the longest first) that is not done, one claim at a time, until
    every job is done: jobs other processes hold are waited for, and taken over when their claim expires. `run`
    must make `is_done(key)` true (record a failure as done) and should call `claim.check()` before it commits."""
    stats = WorkStats()
    start = time.monotonic()
    poll = min(board.heartbeat, 5.0) if poll is None else poll
    pending: Iterable[str] = list(keys)
    while True:
        waiting = []
        for key in pending:
            if is_done(key):
                continue
            claim = board.claim(key)
            if claim is None:
                waiting.append(key)
                continue
            try:
                if not is_done(key):  # finished by another process between the check and the claim
                    t0 = time.monotonic()
                    run(key, claim)
                    stats.busy_s += time.monotonic() - t0
                    stats.ran.append(key)
            except ClaimLost:
                waiting.append(key)  # presumed dead and taken over: the taker finishes it
            finally:
                board.release(claim)
        pending = [key for key in waiting if not is_done(key)]
        if not pending:
            break
        if on_wait is not None:
            on_wait(pending)
        t0 = time.monotonic()
        time.sleep(poll)
        stats.idle_s += time.monotonic() - t0
    stats.wall_s = time.monotonic() - start
    return stats
