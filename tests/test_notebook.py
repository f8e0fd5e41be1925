"""Execute docs/examples/quickstart.ipynb in a real Jupyter kernel and check its outputs.

The kernel runs the interpreter that runs the tests (a kernelspec pointing at
``sys.executable`` is written to a temporary ``JUPYTER_PATH``), with ``src/`` on
``PYTHONPATH`` so that ``fastparallel`` imports from this checkout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"


def _install_kernelspec(tmp_path: Path) -> Path:
    """A ``python3`` kernelspec that starts ``sys.executable``; returns the JUPYTER_PATH dir."""
    jupyter_dir = tmp_path / "jupyter"
    spec_dir = jupyter_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return jupyter_dir


def _text(output: dict) -> str:
    """The text of a stream, display or result output."""
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    data = output.get("data", {})
    return str(data.get("text/plain", ""))


def _cell(nb, tag: str):
    for cell in nb.cells:
        if tag in cell.get("metadata", {}).get("tags", []):
            return cell
    raise AssertionError(f"no cell tagged {tag!r} in {NOTEBOOK.name}")


def _cell_text(nb, tag: str) -> str:
    return "".join(_text(o) for o in _cell(nb, tag).get("outputs", []))


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], "commit the notebook without outputs"
            assert cell.execution_count is None


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("nb")
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("JUPYTER_PATH", str(_install_kernelspec(tmp_path)))
        pythonpath = os.environ.get("PYTHONPATH")
        src = str(ROOT / "src")
        mp.setenv("PYTHONPATH", src if not pythonpath else os.pathsep.join([src, pythonpath]))
        # Progress output must take the notebook path, not the log-file path.
        mp.delenv("CI", raising=False)
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(
            nb,
            kernel_name="python3",
            timeout=240,
            allow_errors=False,
            resources={"metadata": {"path": str(ROOT)}},
        )
        client.execute()
    finally:
        mp.undo()
    return nb


@pytest.mark.timeout(300)
def test_notebook_runs_in_the_test_interpreter(executed):
    # The kernel printed from the same fastparallel checkout and got a CPU count.
    text = _cell_text(executed, "setup")
    assert "CPUs this process may use:" in text
    assert int(text.split(":")[1].split()[0]) >= 1


@pytest.mark.timeout(300)
def test_no_error_outputs(executed):
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            if output.get("output_type") == "stream":
                assert "Traceback" not in output.get("text", ""), output


@pytest.mark.timeout(300)
def test_progress_bar_renders_as_html(executed):
    outputs = _cell(executed, "progress").get("outputs", [])
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<progress" in h for h in html), outputs
    text = _cell_text(executed, "progress")
    assert "items: 50000" in text
    assert "longest chain below 50,001: 323 steps, starting at 35655" in text


@pytest.mark.timeout(300)
def test_lambdas_closures_and_notebook_classes(executed):
    text = _cell_text(executed, "lambdas")
    assert "lambda: [0, 1, 4, 9, 16, 25, 36, 49]" in text
    assert "closure: [101, 102, 103]" in text
    text = _cell_text(executed, "classes")
    assert "norms: [5.0, 10.0, 13.0]" in text
    assert "scaled: [Point(x=30, y=40), Point(x=60, y=80), Point(x=50, y=120)]" in text


@pytest.mark.timeout(300)
def test_threads_for_io(executed):
    text = _cell_text(executed, "threads")
    assert "same results: True" in text
    assert "threads at least 3x faster: True" in text


@pytest.mark.timeout(300)
def test_errors_and_streaming(executed):
    text = _cell_text(executed, "errors")
    assert "failed items: [2]" in text
    assert "invalid literal for int()" in text
    text = _cell_text(executed, "raise")
    assert "caught ValueError: invalid literal for int() with base 10: 'three'" in text
    assert "item 2" in text
    text = _cell_text(executed, "stream")
    assert "first start with a chain longer than 200 steps: 2463" in text


@pytest.mark.timeout(300)
def test_a_model_loaded_once_per_worker(executed):
    text = _cell_text(executed, "per_worker")
    assert "scores: [1, -2, 4, -1]" in text
    assert (
        "one model per worker process: True" in text
    )  # each worker built it at most once, both calls
    assert "a model loaded in the notebook's process: False" in text


@pytest.mark.timeout(300)
def test_a_stuck_item_fails_alone(executed):
    text = _cell_text(executed, "item_timeout")
    assert "results: [0, 1, 4, 16, 25, 36, 49]" in text
    assert "item 3: ItemTimeoutError - fastparallel: 2 attempts were made" in text


@pytest.mark.timeout(300)
def test_advice_renders_as_an_html_table(executed):
    outputs = _cell(executed, "advise").get("outputs", [])
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 1, outputs
    assert "<table>" in html[0] and all(
        f"<td>{mode}</td>" in html[0] for mode in ("serial", "threads", "processes")
    )
    assert "Recommended: " in html[0]
    text = _cell_text(executed, "advise")
    assert any(f"recommended: {mode}" in text for mode in ("serial", "threads", "processes")), text
    assert "Advice(recommended=" in text  # the plain-text form beside the HTML


@pytest.mark.timeout(300)
def test_threadpool_auto_says_what_it_chose(executed):
    outputs = _cell(executed, "auto").get("outputs", [])
    html = "".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    assert "auto: " in html and "items take" in html, outputs
    assert "same results as before: True" in _cell_text(executed, "auto")


@pytest.mark.timeout(300)
def test_bar_renders_without_matplotlib(tmp_path, monkeypatch):
    # fastprogress 1.0.x imports matplotlib when it finds a notebook and, without it, warns
    # that bars "will use console behavior"; fastparallel's bar is HTML all the same, and
    # the warning (wrong for fastparallel's bar) does not reach the notebook.
    monkeypatch.setenv("JUPYTER_PATH", str(_install_kernelspec(tmp_path)))
    pythonpath = os.environ.get("PYTHONPATH")
    src = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", src if not pythonpath else os.pathsep.join([src, pythonpath]))
    monkeypatch.delenv("CI", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import sys\nsys.modules['matplotlib'] = None"),
        nbformat.v4.new_code_cell(
            "from fastparallel import parallel\n"
            "print(sum(parallel(abs, range(-50, 50), threadpool=True, progress=True)))"
        ),
    ]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=240).execute()
    outputs = nb.cells[1].outputs
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<progress" in h for h in html), outputs
    assert "2500" in "".join(_text(o) for o in outputs)
    stderr = [o for o in outputs if o.get("output_type") == "stream" and o["name"] == "stderr"]
    assert stderr == [], stderr
