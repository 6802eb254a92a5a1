"""examples/quickstart.ipynb runs top to bottom without errors.

The notebook is executed with nbclient in a "python3" kernel that runs the
interpreter of this test process: a kernelspec pointing at sys.executable is
installed into a temporary prefix that comes first on JUPYTER_PATH, and an
extra cell (appended in memory only) checks the kernel's sys.executable.
The kernel finds nnlayers where this process found it (an installed copy,
or a source checkout built in place).
"""

import os
import site
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
NOTEBOOK = os.path.join(EXAMPLES, "quickstart.ipynb")

if ROOT not in sys.path:   # plain `pytest` does not put the checkout on sys.path
    sys.path.append(ROOT)
import nnlayers  # noqa: E402


def _kernel_env(monkeypatch, tmp_path):
    from ipykernel.kernelspec import install

    install(kernel_name="python3", display_name="Python 3 (test)", prefix=str(tmp_path))
    jupyter_path = [str(tmp_path / "share" / "jupyter")]
    if os.environ.get("JUPYTER_PATH"):
        jupyter_path.append(os.environ["JUPYTER_PATH"])
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(jupyter_path))
    # the folder this process imported nnlayers from
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(nnlayers.__file__)))
    if pkg_parent not in map(os.path.abspath, site.getsitepackages()):
        python_path = [pkg_parent] + ([os.environ["PYTHONPATH"]]
                                      if os.environ.get("PYTHONPATH") else [])
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(python_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def test_notebook_outputs_are_cleared():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_quickstart_notebook_executes(monkeypatch, tmp_path):
    _kernel_env(monkeypatch, tmp_path)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, os, nnlayers\n"
        "print(os.path.realpath(sys.executable))\n"
        "print(os.path.realpath(nnlayers.__file__))"))

    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": EXAMPLES}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"quickstart.ipynb failed:\n{e}")

    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors

    check = "".join(out.get("text", "") for out in nb.cells[-1].outputs)
    kernel_python, kernel_nnlayers = check.split()[:2]
    assert kernel_python == os.path.realpath(sys.executable)
    assert kernel_nnlayers == os.path.realpath(nnlayers.__file__)

    # the plots were drawn (inline PNGs) and training reported its epochs
    pngs = sum("image/png" in out.get("data", {}) for cell in nb.cells[:n_cells]
               if cell.cell_type == "code" for out in cell.outputs)
    assert pngs >= 3, f"expected the data, loss-curve and boundary figures, got {pngs} images"
    text = "".join(out.get("text", "") for cell in nb.cells[:n_cells]
                   if cell.cell_type == "code" for out in cell.outputs)
    assert "Epoch 30/30" in text
    assert "GradcheckResult(ok=True" in text
    html = [out["data"]["text/html"] for cell in nb.cells[:n_cells] if cell.cell_type == "code"
            for out in cell.outputs if "text/html" in out.get("data", {})]
    assert any("Total params" in h for h in html), "the model's HTML view is not shown"


@pytest.mark.parametrize("widgets", [False, True], ids=["no_ipywidgets", "ipywidgets"])
def test_fit_progress_in_a_kernel(widgets, monkeypatch, tmp_path):
    """fit(verbose=1) in Jupyter: a widget bar with ipywidgets, else the
    text bar, and never tqdm's "IProgress not found" warning."""
    if widgets:
        pytest.importorskip("ipywidgets")
    _kernel_env(monkeypatch, tmp_path)
    hide = "" if widgets else "sys.modules['ipywidgets'] = None  # a kernel without it\n"
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys\n" + hide + "import warnings\nwarnings.simplefilter('always')\n"
        "import numpy as np, nnlayers as nl\n"
        "m = nl.Sequential(nl.Linear(2, 2))\n"
        "h = m.fit(np.zeros((8, 2), np.float32), np.zeros(8, np.int64), epochs=2, "
        "batch_size=4, verbose=1)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120)
    client.execute()
    outputs = nb.cells[0].outputs
    text = "".join(out.get("text", "") for out in outputs)
    assert "IProgress" not in text and "Warning" not in text, text
    assert not [out for out in outputs if out.output_type == "error"]
    widget_views = [out for out in outputs
                    if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    if widgets:
        assert len(widget_views) == 2, outputs   # one bar per epoch
    else:
        assert not widget_views and "Epoch 2/2" in text and "8.00/8.00" in text, text
