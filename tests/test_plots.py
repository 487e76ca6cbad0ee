"""Bokeh reports: standalone HTML with inline resources, every plot drawn in headless Chromium.

The saved report is opened with Debian's ``chromium`` (``make test`` installs it; this module
installs it with apt-get when it is missing and we are root, and skips, saying why, only when
that is impossible). A probe script injected into a copy of the report waits until the bokeh
document is idle, then for every plot of the report exports its canvas and counts the pixels
that differ from the background, and collects JavaScript errors; the result is read back from
the DOM that ``chromium --dump-dom`` prints.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from factorflow.engine.plots import PLOT_NAMES

import factorflow as ff

PROBE = """
<script>
(function () {
  function report(obj) {
    var pre = document.createElement("pre");
    pre.id = "ff-probe";
    pre.textContent = JSON.stringify(obj);
    document.body.appendChild(pre);
  }
  var t0 = Date.now();
  function check() {
    var docs = (window.Bokeh && Bokeh.documents) || [];
    if (!docs.length || !docs.every(function (d) { return d.is_idle; })) {
      if (Date.now() - t0 < 20000) { setTimeout(check, 100); return; }
      report({timeout: true, errors: window.__ff_errors}); return;
    }
    var plots = {};
    var views = Array.from(Bokeh.index.query(function (v) { return v.model && v.model.name && v.export && v.canvas_view; }));
    views.forEach(function (v) {
      var layer = v.export("png");
      var c = layer.canvas, ctx = c.getContext("2d");
      var d = ctx.getImageData(0, 0, c.width, c.height).data;
      var counts = new Map(), mode = 0;
      for (var i = 0; i < d.length; i += 4) {
        var key = ((d[i] << 24) | (d[i + 1] << 16) | (d[i + 2] << 8) | d[i + 3]) >>> 0;
        var n = (counts.get(key) || 0) + 1;
        counts.set(key, n);
        if (n > mode) mode = n;
      }
      var differ = d.length / 4 - mode;  // pixels not of the background (most common) colour
      var glyphs = v.model.renderers.filter(function (r) { return r.glyph; }).length;
      plots[v.model.name] = {width: c.width, height: c.height, differ: differ, colors: counts.size, glyphs: glyphs};
    });
    report({plots: plots, roots: docs.map(function (d) { return d.roots().length; }), errors: window.__ff_errors});
  }
  window.addEventListener("load", function () { setTimeout(check, 50); });
})();
</script>
"""

ERRORS = """
<script>
window.__ff_errors = [];
window.addEventListener("error", function (e) { window.__ff_errors.push(String(e.message)); });
(function () { var orig = console.error; console.error = function () {
  window.__ff_errors.push(Array.from(arguments).map(String).join(" ")); orig.apply(console, arguments); }; })();
</script>
"""


def _inject(text: str) -> str:
    """The report with the error collector first in <head> and the probe last in <body> (the
    inline BokehJS contains both tags inside strings: the document's own are the first <head> and
    the last </body>)."""
    h = text.index("<head>") + len("<head>")
    b = text.rindex("</body>")
    return text[:h] + ERRORS + text[h:b] + PROBE + text[b:]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=600)
            if not shutil.which("chromium"):
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
                subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError):
            pass
        path = shutil.which("chromium")
        if path:
            return path
    pytest.skip("headless Chromium is not installed and could not be installed (needs root and apt-get: "
                "`apt-get install chromium`, which `make test` runs)")


@pytest.fixture(scope="module")
def evaluation():
    rng = np.random.default_rng(3)
    T, N = 160, 60
    ret = 0.01 * rng.standard_normal((T, N))
    close = 20 * np.exp(np.cumsum(ret, axis=0))
    signal = np.roll(ret, -1, axis=0) + 0.02 * rng.standard_normal((T, N))
    times = np.arange("2024-01-01", T, dtype="datetime64[D]")
    panel = ff.Panel.from_numpy({"close": close, "signal": signal}, times=times)
    return ff.evaluate({"signal": "signal", "rev": "-(close / delay(close, 3) - 1)"}, panel, periods=(1, 3, 5))


def test_saved_report_is_standalone_and_every_plot_draws(evaluation, tmp_path):
    path = evaluation.save(tmp_path / "report.html", factor="signal")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    # no server, no internet: no external scripts or stylesheets
    assert not re.search(r"<script[^>]+src=", text) and not re.search(r"<link[^>]+href=\"?https?:", text)
    assert "cdn.bokeh.org" not in text and len(text) > 500_000  # BokehJS is inline
    chromium = _chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(_inject(text), encoding="utf-8")
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--allow-file-access-from-files", "--virtual-time-budget=30000", "--window-size=1400,1200",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="ff-probe">(.*?)</pre>', out.stdout, re.DOTALL)
    assert m, f"the probe did not report (chromium rc={out.returncode}): {out.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert not res.get("timeout"), res
    assert res["errors"] == [], res["errors"]
    assert res["roots"] == [1]
    plots = res["plots"]
    assert set(PLOT_NAMES) <= set(plots), sorted(plots)
    for name in PLOT_NAMES:
        p = plots[name]
        assert p["glyphs"] >= 1, (name, p)
        assert p["width"] > 100 and p["height"] > 100, (name, p)
        # drawn: axes, labels and glyphs cover well over 1% of the canvas, in several colours
        assert p["differ"] > 0.01 * p["width"] * p["height"] and p["colors"] >= 8, (name, p)


def test_report_with_all_factors_has_one_tab_each(evaluation, tmp_path):
    from bokeh.models import TabPanel

    path = evaluation.save(tmp_path / "sub" / "all.html")
    assert os.path.exists(path) and not [f for f in os.listdir(tmp_path / "sub") if f.startswith(".report-")]
    fig = evaluation.figures("rev", 3)
    names = {m.name for m in fig.references() if getattr(m, "name", None)}
    assert set(PLOT_NAMES) <= names
    with pytest.raises(KeyError, match="no factor 'nope'"):
        evaluation.save(tmp_path / "x.html", factor="nope")
    assert not os.path.exists(tmp_path / "x.html")
    assert TabPanel is not None


def test_panel_plot_and_html_reprs(evaluation):
    close = np.arange(20.0).reshape(10, 2) + 1
    panel = ff.Panel.from_numpy({"close": close}, symbols=["AAA", "BBB"])
    out = ff.compute({"m": "ts_mean(close, 3)"}, panel)
    fig = out.plot("m", symbols=["BBB"])
    (line,) = [r for r in fig.renderers if hasattr(r, "glyph")]
    np.testing.assert_allclose(line.data_source.data["y"][2:], (close[1:-1, 1] + close[:-2, 1] + close[2:, 1]) / 3)
    with pytest.raises(KeyError, match="symbols not in the panel"):
        out.plot("m", symbols=["ZZZ"])
    assert "lazy" in out._repr_html_() and "3 times" not in out._repr_html_()
    assert "10 times x 2 symbols" in out._repr_html_()
    assert "ts_mean(close, 3)" in ff.factor("ts_mean( close ,3)")._repr_html_()
    plan_html = ff.explain({"m": "cs_rank(ts_mean(close, 3))"}, panel)._repr_html_()
    assert "cross_section" in plan_html and "ts_mean(close, 3)" in plan_html
    assert "<table" in evaluation._repr_html_() and "signal" in evaluation._repr_html_()
