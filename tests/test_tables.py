"""Issue 14: tables that fit the terminal without cutting names, and progress lines without a terminal.

`bench list encoders` and `bench results` at 80 and 100 columns: no line wider than the terminal, no name cut
(every word of every task, encoder and reducer label is there whole; `virchow` and `virchow2` are two rows),
the numbers people compare are kept and what is left out is named; `--wide` prints everything. The reducer
label names a gene-set file, not its path. Without a terminal, a run prints one line per sample and per fold
with the rate and the time left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from stbench.cli import cli

GENE_SETS = "/home/someone/projects/shared/data/genesets/h.all.v7.0.symbols.gmt"


def _bench(*args: str, columns: int, tmp_path: Path) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HOME": str(tmp_path / "hf"), "STBENCH_HOME": str(tmp_path / "home"),
           "STBENCH_CONFIG": str(tmp_path / "none.toml")}
    env.pop("TERM", None)
    out = subprocess.run([sys.executable, "-m", "stbench.cli", *args], capture_output=True, text=True, env=env,
                         check=True)
    return out.stdout


def _fits(text: str, width: int) -> None:
    wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not wide, f"{len(wide)} lines wider than {width}: {wide[:3]}"
    assert "…" not in text and "..." not in text


# -- bench list encoders -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("columns", [80, 100])
def test_list_encoders_fits_without_cutting_names(columns: int, tmp_path: Path) -> None:
    from stbench.encoders import encoders, list_encoders

    text = _bench("list", "encoders", columns=columns, tmp_path=tmp_path)
    _fits(text, columns)
    lines = text.splitlines()
    header = next(line for line in lines if " gated " in f" {line} " and line.startswith("name"))
    at = header.index("gated")
    # the `bench` child sees what is installed, not the test encoders other tests register in this process
    specs = {e.spec.name: e.spec for e in list_encoders() if not encoders.origin(e.spec.name).startswith("tests")}
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in specs}
    assert set(rows) == set(specs), set(specs) - set(rows)  # every encoder, by its whole name
    assert rows["virchow"] != rows["virchow2"]
    for name, line in rows.items():  # gated ones say so, in the gated column
        assert line[at:at + 5].strip() == ("yes" if specs[name].gated else "no"), (name, line)
    assert {"uni2-h", "hoptimus1", "h0-mini", "phikon-v2", "hibou-l", "kaiko-vitb8", "midnight", "gpfm",
            "conch-v1.5", "virchow-cls", "virchow2-cls"} <= set(rows)
    assert "--wide" in text  # what is not shown, and how to see it


def test_list_encoders_wide_shows_every_column(tmp_path: Path) -> None:
    text = _bench("list", "encoders", "--wide", columns=80, tmp_path=tmp_path)
    for column in ("aliases", "weights", "code", "licence", "origin", "fingerprint"):
        assert column in text.split("─")[0], column
    assert "hf.co/paige-ai/Virchow2 (gated)" in text  # a weights source, whole, though wider than 80 columns
    assert "not shown" not in text


# -- bench results ---------------------------------------------------------------------------------------------------
def _summary_rows():  # noqa: ANN202 - a polars DataFrame with Catalog.summary's schema
    """A HEST-sized grid's summary rows: long task names, random-weight and imported encoders, a booster with a
    gene-set path and another with a non-default option, two protocols."""
    import datetime

    import polars as pl

    from stbench.stores import Catalog

    with Catalog(Path(os.environ["STBENCH_STORE"]) / "catalog.duckdb") as cat:
        schema = cat.summary().schema
    gp = {"gene_sets": GENE_SETS}
    cells = [
        ("LYMPH_IDC", "virchow2", "hub:paige-ai/Virchow2@abc", "bpbooster-gp", gp, "hest", 0.2559, 0.0761),
        ("LYMPH_IDC", "virchow2", "hub:paige-ai/Virchow2@abc", "bpbooster-gp", gp, "cv", 0.2581, 0.0843),
        ("HER2ST", "resnet50", "random:seed1-timm1.0.20-torch2.14.1", "bpbooster-random",
         {"attention": "literal"}, "cv", 0.3689, 0.2053),
        ("HER2ST", "uni", "imported:sha256:0123456789abcdef", "pca", {}, "hest", 0.1719, 0.0442),
        ("CCRCC", "efficientnet-lite0", "package:efficientnet-lite0", "identity", {}, "hest", 0.0588, 0.0404),
        ("READ", "virchow", "hub:paige-ai/Virchow@abc", "pca", {}, "cv", 0.3516, 0.1526),
    ]
    rows = []
    for i, (task, enc, fp, red, opts, alpha, mean, std) in enumerate(cells):
        rows.append({"run_id": f"run{i:02d}" + "f" * 30, "task": task, "synthetic": False, "encoder": enc,
                     "weights_fingerprint": fp, "reducer": red, "reducer_options": json.dumps(opts),
                     "solver": "lsqr", "alpha_rule": alpha, "gene_rule": "task", "seed": 1,
                     "protocol_fingerprint": f"proto-{alpha}", "status": "complete", "folds": 2,
                     "pcc_mean": mean, "pcc_std": std, "mse_mean": 0.55 + i / 100, "mse_baseline": 0.486,
                     "n_nan": 0, "alpha_mean": 1e-3, "stbench_version": "0.1.0",
                     "finished_at": datetime.datetime(2026, 1, 1)})
    return pl.DataFrame(rows, schema=schema)


@pytest.fixture
def results_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """An (empty) store whose catalog summary answers with `_summary_rows`; a console made at the given width."""
    from stbench.cli import _console
    from stbench.stores import Catalog

    monkeypatch.setenv("STBENCH_STORE", str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    rows = _summary_rows()
    monkeypatch.setattr(Catalog, "summary", lambda self, **kw: rows)

    def invoke(*args: str, columns: int) -> str:
        monkeypatch.setenv("COLUMNS", str(columns))
        _console.console.cache_clear()  # the console reads COLUMNS when it is made
        try:
            r = CliRunner().invoke(cli, ["results", *args], catch_exceptions=False)
        finally:
            _console.console.cache_clear()
        assert r.exit_code == 0, r.output
        return r.output

    return rows, invoke


def _labels(rows) -> list[str]:  # noqa: ANN001
    return [*rows["task"], "virchow2", "resnet50 (random weights)", "uni (imported)", "efficientnet-lite0", "virchow",
            "bpbooster-gp gene_sets=h.all.v7.0.symbols.gmt", "bpbooster-random attention=literal", "pca", "identity"]


@pytest.mark.parametrize("columns", [80, 100])
def test_results_fit_without_cutting_names(columns: int, results_store) -> None:  # noqa: ANN001
    rows, invoke = results_store
    text = invoke(columns=columns)
    _fits(text, columns)
    words = set(text.replace("│", " ").split())
    for label in _labels(rows):  # names wrap between words, never inside one
        assert set(label.split()) <= words, (label, text)
    for mean, std in zip(rows["pcc_mean"], rows["pcc_std"], strict=True):  # the compared numbers are always there
        assert f"{mean:.4f} ± {std:.4f}" in text
    assert "hest" in text and "cv" in text  # the protocol that differs between rows
    marks = {w for w in words if w.startswith("†")}  # a word too long for its column is written out below
    notes = {line.split()[0]: line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("†")}
    assert marks == set(notes) and all(" " not in word for word in notes.values())
    assert "h.all.v7.0.symbols.gmt" in text and "/home/someone" not in text  # the gene sets' name, not path


def test_results_keep_more_columns_when_there_is_room(results_store) -> None:  # noqa: ANN001
    _, invoke = results_store
    narrow, wide = invoke(columns=80), invoke(columns=100)
    assert "not shown at this width" in narrow  # and which columns
    header = lambda text: next(line for line in text.splitlines() if line.startswith("task"))  # noqa: E731
    assert len(header(wide).split()) > len(header(narrow).split())


def test_results_wide_prints_every_column(results_store) -> None:  # noqa: ANN001
    rows, invoke = results_store
    text = invoke("--wide", columns=80)
    for column in rows.columns:
        assert column in text, column
    assert rows["run_id"][0] in text and GENE_SETS in text  # nothing cut: the stored options as they are


# -- the reducer label in the run summary and in results ------------------------------------------------------
def test_reducer_label_shows_the_gene_set_name_not_its_path() -> None:
    from stbench.cli.run import _reducer_text

    result = SimpleNamespace(reducer="bpbooster-gp", task="LUNG", encoder="uni",
                             reducer_options=json.dumps({"gene_sets": GENE_SETS, "attention": "literal"}))
    label = _reducer_text(result)
    assert label == "bpbooster-gp attention=literal gene_sets=h.all.v7.0.symbols.gmt"
    result.reducer_options = json.dumps({"gene_sets": "hallmark"})  # the default: no label
    assert _reducer_text(result) == "bpbooster-gp"


# -- progress without a terminal ---------------------------------------------------------------------------------------
def test_log_progress_prints_a_line_per_step_with_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from rich.console import Console

    from stbench.cli._console import LogProgress, make_progress

    clock = iter([0.0, 0.0, 10.0, 30.0, 31.0, 40.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    out = StringIO()
    with LogProgress(Console(file=out, width=200)) as progress:
        step = progress.add_task("uni · LUNG embeddings", total=4, log="steps", unit="sample")  # t=0
        items = progress.add_task("S0", total=100, log="items", unit="patches")  # t=0
        progress.advance(items, 100)  # items print nothing by themselves
        progress.remove_task(items)  # t=10: 100 patches in 10 s, told with the step's line
        progress.advance(step)  # t=30: 1 of 4 in 30 s
        progress.advance(step, 3)  # t=31: done, no ETA
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [("uni · LUNG embeddings: 1/4 samples in 30.0 s (30.0 s/sample); S0: 100 patches in 10.0 s "
                      "(10.0 patches/s); ETA 1 min 30 s"),
                     "uni · LUNG embeddings: 4/4 samples in 31.0 s (7.8 s/sample)"]
    assert isinstance(make_progress(enabled=False, log=True), LogProgress)
    assert not isinstance(make_progress(enabled=False, log=False), LogProgress)  # --no-progress: silent


def test_run_without_a_terminal_logs_samples_and_folds(tmp_path: Path) -> None:
    """`bench run` in a pipe (no --progress flag): a line per embedded sample and per fitted fold."""
    from tests._tiny import make_tiny_task

    make_tiny_task(tmp_path / "data", "TINY", n_samples=3, n_spots=12)
    env = {"STBENCH_DATA_ROOT": str(tmp_path / "data"), "STBENCH_STORE": str(tmp_path / "store")}
    r = CliRunner().invoke(cli, ["run", "--task", "tiny", "--reducer", "pca", "--threads", "1"], env=env)
    assert r.exit_code == 0, r.output
    err = r.stderr
    samples = [line for line in err.splitlines() if "TINY embeddings:" in line]
    folds = [line for line in err.splitlines() if "TINY · pca folds:" in line]
    assert [s.split("embeddings: ")[1].split(" ")[0] for s in samples] == ["1/3", "2/3", "3/3"], err
    assert [f.split("folds: ")[1].split(" ")[0] for f in folds] == ["1/3", "2/3", "3/3"], err
    assert all("/sample)" in s and "patches/s" in s for s in samples)
    assert "ETA" in samples[0] and "ETA" in folds[0] and "ETA" not in samples[-1]
