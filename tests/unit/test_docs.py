"""The docs kept true: the README's two commands and journey, the pipeline picture, links, commands, generated facts.

The README's mermaid block must be what `dvc dag --mermaid` prints for dvc.yaml now; every relative link in
README.md, CONTRIBUTING.md and docs/*.md must reach a file (and a heading, when it names one); every `visionops` and
`./run.sh` line in their bash blocks must parse with the real command line; docs/facts.py must render regions from the
pipeline's files, refuse files dvc.lock does not record, and leave the committed-source regions up to date.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import REPO
from typer.testing import CliRunner

from visionops.cli import app

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^ *```(?P<lang>[\w-]*)\n(?P<body>.*?)^ *```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)|<img [^>]*src=\"(?P<src>[^\"]+)\"")
JOURNEY = [
    "./run.sh up",
    "./run.sh deploy",
    *2
    * [
        "./run.sh prefect deployment run training-pipeline/local --watch --params "
        """'{"overrides": ["train.finetune.epochs=3"]}'"""
    ],
    "./run.sh status",
]
# run.sh's commands: the labels of its `case "$cmd"` (each `  name) ...` or `  a | b) ...` line).
RUN_SH = {
    name.strip()
    for label in re.findall(r"^  ([a-z| ]+)\)", (REPO / "run.sh").read_text().split('case "$cmd"')[1], re.M)
    for name in label.split("|")
}
COMMAND_LINE = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?P<tool>visionops|\./run\.sh)(?:\s|$)")


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text: (language, body)."""
    return [(m["lang"], m["body"]) for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and blank lines dropped."""
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in body.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", doc.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            base = slug(m[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_readme_first_code_block_holds_the_two_commands_ci_runs() -> None:
    _, body = blocks((REPO / "README.md").read_text())[0]
    assert commands(body)[:2] == ["./run.sh pipeline", "./run.sh test"]
    assert "./run.sh test" in (REPO / ".ci/run").read_text(), "the README's test command is what CI runs"


def test_readme_journey_block_is_what_the_journey_test_runs() -> None:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- journey: prefect [^\n]*-->\n```bash\n(.*?)\n```", text, re.S)
    assert block, "tests/e2e/test_journey.py needs the marker comment right before the ```bash block"
    assert commands(block[1]) == JOURNEY


def test_readme_pipeline_picture_is_dvc_dag() -> None:
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "dag", "--mermaid"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pictures = [body for lang, body in blocks((REPO / "README.md").read_text()) if lang == "mermaid"]
    assert pictures == [proc.stdout.strip() + "\n"], "refresh it: .venv/bin/python docs/facts.py"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_a_file_and_heading(doc: Path) -> None:
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", doc.read_text()))  # links inside code are not links
    broken = []
    for m in LINK.finditer(text):
        target = m["target"] or m["src"]
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(REPO)}")
    assert broken == []


PASS_THROUGH = {("stack", "prefect"), ("stack", "deploy")}  # their arguments go to prefect itself


def parse_error(argv: list[str]) -> str | None:
    """Why ``visionops ARGV`` would not parse (an unknown command or option), or None.

    Nothing runs: ``-h`` is added, which Click handles after parsing every argument, before the command's code.
    """
    if tuple(argv[:2]) in PASS_THROUGH:
        argv = argv[:1]
    result = CliRunner().invoke(app, [*argv, "-h"])
    return None if result.exit_code == 0 else result.output.strip()[-300:]


def test_visionops_and_run_sh_lines_in_the_docs_parse() -> None:
    checked, wrong = 0, []
    for doc in DOCS:
        for lang, body in blocks(doc.read_text()):
            if lang not in {"bash", "sh"}:
                continue
            for line in commands(body):
                if not (m := COMMAND_LINE.match(line)):
                    continue
                argv = shlex.split(line[m.start("tool") :])
                where = f"{doc.relative_to(REPO)}: {line}"
                checked += 1
                if m["tool"] == "./run.sh":
                    sub = argv[1] if len(argv) > 1 else ""
                    extra = {a.split("=")[0] for a in argv[2:] if a.startswith("--")} - {"--gpu", "--cpu", "--with"}
                    if sub not in RUN_SH or (sub == "setup" and extra):
                        wrong.append(where)
                    continue
                if error := parse_error(argv[1:]):
                    wrong.append(f"{where}: {error}")
    assert wrong == []
    assert checked >= 20, "the docs' command lines were not found"


# --------------------------------------------------------------------------------------------------- docs/facts.py
@pytest.fixture(scope="module")
def facts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("facts", REPO / "docs" / "facts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["facts"] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def _split_json(root: Path, train: int, val: int, test: int) -> None:
    counts = {"train": {"cat": train - 1, "dog": 1}, "val": {"cat": val}, "test": {"cat": 1, "dog": test - 1}}
    totals = {side: sum(c.values()) for side, c in counts.items()}
    info = {"classes": ["cat", "dog"], "counts": counts, "totals": totals, "sha256": {}, "split_id": "ab" * 32}
    path = root / "artifacts/split/split.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))


def _record_in_dvc_lock(root: Path, rel: str) -> str:
    md5 = hashlib.md5((root / rel).read_bytes()).hexdigest()
    lock = {"schema": "2.0", "stages": {"split": {"cmd": "visionops split", "outs": [{"path": rel, "md5": md5}]}}}
    (root / "dvc.lock").write_text(json.dumps(lock))  # (JSON is YAML)
    return md5


def test_facts_fills_a_region_from_the_split_dvc_lock_records(facts: ModuleType, tmp_path: Path) -> None:
    _split_json(tmp_path, train=5, val=1, test=2)
    md5 = _record_in_dvc_lock(tmp_path, "artifacts/split/split.json")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n<!-- fact:sample-split -->\nold numbers\n<!-- /fact -->\n\n"
        "<!-- fact:test-metrics -->\nnot yet\n<!-- /fact -->\n"
    )
    root = ["--root", str(tmp_path)]

    assert facts.main(["--check", *root]) == 1, "a stale region fails --check"
    assert "old numbers" in readme.read_text(), "--check changes nothing"
    assert facts.main(root) == 0
    text = readme.read_text()
    assert "**5 train / 1 val / 2 test** images (8 in all, 2 classes, split_id `abababababab`)" in text
    assert f"`artifacts/split/split.json` (md5 `{md5[:8]}`)" in text
    assert "<!-- fact:test-metrics -->\nnot yet\n<!-- /fact -->" in text, "a region without sources is left alone"
    assert facts.main(["--check", *root]) == 0

    _split_json(tmp_path, train=9, val=1, test=2)  # a split run by hand: not what dvc.lock records
    report = facts.update(tmp_path)
    assert "**5 train / 1 val / 2 test**" in readme.read_text()
    assert any("is not the file dvc.lock records" in line for line in report.unfilled)


def test_facts_refuses_an_unknown_region(facts: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("<!-- fact:nonsense -->\n<!-- /fact -->\n")
    assert facts.main(["--root", str(tmp_path)]) == 1


def test_facts_from_committed_sources_are_up_to_date(facts: ModuleType) -> None:
    only = tuple(
        name for name in facts.COMMITTED if name != "dag"
    )  # (the dag: test_readme_pipeline_picture_is_dvc_dag)
    report = facts.update(REPO, check=True, only=only)
    assert report.unfilled == []
    assert report.changed == [], "run .venv/bin/python docs/facts.py and commit the docs"
    assert len(report.current) >= len(only)


def test_facts_renders_test_metrics_and_epochs(facts: ModuleType, tmp_path: Path) -> None:
    metrics = {"accuracy": 0.784, "macro_f1": 0.7784, "top_2_accuracy": 0.98, "roc_auc_ovr": 0.97, "ece": 0.07}
    (tmp_path / "artifacts/evaluate").mkdir(parents=True)
    (tmp_path / "artifacts/train").mkdir(parents=True)
    (tmp_path / "artifacts/evaluate/metrics.json").write_text(json.dumps({**metrics, "examples": 176}))
    (tmp_path / "artifacts/train/history.csv").write_text("epoch,stage,loss\n0,1,1.3\n1,2,1.1\n2,2,0.9\n3,2,0.8\n")
    outs = [
        {"path": rel, "md5": hashlib.md5((tmp_path / rel).read_bytes()).hexdigest()}
        for rel in ("artifacts/evaluate/metrics.json", "artifacts/train/history.csv")
    ]
    (tmp_path / "dvc.lock").write_text(json.dumps({"stages": {"evaluate": {"outs": outs}}}))
    text = facts.RENDERERS["test-metrics"](tmp_path)
    assert text.startswith(
        "Test accuracy **0.78**, macro-F1 **0.78**, top-2 accuracy 0.98, one-vs-rest ROC-AUC 0.97, ECE 0.07 "
        "on 176 test images, after 1 + 3 epochs (head + fine-tuning).\n"
    )
    assert "`artifacts/train/history.csv`" in text


def test_facts_renders_training_throughput(facts: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "benchmarks/results"
    results.mkdir(parents=True)
    (results / "training_throughput.csv").write_text(
        "dataset,images,size,pipeline,images_per_s,ratio_vs_baseline,model,batch,steps,epochs,cores,machine,date\n"
        "embedded sample,320,128,baseline: in-memory,25.04,1.0,EfficientNetB0,32,10,3,2,x86_64,2026-12-01\n"
        "embedded sample,320,128,visionops Batches,24.1,0.962,EfficientNetB0,32,10,3,2,x86_64,2026-12-01\n"
    )
    text = facts.RENDERERS["bench-training"](tmp_path)
    assert text.startswith("EfficientNetB0, every layer training from random weights, on `embedded sample`: 10 steps")
    assert "| 128 px | visionops Batches | 24.1 | 0.96 |" in text
    assert "measured 2026-12-01 on 2 cores (x86_64)" in text


def _scaling_csvs(root: Path, sizes: tuple[int, ...]) -> None:
    """A scaling benchmark's two CSVs: decode 0.5 s and validate 0.6 s per 1k files, only the memory cache grows."""
    stamp = "500x375,2,x86_64,2026-12-01"
    lines = [
        "stage,files,seconds,cpu_s,peak_rss_mb,ratio_vs_decode,slope_s_per_1k,r2,rss_mb_per_1k,photo,cores,machine,date"
    ]
    for stage, slope, rss in (
        ("raw decode (baseline)", 0.5, 0.0),
        ("validate", 0.6, 0.1),
        ("cache fill (memory)", 1, 9),
    ):
        fitted = f"{slope},1.0,{rss}" if len(sizes) > 1 else ",,"
        for n in sizes:
            ratio = (0.6 * n / 1000 + 1) / (0.5 * n / 1000 + 1) if stage == "validate" else 1
            seconds = slope * n / 1000 + 1
            lines.append(f"{stage},{n},{seconds},{seconds * 1.5},{100 + rss * n / 1000},{ratio},{fitted},{stamp}")
    results = root / "benchmarks/results"
    results.mkdir(parents=True)
    (results / "scaling.csv").write_text("\n".join(lines) + "\n")
    switch = ["image_size,switch_files,memory_available_gib,cores,machine,date", "48,1198499,20.3,2,x86_64,2026-12-01"]
    (results / "scaling_cache_switch.csv").write_text("\n".join(switch) + "\n")


def test_facts_renders_the_scaling_benchmark(facts: ModuleType, tmp_path: Path) -> None:
    _scaling_csvs(tmp_path, (1000, 10000))
    table = facts.RENDERERS["bench-scaling"](tmp_path)
    assert "| validate | 1.6 s | 7.0 s | 0.60 | 1.000 | 100 / 101 | 0.1 |" in table
    assert "validate took **1.07 / 1.17** × the raw decode's time" in table and "CPU time 1.07 / 1.17 ×)" in table
    assert "**1.20** × its cost per 1,000 more files" in table
    assert "up to **1,198,499** at 48 px (half of the 20.3 GiB available" in table
    assert "](img/scaling.png)" in table and "`benchmarks/results/scaling_cache_switch.csv`" in table
    summary = facts.RENDERERS["bench-scaling-summary"](tmp_path)
    assert summary.startswith("Cost of 1,000 more photo-sized images: raw decode (baseline) 0.50 s, validate 0.60 s")
    assert "grows by 9.0 MB per 1,000 images in cache fill (memory), by at most 0.1 MB in any other stage" in summary
    assert "](docs/img/scaling.png)" in summary


def test_facts_scaling_summary_needs_several_sizes(facts: ModuleType, tmp_path: Path) -> None:
    _scaling_csvs(tmp_path, (1000,))
    assert "| validate | 1.6 s | – | – |" in facts.RENDERERS["bench-scaling"](tmp_path)
    with pytest.raises(facts.Missing, match="one size only"):
        facts.RENDERERS["bench-scaling-summary"](tmp_path)
