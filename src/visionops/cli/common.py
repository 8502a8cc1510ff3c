"""What every command shares: the app, its options, turning errors into exit codes, printing results or JSON.

Commands only parse their options, call one function of the package and print what it returns (as text, or as
JSON with ``--json``). Heavy libraries (TensorFlow, MLflow) are imported inside the commands, so ``visionops
--help`` and the commands that do not need them start in well under a second.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from visionops import __version__
from visionops.errors import EXIT_INTERNAL, UserError
from visionops.files import DiskFullError

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 a user error (the message says what to fix); 2 a usage error; 3 a server is unavailable "
    "(tracking server, registry, local stack); 4 an internal error (a bug: the traceback is printed); 130/143 stopped "
    "by Ctrl-C/SIGTERM."
)
app = typer.Typer(
    help="Fine-tune EfficientNet on DVC-versioned image folders: validate, split, train, evaluate, promote, predict, "
    "export; the MLflow UI and the local stack.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True)
out = Console()
# With --json, stdout holds the JSON alone: libraries' prints (Keras progress bars, MLflow's run links) are sent to
# stderr while the command runs, and the JSON goes to the stdout saved here.
_json_stdout: contextvars.ContextVar[Any] = contextvars.ContextVar("json_stdout", default=None)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
DataOpt = Annotated[Path, typer.Option("--data", help="Class-per-folder image root: data/<label>/<image>.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
SplitOpt = Annotated[Path, typer.Option("--split", help="The split stage's output folder.")]
ArtifactsOpt = Annotated[Path, typer.Option("--artifacts", help="Folder holding the stages' outputs.")]
ModelOpt = Annotated[
    str,
    typer.Option("--model", help="model.keras, the train stage's folder, or an MLflow URI: models:/NAME@champion."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout, for scripts.")]


def _version(value: bool) -> None:
    if value:
        print(f"visionops {__version__}")
        raise typer.Exit()


@app.callback()
def _setup(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Show the package's own log lines (resume notices, weight fallbacks) on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("visionops")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        logger.addHandler(handler)


def command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body, turning each kind of failure into one message and its exit code (see EXIT_CODES_HELP).

    A user error (bad input, a missing file) is one red line without a traceback: exit 1, or 3 when a server is
    unavailable. Anything else is a bug: its traceback, then exit 4.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _json_stdout.set(sys.stdout) if kwargs.get("as_json") else None
        quiet = contextlib.redirect_stdout(sys.stderr) if token else contextlib.nullcontext()
        try:
            with quiet:
                return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (UserError, FileNotFoundError, FileExistsError) as exc:  # (escaped: messages name classes in [...])
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            if isinstance(exc, DiskFullError):
                _exit_now_if_hdf5_is_open(getattr(exc, "exit_code", 1))
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None
        except OSError as exc:  # permissions, a full disk, a path through a file: the OS names the path
            hint = "Check that this user can write there and the disk has room."
            err.print(f"[bold red]error:[/] {escape(str(exc))}. {hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: show it whole, with its own exit code
            traceback.print_exc()
            err.print(f"[bold red]internal error:[/] {escape(repr(exc))} (a bug: please report it with the traceback)")
            raise typer.Exit(EXIT_INTERNAL) from None
        finally:
            if token:
                _json_stdout.reset(token)

    return wrapper


def _exit_now_if_hdf5_is_open(code: int) -> None:
    """Exit at once, without the interpreter's cleanup, when HDF5 files are open after a full disk.

    HDF5 keeps a weights file it failed to write (Keras' per-epoch backup) open; at the interpreter's exit h5py
    flushes it, fails again on the full disk and crashed the process (SIGSEGV, after two tracebacks), turning the
    one-line error into a crash. Nothing is lost by skipping that cleanup: every output is written atomically, the
    MLflow run is already marked FAILED, and the torn backup is the one the rerun replaces.
    """
    if "h5py" not in sys.modules:
        return
    import h5py

    if h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def writable(folder: Path) -> Path:
    """Create ``folder`` and prove this user can write in it, before a stage spends minutes on work it cannot save.

    Raises:
        UserError: the folder cannot be created or written; the message names it and says how to fix it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}. Make it writable for this user "
            "(or remove what blocks it), or choose another folder with --out."
        ) from None
    return folder


def jsonable(value: Any) -> Any:
    """A stage's result as plain JSON values: dataclasses as objects, tables as lists of rows, paths as strings."""
    import numpy as np
    import pandas as pd

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, pd.DataFrame):
        return jsonable(value.to_dict("records"))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def emit(result: Any, as_json: bool, lines: Callable[[], list[str]], warnings: list[str] | None = None) -> None:
    """Print a command's result: ``lines()`` for people, or the result as JSON; warnings go to stderr either way."""
    for warning in warnings or []:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(jsonable(result), indent=1, sort_keys=True), file=_json_stdout.get() or sys.stdout)
        return
    for line in lines():
        out.print(line, highlight=False, soft_wrap=True)


def ui_link(uri: str, experiment_id: str = "", run_id: str = "", *, model: str = "") -> str:
    """A run's or a registered model's page in the MLflow UI, and how to serve it when runs are in the own store."""
    from visionops.tracking import links

    ui = links.ui_url(uri)
    url = links.model_url(ui, model) if model else links.run_url(ui, experiment_id, run_id)
    return url if uri.startswith(("http://", "https://")) else f"{url} (served by ./run.sh ui or ./run.sh up)"
