"""IPython extension: the ``%%train WIDGET [--steps N] [--seed S]`` cell magic.

The cell body is the user's own training loop. It runs once, synchronously, when the cell
runs; changing the widget's learning rate, optimizer or schedule reruns it from the same
starting point (see ``_train.py``). The body finds ``opt`` (a fresh optimizer), ``lr`` and,
with a schedule, ``sched`` in the namespace.
"""

from __future__ import annotations

import argparse
import itertools
import linecache
import shlex
from typing import Any

from IPython.core.magic import Magics, cell_magic, magics_class

_cells = itertools.count(1)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # raise instead of sys.exit
        usage = self.format_usage().strip().removeprefix("usage: ")
        raise ValueError(f"%%train: {message}. Usage: {usage}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%%train", add_help=False)
    p.add_argument("widget", help="the GradWidget (a name or expression)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    return p


@magics_class
class TrainMagics(Magics):
    """Holds the ``%%train`` cell magic."""

    @cell_magic
    def train(self, line: str, cell: str) -> None:
        """Run the cell as a training loop bound to a GradWidget.

        ``%%train w [--steps N] [--seed S]``: runs the body now (``opt``, ``lr`` and, with a
        schedule, ``sched`` are defined for it; iterate ``for step in w.steps():`` and call
        ``w.log(loss=loss)``). Later changes of ``w.lr``/``w.optimizer``/``w.schedule``
        rerun it from the same starting weights without blocking the kernel.
        """
        __tracebackhide__ = True
        from ._widget import GradWidget

        args = _parser().parse_args(shlex.split(line))
        ns = self.shell.user_ns
        try:
            widget = eval(args.widget, ns)
        except Exception as exc:
            raise NameError(f"%%train: cannot find the widget {args.widget!r}: {exc}") from None
        if not isinstance(widget, GradWidget):
            raise TypeError(
                f"%%train needs a GradWidget; {args.widget!r} is a {type(widget).__name__}."
            )
        if args.steps is not None and args.steps < 1:
            raise ValueError("%%train: --steps must be at least 1.")
        source = self.shell.transform_cell(cell)
        # A named, cached source so tracebacks of reruns show the cell's lines.
        filename = f"<%%train cell {next(_cells)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        code = compile(source, filename, "exec")

        def body(opt: Any, sched: Any, lr: float) -> None:
            __tracebackhide__ = True
            ns["opt"], ns["lr"] = opt, lr
            if sched is not None:
                ns["sched"] = sched
            else:
                ns.pop("sched", None)
            exec(code, ns)

        widget.bind_training(body, steps=args.steps, seed=args.seed)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gradwidget``: register ``%%train``."""
    ipython.register_magics(TrainMagics)
