"""Where a job's steps run: in process, in subprocesses (the default), or on celery workers.

Every job gets the executor ``finsup``, whose run config picks one of three:

.. code-block:: yaml

    execution:
      config:
        celery:            # or multiprocess: {} / in_process: {}
          broker: {env: FINSUP_CELERY_BROKER_URL}

A run without an ``execution`` block takes the job's default, read when the
definitions load: ``FINSUP_EXECUTOR_<JOB>`` (the job name upper-cased, e.g.
``FINSUP_EXECUTOR_NIGHTLY_RECONCILIATION=celery``), else ``FINSUP_EXECUTOR``,
else ``multiprocess`` (what ``finsup dev`` has always run; ``finsup demo`` runs
in process). Set them alike in the webserver's, the daemon's and the run
workers' environment.

Celery workers run ``celery -A finsup_dagster.executors:app worker -Q QUEUES``
(queues in ``finsup_dagster.queues``); the broker is ``FINSUP_CELERY_BROKER_URL``
for the runs and the workers alike. The URL carries the broker's password, so a
run's default config names the variable (``{env: ...}``) rather than copying it
into the run's stored config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import dagster as dg
from dagster_celery import celery_executor

from finsup_dagster import queues

if TYPE_CHECKING:
    from celery import Celery

KINDS: Final = ("multiprocess", "in_process", "celery")
DEFAULT_KIND: Final = "multiprocess"
BROKER_ENV: Final = "FINSUP_CELERY_BROKER_URL"
BACKEND_ENV: Final = "FINSUP_CELERY_BACKEND_URL"
# RabbitMQ's own default account on this machine; anywhere else set FINSUP_CELERY_BROKER_URL.
LOCAL_BROKER: Final = "pyamqp://guest:guest@127.0.0.1:5672//"
# Results come back to the run that sent the step over the broker itself: nothing more to run.
DEFAULT_BACKEND: Final = "rpc://"

_EXECUTORS: Final[Mapping[str, dg.ExecutorDefinition]] = {
    "multiprocess": dg.multiprocess_executor,
    "in_process": dg.in_process_executor,
    "celery": celery_executor,
}


def kind_for(job_name: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The job's default executor: FINSUP_EXECUTOR_<JOB>, else FINSUP_EXECUTOR, else multiprocess.

    ``None``: the executor of jobs that name none (the UI's ad hoc materialisations).
    """
    env = os.environ if environ is None else environ
    var = f"FINSUP_EXECUTOR_{job_name.upper()}" if job_name else "FINSUP_EXECUTOR"
    kind = env.get(var) or env.get("FINSUP_EXECUTOR") or DEFAULT_KIND
    if kind not in KINDS:
        source = var if env.get(var) else "FINSUP_EXECUTOR"
        raise ValueError(f"{source}={kind!r}: the executor is one of {', '.join(KINDS)}")
    return kind


def celery_settings() -> dict[str, Any]:
    """What both sides of the broker must agree on: the celery app's own settings."""
    return {
        # A step without a queue tag goes to the ledger queue, not celery's "dagster".
        "task_default_queue": queues.DEFAULT,
        # One step at a time per worker process, taken when it starts, not reserved ahead:
        # a long dbt build must not hold back the short steps queued behind it.
        "worker_prefetch_multiplier": 1,
    }


def celery_run_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The celery block of a run's config, with the broker named by its variable when set."""
    env = os.environ if environ is None else environ
    broker: str | dict[str, str] = {"env": BROKER_ENV} if env.get(BROKER_ENV) else LOCAL_BROKER
    backend: str | dict[str, str] = (
        {"env": BACKEND_ENV} if env.get(BACKEND_ENV) else DEFAULT_BACKEND
    )
    return {"broker": broker, "backend": backend, "config_source": celery_settings()}


def _default_config(kind: str) -> dict[str, Any]:
    return {kind: celery_run_config() if kind == "celery" else {}}


def _requirements(config: Mapping[str, object]) -> Sequence[dg.ExecutorRequirement]:
    # Steps in other processes rebuild the job and read the run from a shared instance.
    return [] if "in_process" in config else dg.multiple_process_executor_requirements()


def _create(init_context: dg.InitExecutorContext) -> dg.Executor:
    kind, config = next(iter(init_context.executor_config.items()))
    chosen = _EXECUTORS[kind]
    assert isinstance(config, Mapping)  # the selector's branch: its executor's own config
    return chosen.executor_creation_fn(  # type: ignore[misc]
        dg.InitExecutorContext(
            job=init_context.job,
            executor_def=chosen,
            executor_config=config,
            instance=init_context.instance,
        )
    )


def executor_for(job_name: str | None) -> dg.ExecutorDefinition:
    """The executor ``finsup`` with the job's default (see the module docstring)."""
    from finsup_dagster.settings import load_secrets_file

    # Jobs are built when their module is imported, before definitions.py loads the
    # secrets file: FINSUP_EXECUTOR* and the broker URL may be set only there.
    load_secrets_file()
    return dg.ExecutorDefinition(
        name="finsup",
        config_schema=dg.Field(
            dg.Selector({kind: ex.config_schema.as_field() for kind, ex in _EXECUTORS.items()}),
            default_value=_default_config(kind_for(job_name)),
        ),
        executor_creation_fn=_create,
        requirements=_requirements,
        description=(
            "Runs steps in process, in subprocesses or on celery workers, chosen by the run's "
            "config or FINSUP_EXECUTOR_<JOB> / FINSUP_EXECUTOR (finsup_dagster/executors.py)."
        ),
    )


def make_celery_app() -> Celery:
    """The workers' celery app: the broker and settings the runs send steps with."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    from finsup_dagster.settings import load_secrets_file

    # The broker URL (with its password) may sit in FINSUP_SECRETS_FILE, as the
    # definitions read it; the worker needs it before any definition loads.
    load_secrets_file()
    broker = os.environ.get(BROKER_ENV) or LOCAL_BROKER
    backend = os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    executor = CeleryExecutor.for_cli(
        broker=broker,
        backend=backend,
        # Imported once by the worker before it forks its pool processes: each step, and
        # a pool process started again after one died, begins with the definitions loaded.
        include=["finsup_dagster.definitions"],
        config_source=celery_settings(),
    )
    celery = make_app(executor.app_args())
    create_task(celery)  # the task that runs one step: dagster_celery's execute_plan
    return celery


def __getattr__(name: str) -> Any:
    # `celery -A finsup_dagster.executors:app` builds the app on first use only: the
    # definitions import this module, and they need no celery app (nor celery itself).
    if name == "app":
        app = make_celery_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
