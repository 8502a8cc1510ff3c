"""The files stages hand each other, as types: each read and written here only, so a name or a key is spelled once.

| type or function | file | written by | read by |
|---|---|---|---|
| :func:`write_manifest` / :func:`read_manifest` | ``validate/manifest.csv`` | validate | split |
| :class:`SplitInfo`, :func:`read_split` | ``split/split.json``, ``train.csv``, ``val.csv``, ``test.csv`` | split |
  train, evaluate |
| :class:`ModelInfo` | ``train/classes.json`` (and :func:`model_file`) | train | evaluate, promote, predict, serving |
| :class:`WeightsUsed` | ``train/weights.json`` | train | promote (model card), tracking |
| :class:`RunInfo` | ``train/run.json`` | train | evaluate, promote, ``log-run``, the Prefect flow |
| :func:`write_resolved` / :func:`read_resolved` | ``<stage>/params.json`` | every stage | promote (model card) |
| :class:`TestMetrics` | ``evaluate/metrics.json``, ``scored.json`` | evaluate | promote, tracking, the Prefect flow |
| :func:`write_per_class` / :func:`read_per_class` | ``evaluate/per_class.csv`` | evaluate | promote (model card) |
| :class:`Promotion` | ``promote/decision.json`` | promote | the Prefect flow, the model card |

tests/unit/test_architecture.py fails when any other module spells one of these names. Model interfaces, checked
where a model meets data or another model, are :mod:`visionops.interfaces`.
"""
