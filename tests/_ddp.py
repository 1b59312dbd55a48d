"""Run a function on a few gloo ranks on 127.0.0.1, for tests (not a test module itself).

    from _ddp import run_ranks

    def body(rank, world_size, scale):      # module level: the spawned ranks import it
        ...                                  # the process group is already initialized
        return {"norm": 0.3}                 # anything picklable

    results = run_ranks(body, 2.0, world_size=2, timeout=60)   # [rank 0's, rank 1's]

Each rank is a fresh process (``torch.multiprocessing`` spawn context), single-threaded
(``torch.set_num_threads(1)``), with ``torch.distributed`` initialized for the gloo backend
on a free port of 127.0.0.1 before ``fn(rank, world_size, *args, **kwargs)`` is called, and
the process group destroyed after it returns. The call returns the ranks' return values in
rank order. If a rank raises, :class:`RankError` carries its traceback; if the ranks have not
all answered within ``timeout`` seconds (a hang in a collective, a deadlock), every rank still
running is terminated (then killed) and :class:`RankTimeout` says which ranks answered. No
process outlives the call.

``fn`` must be importable by the spawned processes: define it at module level in a test
module or a helper module on ``sys.path`` (spawn passes the parent's ``sys.path``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import socket
import sys
import time
import traceback
import types

__all__ = ["RankError", "RankTimeout", "free_port", "run_ranks"]


class RankError(RuntimeError):
    """A rank raised; the message holds its rank and traceback."""


class RankTimeout(TimeoutError):
    """The ranks did not all answer within the time bound (stragglers were killed)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world_size, port, timeout, fn, args, kwargs, results) -> None:
    try:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=str(rank),
        )
        if "GLOO_SOCKET_IFNAME" not in os.environ and os.path.exists("/sys/class/net/lo"):
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo on the loopback device, no network
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=max(timeout, 1.0)),
        )
        try:
            value = fn(rank, world_size, *args, **kwargs)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, value))
    except BaseException:  # everything goes back to the parent
        results.put((rank, False, traceback.format_exc()))


def _collect(results, answers: dict, world_size: int, grace: float) -> None:
    """After a failure, wait ``grace`` seconds for the other ranks' answers.

    A rank that raises first makes its peers fail too ("Connection closed by peer"), and
    those answers may arrive first: collecting them all lets the report lead with the cause.
    """
    end = time.monotonic() + max(grace, 0.0)
    while len(answers) < world_size and time.monotonic() < end:
        try:
            rank, ok, value = results.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            break
        answers[rank] = (ok, value)


def _failures(answers: dict) -> str:
    """Failed ranks, the ones whose error is not a lost peer first, with their tracebacks."""
    failed = sorted(
        (r for r, (ok, _) in answers.items() if not ok),
        key=lambda r: ("closed by peer" in answers[r][1] or "Connection reset" in answers[r][1], r),
    )
    head = "; ".join(f"rank {r}: {answers[r][1].strip().splitlines()[-1]}" for r in failed)
    body = "\n".join(f"--- rank {r} ---\n{answers[r][1]}" for r in failed)
    return f"{head}\n{body}"


def _stop(procs, grace: float = 2.0) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5.0)


@contextlib.contextmanager
def _plain_main():
    """A ``__main__`` that spawn can read while the ranks start.

    IPython's InteractiveShell (the magic and notebook tests make one) leaves a ``__main__``
    with no ``__spec__``, and spawn's start-up reads it ("module has no attribute __spec__").
    """
    main = sys.modules.get("__main__")
    if main is None or hasattr(main, "__spec__"):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def run_ranks(fn, *args, world_size: int = 2, timeout: float = 60.0, **kwargs) -> list:
    """``fn(rank, world_size, *args, **kwargs)`` on ``world_size`` gloo ranks; their results.

    ``timeout`` bounds the whole call in seconds (spawning each rank and importing torch take
    a few seconds of it). Raises :class:`RankError` when a rank raises and
    :class:`RankTimeout` when the ranks have not all answered in time.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(rank, world_size, port, timeout, fn, args, kwargs, results),
            daemon=True,
            name=f"gloo-rank-{rank}",
        )
        for rank in range(world_size)
    ]
    deadline = time.monotonic() + timeout
    answers: dict[int, tuple[bool, object]] = {}
    finished = False
    try:
        with _plain_main():
            for p in procs:
                p.start()
        while len(answers) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RankTimeout(
                    f"{world_size} gloo ranks did not finish within {timeout:g} s "
                    f"(answered: {sorted(answers) or 'none'}; stragglers killed)"
                )
            try:
                rank, ok, value = results.get(timeout=min(left, 0.5))
            except queue.Empty:
                dead = [
                    p.name for r, p in enumerate(procs) if r not in answers and not p.is_alive()
                ]
                if dead and results.empty():
                    # Give a result the dead rank put just before exiting a moment to arrive.
                    time.sleep(0.2)
                    if results.empty():
                        raise RankError(f"{', '.join(dead)} exited without a result") from None
                continue
            answers[rank] = (ok, value)
            if not ok:
                _collect(results, answers, world_size, min(2.0, deadline - time.monotonic()))
                raise RankError(_failures(answers))
        finished = True
        return [answers[r][1] for r in range(world_size)]
    finally:
        if finished:  # every rank answered: let them exit by themselves (briefly)
            for p in procs:
                p.join(max(0.0, min(5.0, deadline - time.monotonic())))
        _stop(procs)  # stragglers: terminate, then kill
        results.close()
        results.join_thread()
