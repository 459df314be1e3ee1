"""The dask task runner of the blockwise labelling: one task per call, progress as tasks finish."""

from __future__ import annotations

import functools
import threading
import uuid
from typing import Any, Callable

LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded", "processes",
                    "multiprocessing")
#: progress callback: (tasks done, tasks in all, stage name)
Progress = Callable[[int, int, str], None]


class TaskRunner:
    """Runs one task per call on a dask scheduler and reports progress as tasks finish."""

    def __init__(self, scheduler: Any, progress: Progress | None):
        self.client = None
        if scheduler is None:
            scheduler = "threads"
        elif isinstance(scheduler, str):
            if scheduler not in LOCAL_SCHEDULERS:
                raise ValueError(f"scheduler must be one of {list(LOCAL_SCHEDULERS)} or a "
                                 f"dask.distributed.Client, got {scheduler!r}")
        elif all(hasattr(scheduler, a) for a in ("submit", "gather", "compute")):
            self.client = scheduler
        elif not callable(scheduler):
            raise TypeError(f"scheduler must be a dask scheduler name, a get function or a "
                            f"dask.distributed.Client, got {type(scheduler).__name__}")
        self.scheduler, self.progress = scheduler, progress

    def map(self, stage: str, function: Callable, calls: list[tuple]) -> list:
        import dask

        total = len(calls)
        if total == 0:
            return []
        token = uuid.uuid4().hex[:12]
        keys = [f"{stage.replace(' ', '-')}-{token}-{n}" for n in range(total)]
        report = self.progress or (lambda done, total, stage: None)
        report(0, total, stage)
        if self.client is not None:
            from distributed import as_completed, wait

            tasks = [dask.delayed(functools.partial(function, *args), pure=False)(dask_key_name=key)
                     for key, args in zip(keys, calls)]
            futures = self.client.compute(tasks)
            try:
                for done, _ in enumerate(as_completed(futures), start=1):
                    report(done, total, stage)
            except BaseException:  # e.g. a cancel: tasks running on workers cannot be stopped, and
                wait(futures)      # none may write after this returns, so the pass ends first
                raise
            return self.client.gather(futures)
        from dask.callbacks import Callback

        wanted, done = set(keys), [0]
        state = _MapState()
        _MAPS[token] = state
        tasks = [dask.delayed(_guarded, pure=False)(token, functools.partial(function, *args), dask_key_name=key)
                 for key, args in zip(keys, calls)]

        def posttask(key, result, dsk, state_, worker_id):
            if key in wanted and not state.failed:
                done[0] += 1
                try:
                    report(done[0], total, stage)
                except BaseException as err:  # e.g. a cancel request: stop, let running tasks end
                    with state.running:
                        state.failed.append(err)

        try:
            with Callback(posttask=posttask):
                results = list(dask.compute(*tasks, scheduler=self.scheduler))
        finally:
            with state.running:  # in-process tasks still running finish before anything is raised
                state.running.wait_for(lambda: state.active == 0, timeout=600)
            _MAPS.pop(token, None)
        if state.failed:
            raise state.failed[0]
        return results


class _MapState:
    """In-process bookkeeping of one :meth:`TaskRunner.map`: tasks running, and the error that stops it."""

    def __init__(self) -> None:
        self.running = threading.Condition()
        self.active = 0
        self.failed: list[BaseException] = []


_MAPS: dict[str, _MapState] = {}


def _guarded(token: str, call: Callable) -> Any:
    """Run one task, unless its map has been stopped (tasks in other processes just run)."""
    state = _MAPS.get(token)
    if state is None:
        return call()
    with state.running:
        if state.failed:
            return None
        state.active += 1
    try:
        return call()
    finally:
        with state.running:
            state.active -= 1
            state.running.notify_all()
