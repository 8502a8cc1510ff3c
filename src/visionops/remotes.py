"""Restore data/ on a fresh clone or worker: from the default DVC remote, else from the embedded sample's remote.

Two remotes are configured in ``.dvc/config``: the default, ``local`` (``~/.local/share/visionops/dvc-remote``,
outside every working tree, shared by all clones on the machine, so a Prefect worker's temporary clone finds what
an earlier run pushed), and ``sample`` (the in-repo ``dvc-remote/``, read-only in spirit: it holds the embedded
sample so that a fresh clone works offline). Pushes go to the default; the sample is only ever pulled.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from visionops.errors import UserError

SAMPLE_REMOTE = "sample"


class DataUnavailable(UserError):
    """data.dvc names data that no configured remote holds; the message says where to push it from."""


def in_sample(root: Path) -> bool:
    """Whether the data ``data.dvc`` names is the embedded sample (its directory object is in the sample remote).

    A local file check: the sample remote is a folder of the repository, so this needs no network.
    """
    from dvc.config import Config

    remote = Config(dvc_dir=str(Path(root) / ".dvc")).get("remote", {}).get(SAMPLE_REMOTE, {}).get("url")
    md5 = _data_out(root)["md5"]
    return bool(remote) and (Path(remote) / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def _data_out(root: Path) -> dict:
    return yaml.safe_load((Path(root) / "data.dvc").read_text())["outs"][0]


def pull_data(root: Path, if_absent: bool = False) -> str:
    """Check out the data that ``data.dvc`` names: the sample from the in-repo remote, anything else from the default.

    DVC's own progress and errors go to the terminal (or the Prefect logs).

    Args:
        root: the project checkout.
        if_absent: do nothing when ``data/`` exists (``./run.sh pipeline``: a user's own data is never replaced).

    Returns:
        Where the data came from: ``"present"``, ``"sample"`` or ``"default"``.

    Raises:
        DataUnavailable: the pull failed; the message names the data's hash and what to do.
    """
    root = Path(root)
    if if_absent and (root / "data").exists():
        return "present"
    remote = SAMPLE_REMOTE if in_sample(root) else None
    dvc = Path(sys.executable).parent / "dvc"  # this environment's, whatever PATH says
    if subprocess.run([str(dvc), "pull", *(["-r", remote] if remote else []), "data.dvc"], cwd=root).returncode:
        out = _data_out(root)
        raise DataUnavailable(
            f"data.dvc names data {out['md5']} ({out.get('nfiles', '?')} files) that the default DVC remote does not "
            "hold (DVC's message is above). Run `dvc push` on the machine that has this data/, or make the remote "
            "that holds it the default: `dvc remote default NAME` (see `dvc remote list`)."
        )
    return remote or "default"
