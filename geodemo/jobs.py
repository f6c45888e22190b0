"""Background `python -m training ...` jobs: validated, queued, one at a time, persisted on disk.

Layout: <root>/<job id>/job.json (the record), log.txt (stdout + stderr of the process) and
progress.json (written by the CLI's --progress-file). Commands are argument lists built from
validated parameters (geodemo.jobform); nothing a user types ever becomes a shell string.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geodemo.data import is_safe_id
from geodemo.jobform import JobError
from geodemo.progress import PROGRESS_PREFIX, Progress

REPO = Path(__file__).resolve().parents[1]


STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
MAX_QUEUED = 8  # jobs waiting to run; more are refused with a message
KEEP_FINISHED = 50  # finished job folders kept (newest); older ones are pruned so listing stays cheap


@dataclass
class Job:
    """One job record as stored in job.json (times are Unix seconds)."""

    id: str
    kind: str  # "train" | "evaluate" | "collect"
    title: str
    args: list[str]  # argv after `python -m training`
    out: str  # checkpoint dir (train) or eval JSON (evaluate)
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    returncode: int | None = None
    message: str = ""
    params: dict = field(default_factory=dict)  # what the UI shows/needs (dataset, checkpoint, ...)
    owner: str = ""  # the browser session that started it ("" = anyone: single-user mode, CLI, old jobs)


def _killed_message(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return (f"killed by {name} from outside the app (often the system running out of memory); "
            "resume it, or start it again with a smaller batch size or image size")


def _pid_alive(pid: int | None) -> bool:
    """True if `pid` is a live `training` process (guards against pid reuse after a reboot)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"training" in cmdline


class JobManager:
    """Runs jobs one at a time from a FIFO queue on a worker thread; state lives in `root`.

    Args:
        root: jobs directory (created).
        grace_s: seconds between SIGTERM and SIGKILL on cancel.
        start: start the worker thread (tests may drive `run_next` themselves).
        command: the program a job's args are appended to (tests substitute a fake CLI).
    """

    def __init__(self, root, grace_s: float = 5.0, start: bool = True, command: list[str] | None = None):
        self.root = Path(root)
        self.command = list(command or [sys.executable, "-m", "training"])
        self.root.mkdir(parents=True, exist_ok=True)
        self.grace_s = grace_s
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancel: set[str] = set()
        self._recover()
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._worker, name="geodemo-jobs", daemon=True)
            self._thread.start()

    # --- records --------------------------------------------------------------------------------
    def path(self, job_id: str) -> Path:
        """Directory of one job (ids are checked so no path escapes root)."""
        if not is_safe_id(str(job_id)):
            raise JobError(f"Unknown job {job_id!r}.")
        return self.root / job_id

    def _save(self, job: Job) -> None:
        d = self.path(job.id)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "job.json.tmp"
        tmp.write_text(json.dumps(asdict(job), indent=1), encoding="utf-8")
        os.replace(tmp, d / "job.json")

    def get(self, job_id: str) -> Job:
        """The stored record of a job (JobError if unknown)."""
        try:
            data = json.loads((self.path(job_id) / "job.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise JobError(f"Unknown job {job_id!r}.") from None
        return Job(**data)

    def list(self) -> list[Job]:
        """All jobs, oldest first."""
        jobs = []
        for d in self.root.iterdir():
            if (d / "job.json").exists():
                try:
                    jobs.append(self.get(d.name))
                except JobError:
                    continue
        return sorted(jobs, key=lambda j: (j.created, j.id))

    def _prune(self) -> None:
        """Delete the folders of finished jobs beyond the newest KEEP_FINISHED (ids sort by time)."""
        finished = [j for j in self.list() if j.status in FINAL]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            shutil.rmtree(self.path(job.id), ignore_errors=True)

    def _update(self, job_id: str, **changes) -> Job:
        with self._lock:
            job = self.get(job_id)
            for key, value in changes.items():
                setattr(job, key, value)
            self._save(job)
            return job

    def _recover(self) -> None:
        """After an app restart: a `running` job whose process is gone is done if its outputs are complete
        (it finished while the app was down), else failed (interrupted)."""
        for job in self.list():
            if job.status == "running" and not _pid_alive(job.pid):
                if self._outputs_complete(job):
                    message = "finished while the app was down"
                    self._update(job.id, status="done", returncode=0, message=message,
                                 finished=self._finished_at(job))
                    continue
                self._update(
                    job.id,
                    status="failed",
                    finished=time.time(),
                    message="interrupted: the app stopped while the job was running",
                )

    def _outputs_complete(self, job: Job) -> bool:
        """True when the job's own outputs say it finished: progress done without error, and its checkpoint
        (train: config.json + model.safetensors) or results (evaluate: JSON + CSV) in place."""
        progress = self.progress(job.id)
        if not progress.get("done") or progress.get("error"):
            return False
        out = Path(job.out)
        if job.kind == "train":
            return (out / "config.json").is_file() and (out / "model.safetensors").is_file()
        if job.kind == "collect":  # a dataset folder (python -m training collect)
            return (out / "data.csv").is_file()
        return out.is_file() and out.with_suffix(".csv").is_file()

    def _finished_at(self, job: Job) -> float:
        try:
            return (self.path(job.id) / "progress.json").stat().st_mtime
        except OSError:
            return time.time()

    # --- public actions -------------------------------------------------------------------------
    @staticmethod
    def new_id(kind: str) -> str:
        """A fresh, sortable, path-safe job id."""
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"

    def submit(
        self,
        kind: str,
        args: list[str],
        out,
        title: str = "",
        params: dict | None = None,
        job_id: str | None = None,
        reserve: bool = False,
        owner: str | None = None,
    ) -> Job:
        """Queue `python -m training <args>`; `args` come from geodemo.jobform (or the collect form).

        `job_id` (from new_id) lets the caller put outputs into the job's own folder. `reserve` creates the
        output folder `out` now, atomically: its name is taken from submission on, and a second job or an
        upload under the same name is refused (JobError) while this one waits. `owner` (a browser session)
        is the only one who may cancel, resume or delete the job; None lets anyone.
        """
        job_id = job_id or self.new_id(kind)
        with self._lock:
            self._prune()
            waiting = sum(j.status == "queued" for j in self.list())
            if waiting >= MAX_QUEUED:
                raise JobError(f"{waiting} jobs are already waiting to run; wait for one to finish or "
                               "cancel one, then start this one.")
        job = Job(
            id=job_id,
            kind=kind,
            title=title or kind,
            args=[str(a) for a in args],
            out=str(out),
            params=dict(params or {}),
            owner=owner or "",
        )
        with self._lock:
            if reserve:
                try:
                    Path(out).mkdir(parents=True)
                except FileExistsError:
                    raise JobError(f"A checkpoint named {Path(out).name!r} already exists or is being "
                                   "trained; choose another name.") from None
            self._save(job)
        self._wake.set()
        return job

    @staticmethod
    def _check_owner(job: Job, owner: str | None, action: str) -> None:
        """JobError unless `owner` may act on `job`: the server itself (None), or the session that made it."""
        if owner is not None and job.owner and job.owner != owner:
            raise JobError(f"Job {job.id} was started by another visitor; you can follow it, but only they "
                           f"can {action} it.")

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a queued job at once, or stop a running one (SIGTERM, then SIGKILL after grace_s).

        `owner`: who asks (a browser session); None is the server itself. Refused for another's job.
        """
        with self._lock:
            job = self.get(job_id)
            self._check_owner(job, owner, "cancel")
            if job.status == "queued":
                return self._update(job_id, status="cancelled", finished=time.time(), message="cancelled")
            if job.status == "running":
                self._cancel.add(job_id)
                self._wake.set()
            return job

    def resume(self, job_id: str, owner: str | None = None) -> Job:
        """Queue an interrupted (failed) or cancelled training job again, with the same arguments.

        `train` itself resumes from <out>/lightning/last.ckpt when that exists and was written with the
        same recipe and data, so the epochs already done are not repeated. `owner` as for `cancel`.
        """
        with self._lock:
            job = self.get(job_id)
            self._check_owner(job, owner, "resume")
            if job.kind != "train" or job.status not in ("failed", "cancelled"):
                raise JobError(
                    f"Only a failed, interrupted or cancelled training job can be resumed; "
                    f"job {job_id} is a {job.status} {job.kind} job."
                )
            out = Path(job.out)
            if (out / "config.json").exists() and (out / "model.safetensors").exists():
                raise JobError(f"The checkpoint {out.name!r} of job {job_id} is already complete.")
            pending = [j for j in self.list() if j.out == job.out and j.status in ("queued", "running")]
            if pending:
                raise JobError(f"Job {pending[0].id} already trains {out.name!r}; wait for it or cancel it.")
            params = {**job.params, "resumed_from": job.id}
            title = job.title if job.title.endswith("(resumed)") else f"{job.title} (resumed)"
            return self.submit("train", job.args, job.out, title=title, params=params, owner=job.owner)

    def delete(self, job_id: str, owner: str | None = None) -> Job:
        """Delete a cancelled or failed job: its folder and its checkpoint folder (frees the name).

        A cancelled run may have saved the epochs it finished; deleting the job deletes that too. The folder
        stays when another job (a resumed copy) writes the same checkpoint; queued, running and done jobs
        are never deleted here. `owner` as for `cancel`.
        """
        with self._lock:
            job = self.get(job_id)
            self._check_owner(job, owner, "delete")
            if job.status not in ("failed", "cancelled"):
                raise JobError(f"Only a cancelled or failed job can be deleted; job {job_id} is "
                               f"{job.status}.")
            others = [j for j in self.list() if j.id != job.id and j.out == job.out]
            out = Path(job.out)
            if job.kind == "train" and out.is_dir() and not others:
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(self.path(job.id), ignore_errors=True)
            return job

    def log_file(self, job_id: str) -> Path:
        """The job's full log file (stdout + stderr of its process)."""
        return self.path(job_id) / "log.txt"

    def curated_log(self, job_id: str, lines: int = 30) -> str:
        """The last `lines` lines meant for people: the CLI's progress lines and its error sentence.

        Lightning's tips, warnings and tracebacks stay in the full log (`log_file`).
        """
        kept = []
        for line in self.log_tail(job_id, 2000).splitlines():
            if line.startswith(PROGRESS_PREFIX):
                kept.append(line[len(PROGRESS_PREFIX):])
            elif line.startswith(("error:", "resuming from", "not resuming")):
                kept.append(line)
        return "\n".join(kept[-lines:])

    def log_tail(self, job_id: str, lines: int = 40) -> str:
        """The last `lines` lines of the job's log."""
        try:
            with open(self.path(job_id) / "log.txt", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 32_000))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        # progress bars rewrite one line with \r: show only the last state of each line
        return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])

    def progress(self, job_id: str) -> dict:
        """The job's progress.json read through its schema (geodemo.progress.Progress) as a dict of every
        field: the defaults (stage "", not done) before the CLI has written it."""
        return Progress.read(self.path(job_id) / "progress.json").to_dict()

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job reaches a final status or `timeout` seconds pass (for tests, CLIs)."""
        deadline = time.monotonic() + timeout
        while (job := self.get(job_id)).status not in FINAL and time.monotonic() < deadline:
            time.sleep(0.2)
        return job

    def shutdown(self) -> None:
        """Stop the worker thread (a running job keeps running; a restart adopts or fails it)."""
        self._stop.set()
        self._wake.set()

    # --- the worker ------------------------------------------------------------------------------
    def _next(self) -> Job | None:
        with self._lock:
            jobs = self.list()
            if any(j.status == "running" for j in jobs):  # an adopted process from before a restart
                return next(j for j in jobs if j.status == "running")
            return next((j for j in jobs if j.status == "queued"), None)

    def _worker(self) -> None:
        while not self._stop.is_set():
            if not self.run_next():
                self._wake.wait(1.0)
                self._wake.clear()

    def run_next(self) -> bool:
        """Run the oldest queued job to completion; False if there was none."""
        job = self._next()
        if job is None:
            return False
        if job.status == "running":
            self._watch_foreign(job)
            return True
        d = self.path(job.id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [*self.command, *job.args, "--progress-file", str(d / "progress.json")]
        Progress(stage="starting Python").write(d / "progress.json")  # until the CLI writes its first stage
        with open(d / "log.txt", "ab") as log:
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                self._update(job.id, status="failed", finished=time.time(), message=f"could not start: {exc}")
                return True
            self._update(job.id, status="running", started=time.time(), pid=proc.pid)
            while True:
                try:
                    returncode = proc.wait(timeout=0.3)
                    break
                except subprocess.TimeoutExpired:
                    if job.id in self._cancel:
                        self._terminate(proc.pid, proc.wait)
        self._finish(job.id, returncode)
        return True

    def _terminate(self, pid: int, wait) -> None:
        """SIGTERM the job's process group; SIGKILL it if still alive after grace_s."""
        try:
            os.killpg(pid, signal.SIGTERM)
            wait(timeout=self.grace_s)
        except (ProcessLookupError, PermissionError):
            return
        except subprocess.TimeoutExpired:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _watch_foreign(self, job: Job) -> None:
        """Follow a job process left running by a previous app process (not our child)."""

        def wait(timeout=None):
            deadline = time.monotonic() + (timeout or 1e9)
            while _pid_alive(job.pid):
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired("training", timeout)
                time.sleep(0.3)

        while _pid_alive(job.pid):
            if job.id in self._cancel:
                self._terminate(job.pid, wait)
            time.sleep(0.3)
        progress = self.progress(job.id)
        self._finish(job.id, 0 if progress.get("done") and not progress.get("error") else None)

    def _finish(self, job_id: str, returncode: int | None) -> None:
        error = self.progress(job_id).get("error")
        if job_id in self._cancel:
            self._cancel.discard(job_id)
            status, message = "cancelled", "cancelled by the user"
        elif returncode == 0:
            status, message = "done", ""
        elif returncode is not None and returncode < 0:  # Popen: -N = ended by signal N, not by itself
            status, message = "failed", _killed_message(-returncode)
        else:
            last = self.log_tail(job_id, 1).strip()
            status, message = "failed", str(error or last or f"exit code {returncode}")
        self._update(
            job_id, status=status, finished=time.time(), returncode=returncode, message=message[:500]
        )
