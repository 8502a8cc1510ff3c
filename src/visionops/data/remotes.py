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


def _object_key(md5: str) -> str:
    """Where a DVC 3 remote keeps the object ``md5``, relative to its root."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def _not_in_cache(root: Path, dir_md5: str) -> list[tuple[str, str]]:
    """The files (path in data/, md5) of the data listing ``dir_md5`` whose objects are not in the DVC cache after a
    pull. Empty when the listing itself is not there (nothing came: the remote is unreachable or lacks the data) or the
    cache holds everything (the failure was another)."""
    import json

    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        cache = repo.cache.local
        listing = Path(cache.oid_to_path(dir_md5))
        if not listing.is_file():
            return []
        entries = json.loads(listing.read_text())
        return [(e["relpath"], e["md5"]) for e in entries if not Path(cache.oid_to_path(e["md5"])).is_file()]


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
        missing = _not_in_cache(root, out["md5"])
        if missing:
            shown = ", ".join(f"{path} ({md5})" for path, md5 in missing[:5])
            shown += f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            objects = " ".join(_object_key(md5) for md5 in (out["md5"], *(md5 for _, md5 in missing[:5])))
            raise DataUnavailable(
                f"dvc pull did not check out data {out['md5']}: {len(missing)} of its files are not in the DVC cache: "
                f"{shown}. If DVC's message above names no connection or transfer error, the remote "
                f"({remote or 'the default'}) holds damaged copies of them: DVC refused them, their md5 does not match "
                f"(remote `verify = true`). To repair it, delete from the remote these objects and the listing of "
                f"data/: {objects}; then `dvc push data.dvc` from a machine whose DVC cache holds them intact (a push "
                "skips every file of a listing the remote already holds, damaged or not), and pull again."
            )
        raise DataUnavailable(
            f"data.dvc names data {out['md5']} ({out.get('nfiles', '?')} files) that the default DVC remote does not "
            "hold (DVC's message is above). Run `dvc push` on the machine that has this data/, or make the remote "
            "that holds it the default: `dvc remote default NAME` (see `dvc remote list`)."
        )
    return remote or "default"
