"""Notebook UX: progress bars for ff.compute(progress=True), the dashboard link on cluster start,
and the HTML displays of clusters and plans."""
from __future__ import annotations

import numpy as np

import factorflow as ff

FACTORS = {"m": "ts_mean(close, 5)", "r": "cs_rank(close)"}


def _panel():
    close = 100 + np.cumsum(np.random.default_rng(0).standard_normal((400, 30)), axis=0)
    return ff.Panel.from_numpy({"close": close})


def test_progress_without_a_client_prints_a_text_bar(capsys):
    panel = _panel()
    out = ff.compute(FACTORS, panel, progress=True)
    text = capsys.readouterr().out
    assert "Completed" in text and "#" in text
    assert not out.is_lazy  # computed by the call
    ref = ff.compute(FACTORS, panel)
    for k in FACTORS:
        np.testing.assert_array_equal(out.to_numpy(k), ref.to_numpy(k))


def test_cluster_start_shows_the_dashboard_and_progress_follows_the_cluster(capsys):
    panel = _panel()
    with ff.cluster.local(n_workers=1, threads_per_worker=2, dashboard_address="127.0.0.1:0") as cluster:
        err = capsys.readouterr().err
        assert f"factorflow: Dask dashboard at {cluster.dashboard_link}" in err
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        page = cluster._repr_html_()
        assert f"href='{cluster.dashboard_link}'" in page and "2 threads" in page
        out = ff.compute(FACTORS, panel, progress=True)
        assert not out.is_lazy
        assert "100%" in capsys.readouterr().out  # distributed's text progress bar (not a notebook)
        ref = ff.compute(FACTORS, panel).to_numpy("r")
    np.testing.assert_array_equal(out.to_numpy("r"), ref)


def test_no_announcement_without_a_dashboard(capsys):
    with ff.cluster.local(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        assert cluster.dashboard_link is None
    assert "dashboard" not in capsys.readouterr().err


def test_plan_html_lists_every_stage():
    plan = ff.explain({"a": "ema(close, 5)", "b": "cs_rank(ts_mean(close, 3))"}, _panel())
    page = plan._repr_html_()
    assert page.count("<tr><td") == len(plan.stages)
    for st in plan.stages:
        for nid in st.nodes:
            assert plan.nodes[nid].text in page


def test_embedded_cluster_listens_on_the_loopback_only():
    import os

    import psutil

    for dash in (None, "127.0.0.1:0", ":0", 0):  # ":0" is Dask's every-interface spelling
        with ff.cluster.local(n_workers=1, threads_per_worker=1, dashboard_address=dash) as cluster:
            listening = {c.laddr.ip for c in psutil.Process(os.getpid()).net_connections() if c.status == "LISTEN"}
            assert listening <= {"127.0.0.1"}, (dash, listening)
            assert (cluster.dashboard_link is None) == (dash is None)
