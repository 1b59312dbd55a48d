"""publish(): a training job (one rank of a torchrun / DDP job, or one process) writes its
gradients to a job log that a notebook follows (:func:`gradwidget.attach`).

**Which gradient.** Parameter gradients are read where the widget reads them: ``.grad`` at
the optimizer step pre-hook (:class:`~gradwidget._watch.Watcher`'s parameter tier). Under
DDP that ``.grad`` is already all-reduced, so rank 0's statistics *are* the statistics of
the gradient every rank steps with: no collective is needed for them, and rank 0 samples on
its own wall clock. Intermediates (autograd nodes) are rank-local: each rank's gradient of
its own batch. By default they are sampled on the same forwards on every rank and reduced
across ranks (:mod:`gradwidget._shared`: the job's whole batch, no collective between
samples); ``intermediates="local"`` shows rank 0's own, labelled so. Sharded parameters
(FSDP, ``DTensor`` gradients) hold one shard per rank: publish refuses them rather than
show a shard as the gradient.

**What is written.** Rank 0 appends the job record, the graph (recorded once, from the
first forward), every sample (statistics as computed, lints, tier rates), the values given
to :meth:`Publication.log`, and an end record, to one file in ``logdir``
(:mod:`gradwidget._logfile`). A daemon thread does the encoding and writing, so the
training thread only hands over plain Python numbers. Every rank keeps a heartbeat file
(replaced once a second: alive, optimizer steps, how it ended), which is how the notebook
tells "rank 1 failed" from "the job stopped". Other ranks write nothing else unless
``local_stats=True`` (then each writes its own statistics to a log of its own).
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils._pytree import tree_leaves

from . import _lint
from . import _logfile as lf
from ._leaf import unscale
from ._lint import LintConfig
from ._logpump import BEAT_EVERY, LogPump
from ._record import record
from ._run import scalar
from ._shared import SharedTier
from ._targets import eager_module
from ._watch import DEFAULT_EVERY, DEFAULT_MAX_OVERHEAD, Watcher

#: Where a multi-process job's intermediates come from (see :func:`publish`).
INTERMEDIATES = ("reduced", "local")


def _dist() -> tuple[int, int, str | None]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), str(dist.get_backend())
    return 0, 1, None


def _sharded(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        DTensor = ()
    if type(model).__name__ == "FullyShardedDataParallel":
        return True
    return any(isinstance(p, DTensor) for p in model.parameters())


class Publication:
    """What :func:`publish` returns: the job side of a watched job (see the module docs).

    Attributes
    ----------
    job : str
        The job's name (the same on every rank).
    path : Path or None
        The log this rank writes (None: this rank writes only its heartbeat).
    rank, world_size : int
    watcher : Watcher or None
        The watcher of this rank's gradients once the first forward drew the graph.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        logdir: str | os.PathLike,
        *,
        every: float = DEFAULT_EVERY,
        max_overhead: float = DEFAULT_MAX_OVERHEAD,
        lint: LintConfig | None = None,
        local_stats: bool = False,
        job: str | None = None,
        intermediates: str = "reduced",
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"publish() needs the nn.Module being trained (DDP-wrapped or not); got "
                f"{type(model).__name__}."
            )
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a directory path; got {type(logdir).__name__}.")
        if _sharded(model):
            raise ValueError(
                "publish() reads parameter gradients at the optimizer step, where a sharded "
                "model (FSDP, DTensor parameters) holds one shard per rank: rank 0's shard is "
                "not the gradient. Publish the unsharded or DDP-wrapped model."
            )
        if intermediates not in INTERMEDIATES:
            raise ValueError(
                f"intermediates must be one of {INTERMEDIATES}; got {intermediates!r}."
            )
        self.rank, self.world_size, self.backend = _dist()
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if self.world_size == 1 and launched > 1:
            raise RuntimeError(
                f"publish() runs in a job of {launched} processes (WORLD_SIZE) before "
                "torch.distributed.init_process_group(): call it after, so the ranks agree "
                "on one log."
            )
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.job = self._agree_on_name(job)
        # Reduced across ranks: on a process group of its own, made now (every rank is here).
        shared = intermediates == "reduced" and self.world_size > 1
        self._group = torch.distributed.new_group(backend=self.backend) if shared else None
        self.intermediates = intermediates if self.world_size > 1 else "local"
        self.shared: SharedTier | None = None
        self._op_lints: list[dict] = []
        self._watch: dict[str, Any] = {}
        self._settings = {"every": every, "max_overhead": max_overhead, "lint": lint}
        self.model = model
        self.watcher: Watcher | None = None
        self.steps = 0  # optimizer steps this process made
        self.closed = False
        writes = self.rank == 0 or local_stats
        self.path = lf.log_path(self.logdir, self.job, self.rank) if writes else None
        self._rec: record | None = None
        self._hooks: list[Any] = [register_optimizer_step_pre_hook(self._count_step)]
        identity = {"job": self.job, "rank": self.rank, "world_size": self.world_size}
        beat = lf.beat_path(self.logdir, self.job, self.rank)
        self._pump = LogPump(self.path, beat, identity, lambda: self.steps)
        if self.path is not None:
            self._pump.put(lf.JOB, self._job_info(local_stats))
        if self.path is not None or shared:  # every rank draws the graph: the same ids
            self._hooks.append(model.register_forward_pre_hook(self._before_first_forward))
            self._hooks.append(
                model.register_forward_hook(self._after_first_forward, always_call=True)
            )
        atexit.register(self._at_exit)

    @property
    def dropped(self) -> int:
        """Samples the writer could not keep up with (dropped, not written)."""
        return self._pump.dropped

    def _agree_on_name(self, job: str | None) -> str:
        name = job or f"job-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        if self.world_size > 1:  # once, at setup: every rank calls publish()
            box = [name]
            torch.distributed.broadcast_object_list(box, src=0)
            name = box[0]
        return str(name)

    def _job_info(self, local_stats: bool) -> dict[str, Any]:
        return {
            "job": self.job,
            "rank": self.rank,
            "world_size": self.world_size,
            "backend": self.backend,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "model": type(eager_module(self.model)).__name__,
            "every": self._settings["every"],
            "local_stats": local_stats,
            "intermediates": self.intermediates,
            "beat_every": BEAT_EVERY,
        }

    # ---- the training thread -------------------------------------------------------------
    def _count_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1

    def _before_first_forward(self, module: Any, args: Any) -> None:
        if self._rec is None and self.watcher is None:
            try:
                self._rec = record(eager_module(module))
                self._rec.__enter__()
            except Exception as err:
                self._rec = None
                self._failed_to_draw(err)

    def _after_first_forward(self, module: Any, args: Any, out: Any) -> None:
        rec, self._rec = self._rec, None
        if rec is None:
            return
        try:
            rec.__exit__(None, None, None)
            outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
            if not outs:
                return  # an evaluation forward (no_grad): record the next one
            graph = rec.graph_of(*outs)
            self._remove_forward_hooks()
            s = self._settings
            if self._group is not None:
                self.shared = SharedTier(
                    graph,
                    self.model,
                    self._group,
                    every=s["every"],
                    max_overhead=s["max_overhead"],
                    on_sample=self._on_shared,
                    on_error=self._failed_to_sample,
                )
            if self.path is None:
                return
            # Rank 0 shows the reduced intermediates; a rank writing its own statistics
            # (local_stats) samples its own as well.
            own = self.shared is None or self.rank != 0
            self.watcher = Watcher(
                graph,
                self.model,
                every=s["every"],
                max_overhead=s["max_overhead"],
                lint=s["lint"],
                on_sample=self._on_sample,
                intermediates=own,
                trace="nonfinite" if own else "off",
            )
            self.watcher.begin_run()
            self._pump.put(lf.GRAPH, lf.graph_to_json(graph))
        except Exception as err:
            self._remove_forward_hooks()
            self._failed_to_draw(err)

    def _remove_forward_hooks(self) -> None:
        for h in self._hooks[1:]:
            h.remove()
        del self._hooks[1:]

    def _failed_to_sample(self, err: BaseException) -> None:
        _warn("sample the intermediates", err, "")

    def _failed_to_draw(self, err: BaseException) -> None:
        _warn("record the model's graph", err, ", but nothing will be published")

    def _on_sample(self, watcher: Watcher, changed: list[str]) -> None:
        sample = watcher.last_sample
        self._watch = {"every_ms": watcher.every * 1000, "synced": watcher.synced}
        self._watch.update(watcher.rates())
        self._write({k: dict(sample[k]) for k in changed})

    def _on_shared(self, stats: dict[str, dict[str, Any]]) -> None:
        """Reduced intermediates (every rank gets them; rank 0 writes them)."""
        if self.rank != 0 or self.watcher is None:
            return
        scale = self.watcher.rates().get("scale")
        if scale:  # GradScaler's scale as the last parameter sample saw it
            for s in stats.values():
                unscale(s, scale)
        self._op_lints = _lint.nonfinite(stats, None, False)
        self._write(stats)

    def _write(self, stats: dict[str, dict[str, Any]]) -> None:
        watcher = self.watcher
        assert watcher is not None
        watch = dict(self._watch)
        shared = self.shared
        if shared is not None:
            watch.update(
                op_samples=shared.samples,
                op_hz=shared.rate,
                local_intermediates=False,
                reduced_ranks=shared.world_size,
            )
        record_ = {
            "samples": watcher.samples,
            "time": time.time(),
            "step": self.steps,
            "stats": stats,
            "lints": list(watcher.lints) + self._op_lints,
            "watch": watch,
            "optimizer": watcher.optimizer_info(),
        }
        self._pump.put(lf.SAMPLE, record_, droppable=True)

    def log(self, loss: Any = None, **metrics: Any) -> None:
        """Record this step's loss (a scalar tensor or number) and any other scalars.

        On rank 0 only (other ranks return at once, with no collective): the loss shown
        is rank 0's. Pass an all-reduced loss to show the job's mean. A tensor is kept as
        is and read by the writer thread, so the training thread does not wait for it.
        """
        if self.path is None or self.closed:
            return
        row: dict[str, Any] = {}
        for key, value in (("loss", loss), *metrics.items()):
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    scalar(value, key)  # raises, naming what is accepted
                row[key] = value.detach()
            else:
                row[key] = scalar(value, key)
        row["step"] = self.steps
        if self.watcher is not None:  # the lr the optimizer last stepped with (a schedule's)
            row["lr"] = self.watcher.optimizer_info()["lr"]
        self._pump.put_row(row)

    # ---- the end ---------------------------------------------------------------------------
    def close(self, error: BaseException | str | None = None) -> None:
        """Publish the last step, write the end record and stop (idempotent)."""
        if self.closed:
            return
        atexit.unregister(self._at_exit)
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._rec is not None:
            self._rec.__exit__(None, None, None)
            self._rec = None
        if self.shared is not None:
            self.shared.remove()
        watcher = self.watcher
        if watcher is not None:
            try:
                if error is None:
                    watcher.end_run()
            finally:
                watcher.remove()
        self.closed = True
        text = None if error is None else _error_text(error)
        end = {"state": "finished" if error is None else "failed", "error": text}
        samples = watcher.samples if watcher is not None else 0
        self._pump.close({**end, "steps": self.steps, "samples": samples})

    def _at_exit(self) -> None:
        # The interpreter is exiting without close(): after an uncaught exception, say so.
        exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
        self.close(exc)

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(exc)

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "heartbeat only"
        state = "closed" if self.closed else "publishing"
        who = f"rank {self.rank}/{self.world_size}"
        return f"<gradwidget.Publication {self.job} {who}: {state}, {where}>"


def _warn(what: str, err: BaseException, more: str) -> None:
    warnings.warn(
        f"gradwidget could not {what} ({type(err).__name__}: {err}); training is not "
        f"affected{more}.",
        RuntimeWarning,
        stacklevel=4,
    )


def _error_text(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}".strip()
    return str(error)


def publish(
    model: torch.nn.Module,
    logdir: str | os.PathLike,
    *,
    every: float = DEFAULT_EVERY,
    max_overhead: float = DEFAULT_MAX_OVERHEAD,
    lint: LintConfig | None = None,
    local_stats: bool = False,
    job: str | None = None,
    intermediates: str = "reduced",
) -> Publication:
    """Publish a training job's gradients to ``logdir`` for :func:`gradwidget.attach`.

    Every rank of the job calls it, after ``init_process_group`` (when there is one), with
    the model it trains; rank 0 writes the log. The graph is recorded from the model's
    first forward; then parameter gradients are sampled at the optimizer step like a
    widget's ``watch()``, without any collective (see :mod:`gradwidget._publish`).

    Parameters
    ----------
    model : nn.Module
        The trained module, DDP-wrapped or not (not sharded).
    logdir : path
        Directory of the log (created if missing); one file per job.
    every : float
        Minimum seconds between two parameter samples (default 0.2); 0: every step.
    max_overhead : float
        Share of the training time sampling may take (default 0.03).
    lint : LintConfig, optional
    local_stats : bool
        Every rank writes its own statistics to a log of its own as well
        (``attach(logdir, rank=r)``); default: only rank 0 writes.
    job : str, optional
        The job's name (default: time and rank 0's process id, agreed by broadcast).
    intermediates : {"reduced", "local"}
        With several ranks, the intermediates' statistics are those of every rank's
        gradient together (default: the same forwards hooked on every rank, reduced on a
        process group of its own; see :mod:`gradwidget._shared`), or rank 0's own.

    Returns
    -------
    Publication
        ``log(loss=...)`` records the loss; ``close()`` ends it (also a context manager:
        ``with gw.publish(model, "runs/") as pub:``). An exception leaving the block is
        recorded as this rank's failure.
    """
    return Publication(
        model,
        logdir,
        every=every,
        max_overhead=max_overhead,
        lint=lint,
        local_stats=local_stats,
        job=job,
        intermediates=intermediates,
    )
