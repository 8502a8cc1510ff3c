"""Command line: one command per stage (dvc.yaml, the Prefect flow and people all call these), the registry, the
MLflow UI and the local stack. ``visionops -h`` lists them; the exit codes are in :mod:`visionops.errors`.
"""

import atexit
import os
import sys
import threading

from visionops.cli import pipeline, servers  # noqa: F401 - registers the commands (in this order, for -h)
from visionops.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """The ``visionops`` program: :data:`app`, then, once TensorFlow was loaded, an exit without module teardown.

    After a training, the interpreter's teardown of TensorFlow's modules took 5.4 s of the train stage on 2 cores
    (2026-12-02; 1.3 s of it a garbage collection), time that `dvc repro` and every Prefect run waited for with
    nothing left to do. Only that teardown is skipped: what the interpreter runs first at exit runs here too, in
    its order (other threads joined, then the atexit handlers: logging flushed, temporary folders removed), and
    every output was already written and closed by the command (atomically). Tests that call :data:`app`
    in-process are not affected.
    """
    try:
        app()  # (click's standalone mode: it always ends in SystemExit)
    except SystemExit as done:
        if "tensorflow" not in sys.modules or not isinstance(done.code, int | None):
            raise
        code = done.code or 0
    threading._shutdown()  # type: ignore[attr-defined]  # (private: the interpreter's own first step at exit)
    atexit._run_exitfuncs()  # (its second)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
