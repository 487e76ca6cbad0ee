"""Shared by the `factorflow run` tests: a small tick store, reading outputs, references."""
from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import polars as pl

import factorflow as ff

FREQ = "15min"  # 26 bars a day on us_equity
FACTORS = {
    "macd": "ema(close, 12) - ema(close, 26)",
    "z": "(close - ts_mean(close, 20)) / ts_std(close, 20)",
    "long": "ts_mean(close, 40) / close",  # lookback > one day of bars
    "nested": "ema(ts_mean(ema(close, 3), 5), 4)",
    "cum": "ts_sum(cumsum(log(close / delay(close, 1))), 6)",
    "rank": "cs_rank(ewma(delta(volume, 2), 7))",
}


def factor_flags(factors=FACTORS) -> list[str]:
    out = []
    for name, f in factors.items():
        out += ["--factor", f"{name}={f}"]
    return out


def make_store(path, days: int = 20, symbols: int = 16, seed: int = 7) -> str:
    ff.generate_ticks(str(path), symbols=symbols, days=days, seed=seed, ticks_per_day=150, workers=1)
    return str(path)


def read_output(out) -> dict[str, pl.DataFrame]:
    """``{date: frame}`` of the committed partitions under ``out``."""
    frames = {}
    for d in sorted(pathlib.Path(out).glob("date=*")):
        if (d / "_manifest.json").exists():
            frames[d.name.removeprefix("date=")] = pl.read_parquet(d / "part-0.parquet")
    return frames


def reference(ticks: str, factors=FACTORS, start=None, end=None, freq=FREQ) -> dict[str, pl.DataFrame]:
    """``ff.compute`` in this process (threaded scheduler), split by date like the run's output."""
    import dask

    with dask.config.set(scheduler="threads"):
        panel = ff.TickStore(ticks).bars(freq, start=start, end=end)
        out = ff.compute(factors, panel).to_polars()
    out = out.with_columns(pl.col("time").dt.replace_time_zone(None).dt.date().cast(pl.Utf8).alias("_d"))
    return {d: g.drop("_d") for (d,), g in out.partition_by("_d", as_dict=True, maintain_order=True).items()}


def assert_frames_close(got: pl.DataFrame, want: pl.DataFrame, rtol: float = 1e-9, what: str = "") -> None:
    assert got.columns == want.columns, (what, got.columns, want.columns)
    assert got.height == want.height, (what, got.height, want.height)
    g_t = got["time"].cast(pl.Int64).to_numpy()
    w_t = want["time"].cast(pl.Int64).to_numpy()
    assert np.array_equal(g_t, w_t), what
    assert got["symbol"].to_list() == want["symbol"].to_list(), what
    for c in got.columns[2:]:
        a, b = got[c].to_numpy(), want[c].to_numpy()
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        assert np.array_equal(nan_a, nan_b), f"{what} {c}: NaN positions differ ({nan_a.sum()} vs {nan_b.sum()})"
        ok = ~nan_a
        err = np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)
        # absolute floor for values that are rounding noise around 0 (cancellation)
        bad = (err > rtol) & (np.abs(a[ok] - b[ok]) > 1e-12)
        assert not bad.any(), f"{what} {c}: max rel err {err.max():.3g}"


def file_bytes(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in pathlib.Path(out).glob("date=*/part-0.parquet")}


def env_without(*names) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


def make_tls_files(directory) -> dict[str, str]:
    """A CA and one certificate for 127.0.0.1/localhost signed by it (PEM files), valid 1 day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factorflow test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory = pathlib.Path(directory)
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in files.items()}


def start_process(cmd, log, env=None) -> subprocess.Popen:
    """Start ``cmd`` (a dask scheduler/worker) in its own session, output to ``log``."""
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def stop_processes(procs) -> None:
    """Terminate ``procs``, then kill whatever has not exited within 20 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

