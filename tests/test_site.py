"""The documentation site builds with warnings as errors, and its generated pages are complete."""
from __future__ import annotations

import html
import os
import pathlib
import re
import subprocess
import sys

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=300)
    # no -q: mkdocs counts warnings for --strict only when they are logged
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    return out


def _text(path: pathlib.Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8")))


def test_every_page_of_the_nav_is_built(site):
    for page in ("getting-started", "dsl", "semantics", "dialects", "evaluation", "jupyter", "ticks", "operators",
                 "api", "architecture", "performance", "deployment", "troubleshooting"):
        assert (site / page / "index.html").exists(), page
    assert (site / "index.html").exists()


def test_operator_reference_lists_every_registry_operator(site):
    from factorflow.factors.registry import operator_names

    text = _text(site / "operators" / "index.html")
    missing = [n for n in operator_names() if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert not missing, f"operators missing from the built reference: {missing}"


def test_generated_api_and_included_benchmarks(site):
    api = _text(site / "api" / "index.html")
    for name in ("ff.evaluate", "ff.compute", "ff.explain", "ff.Panel.from_numpy", "ff.Evaluation.summary",
                 "ff.cluster.local"):
        assert name in api, name
    assert "<!-- api -->" not in (site / "api" / "index.html").read_text(encoding="utf-8")
    perf = _text(site / "performance" / "index.html")
    assert "bench_evaluate.py" in perf and "bench_kernels.py" in perf and "--8<--" not in perf
