"""Docstring examples run (numpydoc Examples sections), and generated docs are current."""
from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil

import pytest

import factorflow

PACKAGES = ["factorflow", "factorflow.factors", "factorflow.engine", "factorflow.cluster", "factorflow.kernels"]
SKIP = {"factorflow.__main__"}


def _modules():
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            if info.name not in SKIP and not info.name.startswith("factorflow.kernels.cuda"):
                names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, module_name) if t.examples]
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module_name}"


def test_operator_docs_are_generated_from_the_registry():
    from factorflow.factors.docgen import render

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "operators.md"
    assert page.read_text() == render(), "docs/operators.md is stale: python -m factorflow.factors.docgen > docs/operators.md"


def test_public_functions_have_examples():
    for obj in (factorflow.factor, factorflow.field, factorflow.compute, factorflow.explain, factorflow.Panel,
                factorflow.Panel.from_numpy, factorflow.Panel.from_polars, factorflow.operators,
                factorflow.sample_panel, factorflow.Factor):
        assert "Examples" in (obj.__doc__ or "") or ">>>" in (obj.__doc__ or ""), obj
