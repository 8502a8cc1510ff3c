"""The Great Expectations 1.x suites that decide what is usable data.

Two suites run over DataFrames built from the manifest:

* ``files``: one row per image. Every failed row is quarantined with the reason of each expectation it failed,
  taken from GE's ``unexpected_index_list``: GE is the judge, not a decoration.
* ``classes``: one row per class. Any failure there is a dataset-level problem that stops the stage.

Both results are rendered as Data Docs HTML into the folder the caller names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from visionops.config import ValidateParams


@dataclass(frozen=True)
class Failure:
    """One failed expectation: its code, the explanation template, and the key values (paths or labels) that failed."""

    code: str
    message: str
    keys: frozenset[str]


def files_suite(p: ValidateParams, classes: list[str]) -> list[gxe.Expectation]:
    """Row-level expectations over the file table; ``meta`` carries the quarantine code and its explanation."""

    def m(code: str, message: str) -> dict:
        return {"code": code, "message": message}

    return [
        gxe.ExpectColumnValuesToBeNull(column="error", meta=m("unusable", "{error}")),
        gxe.ExpectColumnValuesToBeBetween(
            column="pixels",
            max_value=p.max_pixels,
            meta=m("too_many_pixels", f"{{width}}x{{height}} exceeds validate.max_pixels={p.max_pixels}; not decoded"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="format",
            value_set=list(p.allowed_formats),
            meta=m(
                "format_not_allowed", f"format {{format}} is not in validate.allowed_formats={list(p.allowed_formats)}"
            ),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="min_side",
            min_value=p.min_side,
            meta=m("too_small", f"{{width}}x{{height}} has a side under validate.min_side={p.min_side}"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="channels",
            value_set=list(p.channels),
            meta=m(
                "channels_not_allowed",
                f"{{channels}} channel(s) ({{mode}}) not in validate.channels={list(p.channels)}",
            ),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="label",
            value_set=classes,
            meta=m("unknown_label", f"folder '{{label}}' is not in validate.classes={classes}"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="labels_for_content",
            max_value=1,
            meta=m(
                "label_conflict", "the same content is filed under several labels ({labels_of_content}); keep one copy"
            ),
        ),
    ]


def classes_suite(p: ValidateParams, classes: list[str]) -> list[gxe.Expectation]:
    """Dataset-level expectations over the per-class table (label, images, imbalance)."""
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=2,
            meta={
                "code": "too_few_classes",
                "message": "fewer than 2 classes have usable images: add class folders data/<class>/ with images",
            },
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="images",
            min_value=p.min_images_per_class,
            meta={
                "code": "too_few_images",
                "message": "class '{label}' has {images} usable image(s), fewer than "
                f"validate.min_images_per_class={p.min_images_per_class}: add images to data/{{label}}/ or "
                "lower the threshold in params.yaml",
            },
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="imbalance",
            max_value=p.max_imbalance_ratio,
            meta={
                "code": "imbalanced",
                "message": "class '{label}' has {images} images, the largest class "
                f"{{imbalance:.1f}}x as many (validate.max_imbalance_ratio={p.max_imbalance_ratio}): add images "
                "to it or raise the ratio",
            },
        ),
    ]


def run_suites(tables: dict[str, tuple[pd.DataFrame, str, list[gxe.Expectation]]], docs_dir: Path) -> dict:
    """Run each named suite over its table in one ephemeral GE context and build Data Docs into ``docs_dir``.

    Args:
        tables: suite name → (DataFrame, key column, expectations).
        docs_dir: where the Data Docs site (index.html) is written.

    Returns:
        suite name → {"success": bool, "failures": [Failure, ...], "evaluated": int}.
    """
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="validate",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(Path(docs_dir).resolve()),
            },
        },
    )
    source = context.data_sources.add_pandas("manifest")
    outcome = {}
    for name, (frame, key, expectations) in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}_checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["validate"])],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key]},
            )
        )
        result = next(iter(checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()))
        failures = []
        for item in result.results:
            if item.success:
                continue
            keys = frozenset(str(row[key]) for row in item.result.get("unexpected_index_list") or [])
            meta = item.expectation_config.meta if item.expectation_config else {}
            failures.append(Failure(meta["code"], meta["message"], keys))
        outcome[name] = {"success": bool(result.success), "failures": failures, "evaluated": len(result.results)}
    return outcome
