"""The dask executor: steps on a ``dask.distributed`` cluster (``pip install 'pipekit[dask]'``).

* With no address, a loopback ``LocalCluster``: worker processes of one thread each, the
  scheduler and its dashboard on 127.0.0.1, started on the first submit and closed by
  ``shutdown``. Its workers are spawned with the controller's store location in their
  environment.
* ``address=`` (or the setting ``PIPEKIT_DASK_ADDRESS`` / ``dask_address``): a ``Client`` of
  that scheduler. A scheduler off this machine is reached over ``tls://`` only, with the TLS
  files of ``PIPEKIT_DASK_TLS_CA`` / ``_CERT`` / ``_KEY`` (or dask's own
  ``distributed.comm.tls`` settings); its workers open the store of their own
  ``PIPEKIT_HOME`` / ``PIPEKIT_DB``.

Each job runs on a worker through :func:`pipekit.worker.run_job`: the worker opens its own
store connection and the task ends through ``finish_task``, as on every executor.

A worker lost mid-step: dask reschedules the job, and the rerun finds its task already
``in_progress`` under the dead worker. A started step is never run twice (its first run may
still be writing, on a worker that was only cut off), so the rerun fails the task
``worker lost: …`` through ``finish_task``, whose conditional write keeps a result the first
run committed meanwhile. A job that had not started yet runs normally. When dask gives up on
a job (``KilledWorker``, after ``allowed_failures`` workers died under it) the task is failed
``worker lost: KilledWorker: …`` by ``poll``.

``cancel`` marks the task ``stopped`` and cancels the dask future: a job that has not started
never runs; a script step's process tree is killed by the worker, which watches its task's
status; a function step's worker thread cannot be killed: it runs on to its end and its late
results are discarded (hence ``kills_trees = False``).
"""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
from typing import Any

import attrs
import psutil

import pipekit
from pipekit.config import (
    DASK_ADDRESS_ENV,
    DASK_TLS_CA_ENV,
    DASK_TLS_CERT_ENV,
    DASK_TLS_KEY_ENV,
    DB_ENV,
    HOME_ENV,
    configure,
    get_settings,
    setting,
)
from pipekit.errors import PluginError
from pipekit.executor import Job, Outcome, main_hidden, outcome_of, settle, stop
from pipekit.models import ParamInfo, Status
from pipekit.store import get_store
from pipekit.worker import kill_tree, run_job

NAME = "dask"
MISSING_EXTRA = "the dask executor needs the dask extra: pip install 'pipekit[dask]'"
#: how the reason of a step failed because its worker died begins
WORKER_LOST = "worker lost"
#: where a run records the dashboard of the cluster its steps ran on: a ClearML user
#: property of its controller task (the task page lists it)
DASHBOARD_SECTION, DASHBOARD_NAME = "properties", "dask_dashboard"
#: how often a worker running a script step checks whether its task was stopped
_WATCH_EVERY = 0.2


def _import_distributed() -> Any:
    # lazy: `import pipekit` and `pipekit --help` must not pay for dask, and a user without
    # the extra gets one clear line
    try:
        import distributed
    except ImportError:
        raise PluginError(MISSING_EXTRA, plugin=NAME) from None
    return distributed


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may well name another machine
        return False


def _security(distributed: Any, address: str) -> Any:
    """The ``distributed.Security`` to reach ``address`` with (``None``: loopback, plain).

    :raises PluginError: an unencrypted address off this machine, or TLS without its files.
    """
    scheme, _ = distributed.comm.parse_address(address)
    if scheme != "tls":
        if scheme == "inproc" or _is_loopback(distributed.comm.get_address_host(address)):
            return None
        raise PluginError(f"dask executor: refusing {address}: a scheduler that is not on "
                          "this machine is reached over TLS only (a tls:// address, with "
                          f"{DASK_TLS_CA_ENV}, {DASK_TLS_CERT_ENV} and {DASK_TLS_KEY_ENV})",
                          plugin=NAME)
    files = {env: setting(env) for env in (DASK_TLS_CA_ENV, DASK_TLS_CERT_ENV, DASK_TLS_KEY_ENV)}
    if any(files.values()):
        missing = [env for env, value in files.items() if not value]
        if missing:
            raise PluginError(f"dask executor: {address} needs {', '.join(missing)} too",
                              plugin=NAME)
        return distributed.Security(tls_ca_file=files[DASK_TLS_CA_ENV],
                                    tls_client_cert=files[DASK_TLS_CERT_ENV],
                                    tls_client_key=files[DASK_TLS_KEY_ENV],
                                    require_encryption=True)
    security = distributed.Security(require_encryption=True)  # dask's distributed.comm.tls
    if not (security.tls_ca_file and security.tls_client_cert):
        raise PluginError(f"dask executor: {address} needs TLS files: set {DASK_TLS_CA_ENV}, "
                          f"{DASK_TLS_CERT_ENV} and {DASK_TLS_KEY_ENV}", plugin=NAME)
    return security


# -- on the worker ------------------------------------------------------------------------------


def execute(job: Job, home: str | None, db: str | None, artifacts: str | None = None
            ) -> Outcome:
    """Run ``job`` here, on a dask worker; what the executor submits.

    :param home: with ``db`` and ``artifacts``, the controller's store, when the cluster is
        on its machine (else the worker's own settings say where the store is).
    """
    if home is not None:
        configure(home=home, db=db, artifacts=artifacts)
    info = get_store().get_task(job.task_id)
    if info.status == Status.in_progress.value:
        # Rescheduled: its worker was lost mid-step (and may yet finish): never run twice.
        return settle(job.task_id, f"{WORKER_LOST}: the dask worker running it "
                                   f"({info.worker}) was lost mid-step; dask rescheduled "
                                   "it, and a started step does not run twice")
    if info.is_function:
        return run_job(job)
    return _run_script(job)


def _run_script(job: Job) -> Outcome:
    """:func:`run_job` for a script task, killing its process tree once the task is final
    (stopped or timed out by the controller, which cannot reach this machine's processes).
    """
    children: list[psutil.Process] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(_WATCH_EVERY):
            if children and outcome_of(job.task_id) is not None:
                if children[0].is_running():  # (not a reused pid: psutil checks its start)
                    kill_tree(children[0].pid)
                return

    watcher = threading.Thread(target=watch, name="pipekit-dask-watch", daemon=True)
    watcher.start()
    try:
        return run_job(job, on_start=lambda pid: children.append(psutil.Process(pid)))
    finally:
        done.set()
        watcher.join()


# -- in the controller --------------------------------------------------------------------------


@attrs.define
class _DaskHandle:
    job: Job
    future: Any  # distributed.Future
    outcome: Outcome | None = None


class DaskExecutor:
    """Run jobs on a ``dask.distributed`` cluster: a loopback ``LocalCluster`` of its own, or
    the scheduler at ``address``.
    """

    kills_trees = False  # a function step's worker thread can only be abandoned
    #: set by the run loop: called when a job ends (pipekit.executor says why)
    wake: Any = None

    def __init__(self, max_workers: int | None = None, *, address: str | None = None,
                 n_workers: int | None = None, allowed_failures: int = 1,
                 dashboard_address: str = "127.0.0.1:8787") -> None:
        """
        :param max_workers: how many steps the run loop keeps submitted; a ``LocalCluster``
            gets that many worker processes, at most one per CPU.
        :param address: the scheduler to connect to (default ``PIPEKIT_DASK_ADDRESS``;
            unset: a ``LocalCluster``).
        :param n_workers: a ``LocalCluster``'s worker processes (overrides ``max_workers``).
        :param allowed_failures: how many workers may die under one job before a
            ``LocalCluster``'s scheduler gives up on it (``KilledWorker``); a remote
            scheduler's own ``distributed.scheduler.allowed-failures`` rules there.
        :param dashboard_address: where a ``LocalCluster`` serves its dashboard.
        :raises PluginError: the dask extra is not installed, or ``address`` is refused.
        """
        self._distributed = _import_distributed()
        self._address = address or setting(DASK_ADDRESS_ENV) or None
        self._security = None
        #: the cluster runs on this machine: jobs carry the controller's store location
        self._here = True
        if self._address is not None:
            self._security = _security(self._distributed, self._address)
            host = self._distributed.comm.get_address_host(self._address)
            self._here = _is_loopback(host)
        cpus = os.cpu_count() or 2
        self._n_workers = n_workers or max(1, min(max_workers or cpus, cpus))
        self._allowed_failures = allowed_failures
        self._dashboard_address = dashboard_address
        self._cluster: Any = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._recorded: set[str] = set()
        #: the dashboard's URL once the client runs
        self.dashboard_link: str | None = None

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                d = self._distributed
                if self._address is None:
                    settings = get_settings()
                    with main_hidden():  # (a nanny that restarts a worker later does not)
                        self._cluster = d.LocalCluster(
                            n_workers=self._n_workers, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address=self._dashboard_address,
                            scheduler_kwargs={"allowed_failures": self._allowed_failures},
                            env={HOME_ENV: str(settings.home), DB_ENV: settings.db_url})
                    self._client = d.Client(self._cluster)
                else:
                    self._client = d.Client(self._address, security=self._security)
                self.dashboard_link = self._client.dashboard_link or None
                if self.dashboard_link:
                    print(f"pipekit: dask dashboard {self.dashboard_link}", file=sys.stderr)
            return self._client

    def _record_dashboard(self, job: Job) -> None:
        """Keep the dashboard's link on the run the job's step belongs to (once per run)."""
        if not self.dashboard_link:
            return
        store = get_store()
        run = store.get_task(job.task_id).parent
        if run and run not in self._recorded:
            self._recorded.add(run)
            store.set_parameters(run, [ParamInfo(
                DASHBOARD_SECTION, DASHBOARD_NAME, self.dashboard_link, "str",
                "the Dask dashboard of the cluster the run's steps ran on")])

    def submit(self, job: Job) -> _DaskHandle:
        client = self._get_client()
        self._record_dashboard(job)
        store = None
        if self._here:
            settings = get_settings()
            store = (str(settings.home), settings.db_url, settings.artifacts_setting)
        future = client.submit(execute, job, *(store or (None, None, None)),
                               key=f"{job.step or 'task'}-{job.task_id}", pure=False)
        future.add_done_callback(self._woken)
        return _DaskHandle(job, future)

    def _woken(self, _: Any) -> None:
        if self.wake is not None:
            self.wake()

    def poll(self, handle: _DaskHandle) -> Outcome | None:
        if handle.outcome is not None:
            return handle.outcome
        task_id = handle.job.task_id
        status = handle.future.status
        if status == "pending":
            return None
        if status == "finished":
            outcome = outcome_of(task_id) or settle(task_id, "the dask job returned early")
        elif status == "error":
            exc = handle.future.exception()
            why = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, self._distributed.KilledWorker):
                why = f"{WORKER_LOST}: {why}"
            outcome = outcome_of(task_id) or settle(task_id, why)
        else:  # cancelled or lost by the scheduler, not by us (cancel() sets the outcome)
            outcome = outcome_of(task_id) or settle(
                task_id, f"{WORKER_LOST}: dask reports the job {status}")
        handle.outcome = outcome
        # Dropped, so that dask does not run a finished job again to recompute a result
        # that a dead worker held.
        handle.future.release()
        return outcome

    def cancel(self, handle: _DaskHandle) -> None:
        stop(handle.job.task_id)
        if handle.outcome is None:
            handle.future.cancel()
            handle.outcome = outcome_of(handle.job.task_id) or Outcome(Status.stopped.value)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            client, self._client = self._client, None
            cluster, self._cluster = self._cluster, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


@pipekit.hookimpl
def pipekit_executors(register: Any) -> None:
    register(NAME, DaskExecutor)
