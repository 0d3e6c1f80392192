"""Where sweep cells execute: a local process pool, or Ray tasks on a local or remote Ray cluster.

Both backends run the same function, :func:`run_cell`, which starts or resumes one run and returns a plain dict
(never raises for a failing run, so one cell cannot hide the others). Results reach the driver's results root in
one of two ways (``transfer``):

- ``shared``: the worker writes straight into the results root. Right for the local pool, and for a cluster whose
  nodes all mount the results root at the same absolute path (NFS, Lustre, ...).
- ``return``: the worker runs into a private temporary root and returns the whole run folder (run.json, config,
  eval and train logs, the last checkpoint) as bytes; the driver writes it under its own results root. A cell
  that failed comes back too, and a retry or a later sweep ships that folder to the worker to resume it. Works
  on any cluster; checkpoints travel through Ray's object store, so prefer ``shared`` for very large models.

Ray is imported only when the Ray backend is built (the ``ray`` extra). The design follows the Ray Tune advice in
reference/benchmarks.md §10.2 (one run per task, CPU/GPU resources per task, retries from the driver) with plain
Ray tasks, since a grid needs no search algorithm.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from cl_suite.config import ConfigError
from cl_suite.locks import FolderLock, die_with_parent
from cl_suite.results import RUN_FILE

RAY_INSTALL_HINT = "--backend ray needs Ray: pip install 'cl-suite[ray]' (or pip install -c constraints.txt ray)"


# -- the worker side -------------------------------------------------------------------------------------------
def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Start or resume one run. ``job``: run_id, config (the resolved config as a dict), config_hash, root
    (a shared results root, or None to run privately and return the folder), files (a folder to resume from, in
    ``return`` mode), threads (torch threads). Returns status, error, log text and, in ``return`` mode, files."""
    import torch

    from cl_suite import config, runner

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    log, t0 = io.StringIO(), time.perf_counter()
    shared = job.get("root")
    holder = nullcontext(shared) if shared else tempfile.TemporaryDirectory(prefix="cl-suite-cell-")
    with holder as root:
        run_dir = Path(root) / "runs" / job["run_id"]
        if job.get("files"):
            unpack(job["files"], run_dir)
        status, error = "success", None
        try:
            cfg = config.resolve(job["config"])
            if cfg.config_hash() != job["config_hash"]:
                raise ConfigError(f"this worker resolves the config to hash {cfg.config_hash()}, the driver to "
                                  f"{job['config_hash']}: install the same cl-suite and plugins on every node")  # fmt: skip
            if (run_dir / RUN_FILE).exists():
                runner.resume(run_dir, out=log, progress=False, cfg=cfg)  # the driver's config, not the folder's
            else:
                if run_dir.exists():  # killed before its record was written: nothing in it to keep
                    with FolderLock(run_dir, f"run folder {run_dir}"):  # unless a live process is creating it
                        shutil.rmtree(run_dir)
                runner.start(cfg, root, out=log, progress=False, run_id=job["run_id"])
        except Exception as e:
            status, error = "failed", f"{type(e).__name__}: {e}"
        result = {"run_id": job["run_id"], "status": status, "error": error, "log": log.getvalue(),
                  "host": socket.gethostname(), "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        if not shared and run_dir.exists():
            result["files"] = pack(run_dir)
    return result


def pack(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path (POSIX form), for shipping a run folder."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], folder: Path) -> None:
    for rel, data in files.items():
        target = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"refusing to write outside the run folder: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)


def store_returned(files: dict[str, bytes], root: Path, run_id: str) -> Path:
    """Write a returned run folder under ``root/runs/run_id``, replacing what was there in one rename."""
    runs = Path(root) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=f".{run_id}.incoming-", dir=runs))
    unpack(files, incoming)
    dest = runs / run_id
    if dest.exists():
        old = dest.with_name(f".{run_id}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(incoming, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(incoming, dest)
    return dest


def clean_returned(root: Path) -> None:
    """Drop what an interrupted :func:`store_returned` left under ``root/runs`` (``.<id>.incoming-*``: a folder not
    yet in place; ``.<id>.old-*``: one already replaced). Called by the sweep driver holding the root's lock."""
    runs = Path(root) / "runs"
    for leftover in [*runs.glob(".*.incoming-*"), *runs.glob(".*.old-*")] if runs.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)


def failed_result(run_id: str, error: BaseException | str) -> dict[str, Any]:
    """The result of a cell whose worker died or could not be reached (no folder came back)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}".strip()
    return {"run_id": run_id, "status": "failed", "error": text.splitlines()[0] if text else "worker failed",
            "log": text, "host": None, "seconds": None}  # fmt: skip


# -- local process pool ----------------------------------------------------------------------------------------
def _init_local_worker(gpu_slots, driver_pid: int | None = None) -> None:
    """Tie this pool worker's life to the driver's (a killed driver leaves no worker writing cells), and give it
    its own GPUs (before CUDA initialises) when the sweep asked for GPUs."""
    die_with_parent(driver_pid)
    if gpu_slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots.get()


def local_gpu_slots(gpus_per_run: float, n_gpus: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES values, one per concurrent run: whole GPUs per run, or runs packed per GPU."""
    if gpus_per_run <= 0:
        return []
    if n_gpus == 0:
        raise ConfigError(f"--gpus-per-run {gpus_per_run:g} asked for, but this machine has no CUDA GPU")
    if gpus_per_run < 1:
        per_gpu = int(1 / gpus_per_run)
        return [str(g) for g in range(n_gpus) for _ in range(per_gpu)]
    width = int(gpus_per_run)
    if width != gpus_per_run or width > n_gpus:
        raise ConfigError(f"--gpus-per-run must be a fraction below 1 or a whole number <= {n_gpus}, got {gpus_per_run:g}")
    return [",".join(str(g) for g in range(i, i + width)) for i in range(0, n_gpus - width + 1, width)]


class LocalBackend:
    """A pool of ``jobs`` spawned processes (spawn: no torch state is forked). A pool that breaks because a
    worker was killed is rebuilt; the cells it held come back as failed and are retried by the driver."""

    name = "local"

    def __init__(self, jobs: int, gpus_per_run: float = 0.0) -> None:
        self.slots: list[str] = []
        if gpus_per_run > 0:
            import torch

            self.slots = local_gpu_slots(gpus_per_run, torch.cuda.device_count())
            jobs = min(jobs, len(self.slots))
        self.capacity = max(1, jobs)
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            queue = None
            if self.slots:
                queue = ctx.Queue()
                for slot in self.slots[: self.capacity]:
                    queue.put(slot)
            self._pool = cf.ProcessPoolExecutor(self.capacity, mp_context=ctx, initializer=_init_local_worker,
                                                initargs=(queue, os.getpid()))  # fmt: skip
        return self._pool

    def submit(self, job: dict[str, Any]) -> cf.Future:
        try:
            return self._executor().submit(run_cell, job)
        except cf.process.BrokenProcessPool:
            self._pool = None
            return self._executor().submit(run_cell, job)

    def wait_one(self, handles) -> tuple[Any, dict[str, Any] | BaseException]:
        done, _ = cf.wait(list(handles), return_when=cf.FIRST_COMPLETED)
        future = next(iter(done))
        try:
            return future, future.result()
        except cf.process.BrokenProcessPool as e:
            self._pool = None  # rebuilt at the next submit
            return future, RuntimeError(f"the worker process died ({e})")
        except Exception as e:
            return future, e

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None


# -- Ray -------------------------------------------------------------------------------------------------------
class RayBackend:
    """One Ray task per cell with ``num_cpus``/``num_gpus`` resources. ``address``: a running cluster
    (``auto``, ``ray://host:10001``, ``host:6379``); None connects to $RAY_ADDRESS or a cluster started on this
    machine with ``ray start``, else starts a local Ray for the duration of the sweep. If this process already
    called ``ray.init()``, that connection is used and left open."""

    name = "ray"

    def __init__(self, address: str | None, jobs: int | None, cpus_per_run: float, gpus_per_run: float) -> None:
        try:
            import ray
        except ImportError as e:
            raise ConfigError(RAY_INSTALL_HINT) from e
        self.ray = ray
        self._owns_connection = not ray.is_initialized()  # a caller that already ran ray.init() keeps it
        if self._owns_connection:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ConfigError(f"cannot connect to Ray at {address or 'the default address'}: {e}") from e
        total = ray.cluster_resources()
        for kind, need in (("CPU", cpus_per_run), ("GPU", gpus_per_run)):
            if need > total.get(kind, 0):
                self.close()
                raise ConfigError(f"each run asks for {need:g} {kind}, and the Ray cluster has {total.get(kind, 0):g}")
        self.capacity = jobs or max(1, int(total.get("CPU", 1) // max(cpus_per_run, 1e-9)))
        self.capacity = max(1, self.capacity)
        self._task = ray.remote(run_cell).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        self.address = ray.get_runtime_context().gcs_address

    def submit(self, job: dict[str, Any]):
        return self._task.remote(job)

    def wait_one(self, handles) -> tuple[Any, dict[str, Any] | BaseException]:
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        try:
            return ready[0], self.ray.get(ready[0])
        except Exception as e:  # RayTaskError, WorkerCrashedError, NodeDiedError, ...
            return ready[0], e

    def close(self, cancel: bool = False) -> None:
        if self._owns_connection:
            self.ray.shutdown()  # disconnects from a cluster; stops a Ray that ray.init() started for this sweep
