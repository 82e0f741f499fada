"""
### The watch folder: one `lecture_to_pdf` run per video

Waits for a file in **`airflow/data/input`** to finish copying, claims it (with any other file
that is ready) and starts one run of `lecture_to_pdf` for each claimed video:

```
wait_for_video (waits, then claims) → start_lecture_to_pdf (one per video)
```

Runs of `lecture_to_pdf` overlap, so a lecture dropped while a batch is being processed starts
at once instead of waiting for the batch; the Airflow pools bound how many heavy stages run
together. This DAG runs on `KONSPEKT_SCHEDULE` (`@continuous`: it waits again as soon as it has
started the runs). To process `input/` with other Params, trigger `lecture_to_pdf` itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag

from konspekt_dags.claims import LECTURE_DAG, claim_for_new_runs
from konspekt_dags.labels import claimed_label
from konspekt_dags.sensors import InboxSensor
from konspekt_dags.settings import settings


@dag(
    dag_id="lecture_inbox",
    schedule=settings.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one watcher; the runs it starts are lecture_to_pdf's
    doc_md=__doc__,
    tags=["konspekt", "inference"],
    user_defined_filters={"claimed_label": claimed_label},
    default_args={"retries": settings.retries, "retry_delay": timedelta(seconds=20)},
)
def lecture_inbox():
    # Waits, then claims what it saw (one task: one task start less before the first stage).
    wait_for_video = InboxSensor(
        task_id="wait_for_video",
        claim=claim_for_new_runs,
        fs_conn_id=settings.fs_conn_id,
        filepath="input",  # see InboxSensor: it wakes only for what claim would take
        poke_interval=settings.poke_seconds,
        deferrable=settings.sensor_mode == "deferrable",
        mode="reschedule" if settings.sensor_mode == "reschedule" else "poke",
        timeout=settings.sensor_timeout_seconds,
        soft_fail=True,
        retries=0,
    )
    # A failed start leaves its video to the next claim (it adopts videos whose run never began).
    TriggerDagRunOperator.partial(
        task_id="start_lecture_to_pdf", trigger_dag_id=LECTURE_DAG, wait_for_completion=False,
        skip_when_already_exists=True, execution_timeout=timedelta(minutes=5),
        map_index_template="{{ task.conf['claimed'] | claimed_label }}",
    ).expand_kwargs(wait_for_video.output)


lecture_inbox()
