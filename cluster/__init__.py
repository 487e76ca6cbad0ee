"""Clusters: the embedded local cluster and connections to real Dask deployments.

``ff.cluster.local()`` starts an in-process ``LocalCluster`` (threads; kernels release the GIL)
whose scheduler, workers and dashboard listen on 127.0.0.1 only; panels built in the notebook are
handed to workers by reference. ``processes=True`` starts worker processes instead.
``ff.cluster.connect()`` attaches to a running ``dask scheduler``. Both return a :class:`Cluster`
usable as a context manager or closed explicitly; while it is open its client is the default,
so ``ff.compute`` runs there.
"""
from __future__ import annotations

import os
import re

__all__ = ["Cluster", "local", "connect", "check_dashboard_address"]


class Cluster:
    """A handle on a Dask cluster and its client.

    Attributes
    ----------
    client : distributed.Client
    cluster : distributed.LocalCluster or None
        None when connected to an external scheduler.
    """

    def __init__(self, client, cluster=None, dashboard_link: str | None = None):
        self.client = client
        self.cluster = cluster
        self._dashboard_link = dashboard_link

    @property
    def dashboard_link(self) -> str | None:
        """URL of the Dask dashboard (None when the scheduler runs without one)."""
        if self._dashboard_link is not None or self.cluster is not None:  # local: known at start
            return self._dashboard_link
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    @property
    def scheduler_address(self) -> str:
        return self.client.scheduler.address

    @property
    def nthreads(self) -> int:
        """Worker threads available for tasks."""
        return sum(self.client.nthreads().values())

    def close(self) -> None:
        """Close the client (and the cluster if this handle started it)."""
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def n_workers(self) -> "int | str":
        """Workers connected to the scheduler now (``"?"`` if the scheduler cannot be asked)."""
        try:
            return len(self.client.scheduler_info(n_workers=-1)["workers"])
        except Exception:
            return "?"

    def _repr_html_(self) -> str:
        from .display import cluster_html

        return cluster_html(self)

    def __repr__(self) -> str:
        kind = "local" if self.cluster is not None else "connected"
        return (f"<factorflow Cluster ({kind}) scheduler={self.scheduler_address} workers={self.n_workers} "
                f"threads={self.nthreads} dashboard={self.dashboard_link}>")


def check_dashboard_address(address) -> str | None:
    """``address`` as the embedded cluster's dashboard takes it: ``HOST:PORT``, or a port alone
    (``PORT`` or Dask's ``:PORT``) bound to 127.0.0.1; ``None`` stays None (no dashboard). Checked
    before any cluster starts (Dask would fail inside ``LocalCluster`` with ``int()``'s message).
    Dask reads ``:PORT`` as every interface; here a dashboard leaves the loopback only where a
    host is named (``0.0.0.0:8787``), since it has no authentication.

    Examples
    --------
    >>> check_dashboard_address(8787), check_dashboard_address(":0"), check_dashboard_address("127.0.0.1:8787")
    ('127.0.0.1:8787', '127.0.0.1:0', '127.0.0.1:8787')
    >>> check_dashboard_address("localhost")
    Traceback (most recent call last):
    ...
    ValueError: dashboard address 'localhost' is not HOST:PORT or PORT (e.g. 127.0.0.1:8787; port 0 picks a free one)
    """
    if address is None:
        return None
    text = str(address).strip()
    port = text[1:] if text[:1] == ":" else text
    if port.isdigit():  # a port alone
        text = f"127.0.0.1:{port}"
    m = re.fullmatch(r"([^\s:\[\]/]+):(\d{1,5})", text)  # an IPv4 address or a name; Dask's dashboard takes no [v6]
    if m is None or int(m.group(2)) > 65535:
        raise ValueError(f"dashboard address {address!r} is not HOST:PORT or PORT "
                         "(e.g. 127.0.0.1:8787; port 0 picks a free one)")
    return text


def local(n_workers: int | None = None, threads_per_worker: int | None = None, processes: bool = False,
          dashboard_address: str | None = "127.0.0.1:8787", memory_limit=None, gpu: bool = False,
          **kwargs) -> Cluster:
    """Start the embedded local cluster.

    Parameters
    ----------
    n_workers : int, optional
        Default: 1 worker with all cores as threads (``processes=False``), or one process per
        core with 1 thread each (``processes=True``).
    threads_per_worker : int, optional
    processes : bool
        False (default): workers are threads of this process, sharing memory with the notebook
        (zero-copy panels; Numba kernels release the GIL). True: worker processes; data is
        loaded and results written inside worker tasks.
    dashboard_address : str or None
        Where the dashboard listens: ``HOST:PORT``, or a port alone (``8787``, ``":8787"``) on
        127.0.0.1 (checked before the cluster starts: :func:`check_dashboard_address`); ``None``
        disables it. Bound to 127.0.0.1 unless a host is named (if the port is taken Dask picks
        another; see ``.dashboard_link``).
    memory_limit : str, int or None
        Dask's per-worker memory limit. Default: ``"auto"`` (the machine's memory split between
        the workers) for worker processes, and none (``0``) for in-process workers: their
        process's memory includes the notebook's panels and results, which a worker can neither
        spill nor release, so Dask's memory monitor would only pause the workers (measured: the
        Alpha101 library on 1000 x 2000 went from ~8 s to ~56 s once the process passed 80% of
        the limit).
    gpu : bool
        Start GPU workers for ``backend="gpu"``: one worker per visible GPU with dask-cuda's
        ``LocalCUDACluster`` when ``dask_cuda`` is installed (processes), else one worker (device
        0; threads unless ``processes=True``), each offering the Dask resource ``GPU=1``. Raises
        :class:`~factorflow.engine.device.GPUUnavailableError` first when CUDA cannot run here.
    **kwargs
        Passed to :class:`distributed.LocalCluster`.

    Examples
    --------
    >>> import factorflow as ff
    >>> with ff.cluster.local(dashboard_address=None) as c:  # doctest: +SKIP
    ...     out = ff.compute({"m": "ts_mean(close, 5)"}, panel).compute()
    """
    from distributed import Client, LocalCluster

    dashboard_address = check_dashboard_address(dashboard_address)
    if memory_limit is None:
        memory_limit = "auto" if processes else 0
    if gpu:
        return _local_gpu(n_workers, threads_per_worker, processes, dashboard_address, memory_limit, **kwargs)
    ncores = os.cpu_count() or 1
    if n_workers is None:
        n_workers = ncores if processes else 1
    if threads_per_worker is None:
        threads_per_worker = 1 if processes else max(1, ncores // n_workers)
    if dashboard_address is None:
        # no dashboard; the scheduler's HTTP server (health, metrics) still starts: keep it on the
        # loopback (by default it binds the scheduler's host address on port 8787)
        kwargs["scheduler_kwargs"] = {"dashboard": False, "dashboard_address": "127.0.0.1:0",
                                      **kwargs.get("scheduler_kwargs", {})}
    if processes:
        # TCP on the loopback interface only (scheduler, nannies, workers)
        kwargs.setdefault("host", "127.0.0.1")
    # threads: in-process "inproc" transport, no network listener for scheduler/worker traffic
    # a worker always starts an HTTP server; without an address it binds 0.0.0.0: keep it on the loopback
    kwargs.setdefault("worker_dashboard_address", "127.0.0.1:0")
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        dashboard_address=dashboard_address,
        memory_limit=memory_limit,
        **kwargs,
    )
    try:
        client = Client(cluster, set_as_default=True)
    except BaseException:
        cluster.close()
        raise
    link = None
    if dashboard_address is not None:
        try:
            host = str(dashboard_address).rsplit(":", 1)[0] or "127.0.0.1"
            link = f"http://{host}:{cluster.scheduler.http_server.port}/status"
        except Exception:  # pragma: no cover - dashboard disabled by config
            link = None
    handle = Cluster(client, cluster, link)
    from .display import announce

    announce(handle)  # the dashboard link: HTML in a notebook, one stderr line elsewhere
    return handle


def _visible_gpus() -> int:
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return 1
    return len(cuda.gpus)


def _local_gpu(n_workers, threads_per_worker, processes, dashboard_address, memory_limit, **kwargs) -> Cluster:
    """``local(gpu=True)``: see :func:`local`."""
    import warnings

    from ..engine.device import GPU_RESOURCES, check_gpu

    check_gpu()
    ngpu = _visible_gpus()
    kwargs.setdefault("resources", dict(GPU_RESOURCES))
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        from distributed import Client

        if dashboard_address is not None and ":" not in str(dashboard_address):
            dashboard_address = f"127.0.0.1:{dashboard_address}"
        cluster = LocalCUDACluster(n_workers=n_workers, threads_per_worker=threads_per_worker or 1,
                                   dashboard_address=dashboard_address, memory_limit=memory_limit,
                                   host="127.0.0.1", **kwargs)
        try:
            client = Client(cluster, set_as_default=True)
        except BaseException:
            cluster.close()
            raise
        return Cluster(client, cluster)
    if ngpu > 1 and (n_workers or 1) == 1:
        warnings.warn(f"{ngpu} GPUs visible but dask-cuda is not installed: one GPU worker uses device 0 "
                      "(pip install dask-cuda for one worker per GPU)", RuntimeWarning, stacklevel=3)
    if n_workers not in (None, 1):
        raise ValueError("without dask-cuda, ff.cluster.local(gpu=True) starts one GPU worker (device 0); "
                         "install dask-cuda for one worker per GPU")
    return local(1, threads_per_worker, processes, dashboard_address, memory_limit, **kwargs)


def connect(address: str | None = None, scheduler_file: str | None = None, security=None, timeout="30s") -> Cluster:
    """Connect to a running Dask scheduler (``dask scheduler`` / ``dask worker`` deployment).

    Parameters
    ----------
    address : str, optional
        ``tcp://host:8786`` (or ``tls://...`` with ``security``).
    scheduler_file : str, optional
        The file written by ``dask scheduler --scheduler-file``.

    Examples
    --------
    >>> import factorflow as ff
    >>> with ff.cluster.connect(scheduler_file="s.json") as c:  # doctest: +SKIP
    ...     print(c.dashboard_link)
    """
    from distributed import Client

    if (address is None) == (scheduler_file is None):
        raise ValueError("give exactly one of address= or scheduler_file=")
    if scheduler_file is not None and not os.path.exists(scheduler_file):
        raise FileNotFoundError(f"scheduler file {scheduler_file!r} does not exist (is `dask scheduler "
                                f"--scheduler-file {scheduler_file}` running?)")
    client = Client(address=address, scheduler_file=scheduler_file, security=security, timeout=timeout,
                    set_as_default=True)
    return Cluster(client, None)
