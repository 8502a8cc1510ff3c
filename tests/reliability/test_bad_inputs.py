"""The bad-input corpus: every kind of broken file, folder, manifest or params value a user can hand the pipeline.

Everything is generated here at test time (tests/corpus.py makes the image bytes); nothing binary is committed.
Each kind is one test id, ``test_bad_input[<kind>]``, and asserts its specific outcome: either a quarantine entry
naming the file and the reason, or the project's error naming the file or key and the fix. Around every kind,
a hash of data/ (paths, bytes, symlink targets) is taken before and after: nothing may be deleted, moved or
rewritten. File kinds share one validate run (a run costs ~2 s); every other kind runs on its own project.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from corpus import BAD_KINDS, MORE_KINDS, good_class, good_jpeg, tree_hash, write
from helpers import cli, run

from visionops.config import ConfigError, SplitParams, ValidateParams
from visionops.errors import UserError
from visionops.files import PathEscapeError
from visionops.params import load_params
from visionops.stages.split import SplitError, split
from visionops.stages.validate import ValidationFailed, validate

PARAMS = ValidateParams(min_images_per_class=3, min_side=16)
# Kinds the fixture below makes itself (links, non-UTF-8 names, copies): manifest path → status, reason code.
LINKED_KINDS: dict[str, tuple[str, str, str | None]] = {
    "symlink_file_outside": ("cat/link_out.jpg", "quarantined", "symlink_outside_data"),
    "symlink_folder_outside": ("dog/linked_folder/", "quarantined", "symlink_outside_data"),
    "symlink_class_folder_outside": ("zebra/", "quarantined", "symlink_outside_data"),
    "symlink_inside_data": ("cat/link_in.jpg", "ok", None),
    "broken_symlink": ("cat/dangling.jpg", "quarantined", "broken_symlink"),
    "non_utf8_name": ("cat/caf\\xe9.jpg", "quarantined", "bad_filename"),
    "duplicate_two_labels": ("dog/copy_of_cat.jpg", "quarantined", "label_conflict"),
}
FILE_KINDS = {k: (v[0], v[2], v[3]) for k, v in {**BAD_KINDS, **MORE_KINDS}.items()} | LINKED_KINDS


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, str, str]:
    """Every file kind in one data/ beside two healthy classes, validated once: (out dir, manifest, hashes)."""
    base = tmp_path_factory.mktemp("bad-files")
    root = base / "data"
    good_class(root, "cat", 6)
    good_class(root, "dog", 6)
    for rel, make, _, _ in [*BAD_KINDS.values(), *MORE_KINDS.values()]:
        write(root, rel, make())
    secret = write(base, "outside/secret.jpg", good_jpeg(99))
    os.symlink(secret, root / "cat" / "link_out.jpg")
    os.symlink(base / "outside", root / "dog" / "linked_folder")
    os.symlink(base / "outside", root / "zebra")
    os.symlink(root / "cat" / "img_001.jpg", root / "cat" / "link_in.jpg")
    os.symlink(root / "cat" / "gone.jpg", root / "cat" / "dangling.jpg")
    (root / "cat" / os.fsdecode(b"caf\xe9.jpg")).write_bytes(good_jpeg(98))  # Latin-1 'é': not UTF-8
    write(root, "dog/copy_of_cat.jpg", (root / "cat" / "img_000.jpg").read_bytes())
    before = tree_hash(root)
    report = validate(root, PARAMS, base / "out", workers=2)
    return base / "out", report.manifest, before, tree_hash(root)


def _check_file_kind(corpus_run: tuple, kind: str) -> None:
    out, manifest, before, after = corpus_run
    assert before == after, "validate changed data/"
    path, status, code = FILE_KINDS[kind]
    rows = manifest[manifest["path"] == path]
    assert len(rows) == 1, f"{path} not in the manifest"
    row = rows.iloc[0]
    assert row["status"] == status, row.to_dict()
    quarantined = set(pd.read_csv(out / "quarantine.csv", keep_default_na=False)["path"])
    assert (path in quarantined) == (status == "quarantined")
    if code:
        assert row["reason"].startswith(code) and len(row["reason"]) > len(code) + 20, row["reason"]
    if kind in ("upper_case_ext", "mixed_case_ext"):
        assert pd.isna(row["note"]), "case of the extension alone is not a mismatch"
    if kind == "duplicate_two_labels":
        assert "cat, dog" in row["reason"] and "keep one copy" in row["reason"]


@dataclass(frozen=True)
class Case:
    """A kind that must stop with an error: prepare the project, act through an entry point, match the message."""

    setup: Callable[[Path], object]
    act: Callable[[Path], object]
    error: type[BaseException]
    fragments: tuple[str, ...]  # the file or key, and the fix


def _params(text: str) -> Callable[[Path], object]:
    return lambda project: (project / "params.yaml").write_text(text)


def _manifest(path: str, label: str) -> Callable[[Path], object]:
    def setup(project: Path) -> None:
        rows = pd.DataFrame(
            [
                {"path": "cat/img_000.jpg", "label": "cat", "sha256": "a" * 64, "status": "ok"},
                {"path": path, "label": label, "sha256": "b" * 64, "status": "ok"},
            ]
        )
        write(project, "artifacts/validate/manifest.csv", rows.to_csv(index=False).encode())

    return setup


def _load(project: Path) -> object:
    return load_params(project / "params.yaml")


def _augment(project: Path) -> object:
    from visionops.data.augment import build_augment

    return build_augment(_load(project).augment, "classification", seed=0)


def _backbone(project: Path) -> object:
    from visionops.training.weights import build_backbone  # (TensorFlow: imported only by the kind that needs it)

    return build_backbone(_load(project).train)


def _validate(project: Path) -> object:
    return validate(project / "data", PARAMS, project / "artifacts" / "validate", workers=1)


def _split(project: Path) -> object:
    manifest = project / "artifacts/validate/manifest.csv"
    return split(manifest, SplitParams(), project / "artifacts/split", data_dir=project / "data")


def _cli(*args: str) -> Callable[[Path], object]:
    """Run the real command line; a user error must exit 1 with its message and no traceback."""

    def act(project: Path) -> None:
        proc = run(cli(*args), cwd=project, check=False, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        raise UserError(proc.stderr)

    return act


def _drop_images(label: str, keep: int) -> Callable[[Path], object]:
    return lambda project: [p.unlink() for p in sorted((project / "data" / label).iterdir())[keep:]]


NO_CHANGE: Callable[[Path], object] = lambda project: None  # noqa: E731
FIX = "Fix the key(s) above in"
CASES: dict[str, Case] = {
    "params_unknown_top_key": Case(
        _params("valdate: {}\n"), _load, ConfigError, ("valdate: unknown key", "Did you mean 'validate'?", FIX)
    ),
    "params_unknown_nested_key": Case(
        _params("train: {head: {epoch: 3}}\n"),
        _load,
        ConfigError,
        ("train.head.epoch: unknown key", "Did you mean 'epochs'?"),
    ),
    "params_test_ratio_zero": Case(
        _params("split: {test_ratio: 0}\n"), _load, ConfigError, ("split.test_ratio", "greater than 0", FIX)
    ),
    "params_test_ratio_negative": Case(
        _params("split: {test_ratio: -0.1}\n"), _load, ConfigError, ("split.test_ratio", "greater than 0", "-0.1")
    ),
    "params_test_ratio_one": Case(
        _params("split: {test_ratio: 1.0}\n"), _load, ConfigError, ("split.test_ratio", "less than 1")
    ),
    "params_ratios_leave_no_train": Case(
        _params("split: {test_ratio: 0.9, val_ratio: 0.9}\n"),
        _load,
        ConfigError,
        ("split:", "less than 5% of the images for training"),
    ),
    "params_image_size_not_multiple": Case(
        _params("train: {image_size: 225}\n"),
        _load,
        ConfigError,
        ("train.image_size", "not a multiple of 4", "use 224 or 228"),
    ),
    "params_image_size_too_small": Case(
        _params("train: {image_size: 16}\n"), _load, ConfigError, ("train.image_size", "greater than or equal to 32")
    ),
    "params_unknown_variant": Case(
        _params("train: {model: EfficientNetB9}\n"),
        _load,
        ConfigError,
        ("train.model", "'EfficientNetV2S'", "Did you mean 'EfficientNetB"),
    ),
    "params_wrong_type": Case(
        _params("train: {batch_size: big}\n"), _load, ConfigError, ("train.batch_size", "valid integer", "'big'")
    ),
    "params_section_not_mapping": Case(
        _params("split: [0.2, 0.1]\n"), _load, ConfigError, ("split:", "valid dictionary", FIX)
    ),
    "params_not_a_mapping": Case(
        _params("- validate\n- split\n"), _load, ConfigError, ("params.yaml", "expected a mapping of sections")
    ),
    "params_invalid_yaml": Case(
        _params("split:\n  test_ratio: [0.2\n"),
        _load,
        ConfigError,
        ("params.yaml: not valid YAML", "line 2, column 15", "Fix the file at the line"),
    ),
    "params_duplicate_key": Case(
        _params("split:\n  test_ratio: 0.2\n  test_ratio: 0.3\n"),
        _load,
        ConfigError,
        ("key 'test_ratio' is given twice", "line 3", "keep one"),
    ),
    "params_tab_indent": Case(
        _params("split:\n\ttest_ratio: 0.2\n"), _load, ConfigError, ("params.yaml: not valid YAML", "line 2")
    ),
    "params_class_with_dotdot": Case(
        _params("validate: {classes: ['../secrets', cat]}\n"),
        _load,
        ConfigError,
        ("validate.classes", "'../secrets' is not a folder name", "plain names"),
    ),
    "params_class_with_slash": Case(
        _params("validate: {classes: [cat/kitten, dog]}\n"),
        _load,
        ConfigError,
        ("validate.classes", "'cat/kitten' is not a folder name"),
    ),
    "params_weights_dotdot": Case(
        _params("train: {weights: ../../models/b0.h5}\n"),
        _load,
        ConfigError,
        ("train.weights", "climbs out of the project", "absolute path"),
    ),
    "params_holdout_dotdot": Case(
        _params("evaluate: {holdout_dir: data/../../elsewhere}\n"),
        _load,
        ConfigError,
        ("evaluate.holdout_dir", "climbs out of the project"),
    ),
    "params_weights_missing_file": Case(
        _params("train: {weights: models/nope.h5, image_size: 32}\n"),
        _backbone,
        ConfigError,
        ("train.weights", "'models/nope.h5' does not exist", "null"),
    ),
    "params_missing_file": Case(
        lambda p: (p / "params.yaml").unlink(), _load, ConfigError, ("params.yaml: not found", "--params PATH")
    ),
    "augment_unknown_name": Case(
        _params("augment: [{name: HorizontalFlp}]\n"),
        _augment,
        ConfigError,
        ("augment[0].name", "'HorizontalFlp'", "Did you mean HorizontalFlip"),
    ),
    "augment_v1_argument": Case(
        _params("augment: [{name: GaussNoise, var_limit: [10, 50]}]\n"),
        _augment,
        ConfigError,
        ("augment[0] (GaussNoise)", "var_limit", "1.x names are not accepted"),
    ),
    "augment_not_a_list": Case(
        _params("augment: {name: HorizontalFlip}\n"), _load, ConfigError, ("augment", "valid list")
    ),
    "data_missing": Case(
        lambda p: os.rename(p / "data", p / "data_moved"),
        _validate,
        FileNotFoundError,
        ("data/ not found", "dvc pull", "sample-data"),
    ),
    "data_empty": Case(
        lambda p: (p / "empty").mkdir(),
        lambda p: validate(p / "empty", PARAMS, p / "out", workers=1),
        ValidationFailed,
        ("fewer than 2 classes", "add class folders data/<class>/"),
    ),
    "class_too_few_images": Case(
        _drop_images("dog", 1),
        _validate,
        ValidationFailed,
        ("class 'dog' has 1 usable image", "validate.min_images_per_class=3", "add images to data/dog/"),
    ),
    "single_class": Case(
        lambda p: os.rename(p / "data" / "dog", p / "dog_moved"), _validate, ValidationFailed, ("fewer than 2 classes",)
    ),
    "manifest_dotdot_path": Case(
        _manifest("cat/../../etc/passwd", "cat"),
        _split,
        PathEscapeError,
        ("manifest.csv row 2 (path)", "'cat/../../etc/passwd' leads outside", "copy the file into"),
    ),
    "manifest_absolute_path": Case(
        _manifest("/etc/passwd", "cat"),
        _split,
        PathEscapeError,
        ("manifest.csv row 2 (path)", "'/etc/passwd' leads outside"),
    ),
    "manifest_label_with_dotdot": Case(
        _manifest("cat/img_001.jpg", "../cat"),
        _split,
        SplitError,
        ("manifest.csv row 2", "label '../cat'", "re-run `visionops validate`"),
    ),
    "cli_params_typo": Case(
        _params("split: {test_ratoi: 0.3}\n"),
        _cli("split"),
        UserError,
        ("error:", "split.test_ratoi: unknown key", "Did you mean 'test_ratio'?"),
    ),
    "cli_invalid_yaml": Case(
        _params("split: {test_ratio: 0.2\n"),
        _cli("split"),
        UserError,
        ("error:", "params.yaml: not valid YAML", "line 2"),
    ),
    "cli_manifest_dotdot": Case(
        _manifest("cat/../../../etc/hosts", "cat"),
        _cli("split"),
        UserError,
        ("error:", "row 2 (path)", "leads outside data/"),
    ),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small healthy project: two classes of three images and a valid params.yaml."""
    root = tmp_path / "project"
    good_class(root / "data", "cat", 3)
    good_class(root / "data", "dog", 3)
    (root / "params.yaml").write_text("split: {test_ratio: 0.2}\n")
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root


def _check_error_kind(project: Path, case: Case) -> None:
    case.setup(project)
    data = project / "data" if (project / "data").exists() else project / "data_moved"
    before = tree_hash(data)
    with pytest.raises(case.error) as info:
        case.act(project)
    message = str(info.value)
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert tree_hash(data) == before, "data/ changed"


@pytest.mark.parametrize("kind", sorted(FILE_KINDS) + sorted(CASES))
def test_bad_input(kind: str, request: pytest.FixtureRequest) -> None:
    if kind in FILE_KINDS:
        _check_file_kind(request.getfixturevalue("corpus_run"), kind)
    else:
        _check_error_kind(request.getfixturevalue("project"), CASES[kind])


def test_corpus_is_large_and_distinct() -> None:
    assert len(FILE_KINDS) + len(CASES) >= 30
    assert not set(FILE_KINDS) & set(CASES)
