"""Executors: in process, local processes, Dask distributed, submitit; same results from each."""

from __future__ import annotations

import operator
import sys

import pandas as pd
import pytest

from factorflow.executors import (
    InProcessExecutor,
    ProcessExecutor,
    check_executor_args,
    make_executor,
)
from factorflow.sweep import parse_grid, run_sweep, runs_table

BASE = {
    "loss": "mse",
    "problem": {"shape": [6, 6], "rank": 1, "n_obs": 20},
    "model": {"depth": 2},
    "optimizer": {"name": "gd", "lr": 0.2},
    "stop": {"loss_below": 1e-3, "max_steps": 400},
    "record": {"per_decade": 3, "top_k": 3},
}
# two batches, one of which fails (100 distinct entries of a 6x6 matrix cannot be observed)
SPEC = parse_grid(
    {
        "base": BASE,
        "grid": {"model.init_scale": [1e-2, 1e-3], "problem.n_obs": [20, 100], "seeds": [0, 1]},
    }
)
TASKS = [(6, 3), (1, 0), (8, 2)]  # operator.truediv: 2.0, ZeroDivisionError, 4.0


def _table(out) -> pd.DataFrame:
    return runs_table(out).drop(columns=["wall_s_batch"])


def _collect(ex, fn=operator.truediv, tasks=TASKS) -> dict:
    with ex:
        return dict(ex.run(fn, tasks))


def _check_results(got: dict) -> None:
    assert got[0] == 2.0 and got[2] == 4.0
    assert isinstance(got[1], Exception)  # submitit wraps it in FailedJobError
    assert "ZeroDivisionError" in f"{type(got[1]).__name__}: {got[1]}"


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    res = run_sweep(SPEC, out, progress=False, log=None)
    assert res.n_ran == 4 and len(res.failures) == 2
    return _table(out)


def test_in_process_executor_yields_results_and_errors():
    _check_results(_collect(InProcessExecutor()))


def test_process_executor():
    _check_results(_collect(ProcessExecutor(2)))


def test_executor_args_are_checked():
    with pytest.raises(ValueError, match="unknown executor"):
        check_executor_args("spark")
    with pytest.raises(ValueError, match="needs a folder"):
        make_executor("slurm")
    assert isinstance(make_executor("local"), InProcessExecutor)


def test_process_pool_sweep_matches_in_process(tmp_path, local_sweep):
    res = run_sweep(SPEC, tmp_path, workers=2, progress=False, log=None)
    assert res.n_ran == 4 and len(res.failures) == 2
    pd.testing.assert_frame_equal(_table(tmp_path), local_sweep)


def test_missing_cluster_packages_give_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'factorflow\[cluster\]'"):
        make_executor("dask", scheduler="tcp://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ImportError, match=r"pip install 'factorflow\[cluster\]'"):
        make_executor("slurm", folder=tmp_path)


def _dask_sweep(tmp_path, local_sweep, processes: bool) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, processes=processes, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        with make_executor("dask", scheduler=cluster.scheduler_address) as ex:
            _check_results(dict(ex.run(operator.truediv, TASKS)))
        res = run_sweep(
            SPEC,
            tmp_path,
            executor="dask",
            scheduler=cluster.scheduler_address,
            progress=False,
            log=None,
        )
    assert res.n_ran == 4 and len(res.failures) == 2
    assert "cannot observe 100 distinct entries" in res.failures[0]["error"]
    pd.testing.assert_frame_equal(_table(tmp_path), local_sweep)


def test_dask_executor_gives_the_same_table(tmp_path, local_sweep):
    """Fast version: a LocalCluster of two worker threads (no process start-up)."""
    _dask_sweep(tmp_path, local_sweep, processes=False)


@pytest.mark.slow
def test_dask_process_cluster_gives_the_same_table(tmp_path, local_sweep):
    """LocalCluster(n_workers=2, processes=True, threads_per_worker=1): each worker process
    imports torch (~40 s on 2 busy cores)."""
    _dask_sweep(tmp_path, local_sweep, processes=True)


def test_dask_local_cluster_without_scheduler(tmp_path, local_sweep):
    pytest.importorskip("distributed")
    ex = make_executor("dask", workers=1)
    assert ex.describe() == "dask LocalCluster (1 workers)"
    ex.close()


def test_submitit_local_executor_runs_jobs(tmp_path):
    """submitit's local executor: each task a job in its own process."""
    pytest.importorskip("submitit")
    with make_executor("slurm", folder=tmp_path / "jobs", cluster="local") as ex:
        assert "local" in ex.describe()
        _check_results(dict(ex.run(operator.truediv, TASKS)))
    assert any((tmp_path / "jobs").rglob("*_log.out"))


def _submitit_sweep(tmp_path, local_sweep, cluster: str) -> None:
    pytest.importorskip("submitit")
    res = run_sweep(
        SPEC,
        tmp_path / "sw",
        executor="slurm",
        executor_options={"cluster": cluster, "parameters": {"timeout_min": 5}},
        progress=False,
        log=None,
    )
    assert res.n_ran == 4 and len(res.failures) == 2
    pd.testing.assert_frame_equal(_table(tmp_path / "sw"), local_sweep)


def test_submitit_sweep_gives_the_same_table(tmp_path, local_sweep):
    """Fast version: submitit's debug executor (jobs in this process)."""
    _submitit_sweep(tmp_path, local_sweep, "debug")


@pytest.mark.slow
def test_submitit_local_sweep_gives_the_same_table(tmp_path, local_sweep):
    """submitit's local executor: one process per batch, each importing torch."""
    _submitit_sweep(tmp_path, local_sweep, "local")
    assert (tmp_path / "sw" / "submitit").is_dir()  # job logs
