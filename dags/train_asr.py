"""
### Fine-tune Whisper on your own lectures

Put a dataset in **`data/train/<dataset>/`**, Hugging Face *audiofolder* style: audio or
video clips (up to 30 s each) and a `metadata.csv` with the columns `file_name,text`:

```
data/train/lectures/metadata.csv     file_name,text
                                     clips/0001.wav,Today we talk about gradient descent.
data/train/lectures/clips/0001.wav   ...
```

Trigger this DAG with the dataset's folder name (the form below). It runs

```
read_data → make_batches → train → evaluate → export → register_model
```

* **read_data** checks every row (a missing file, an empty text, unreadable or over-long
  audio is reported in the log and skipped; the run fails only when more than
  `max_bad_fraction` of the rows are bad), extracts audio from videos, and splits the
  rows into train/validation by a hash of the file name (the same split on every rerun).
  An optional `split` column decides instead: `train`, `validation` (say, speakers held
  out) or `control` (general speech, never trained on, scored before and after).
* **make_batches** computes log-mel features and token labels into shards, cached in
  `data/train_cache/` and reused by any later run on the same data and base model.
* **train** fine-tunes `base_model` (AdamW, warm-up, gradient accumulation; bf16/fp16 on a
  GPU). A checkpoint every `ckpt_every` steps: a retry resumes where the crash left off.
  `freeze_encoder` trains the decoder only (the words: jargon, names): several times
  faster, and enough for a CPU. A CTranslate2 (faster-whisper) `base_model` folder is
  converted to transformers once, into `data/train_cache/base_models/`.
* **evaluate** measures the word error rate on the validation clips before and after.
* **export** writes `data/models/<run>/ct2`, a CTranslate2 model: give that path to the
  `lecture_to_pdf` DAG's `whisper_model` Param (in docker mode: `/data/models/<run>/ct2`).
* **register_model** records it in `data/models/registry.json` (run, base model, dataset, WER
  before and after, date, path) and updates the `konspekt-finetuned-whisper` asset:
  `whisper_model=latest-finetuned` then picks the newest model whose WER after training is
  below its base's (one that got worse, or has no WER, is never picked).

Read progress in **`data/logs/<run>/train.log`** (one line per logged step: step, epoch,
loss, learning rate, samples/s; then the WER lines), with `metrics.csv` and `loss.png` next
to it. The base model comes from the model cache or a local folder: task containers have no network.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from konspekt import registry
from konspekt.layout import safe_name
from konspekt_dags.assets import FINETUNED_WHISPER, register
from konspekt_dags.factory import stage_task
from konspekt_dags.params import check_params_task, check_train_params
from konspekt_dags.settings import CONTAINER_DATA, CONTAINER_TRAIN_DATA, settings

RUN_DIR = f"{CONTAINER_DATA}/train_runs/{{{{ run_id | folder_name }}}}"
MODEL = ("--base-model", "{{ params.base_model }}", "--language", "{{ params.language }}")


@dag(
    dag_id="train_asr",
    schedule=None,  # trigger it from the UI (or `airflow dags trigger train_asr -c '{...}'`)
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one training run at a time: they share the GPU
    doc_md=__doc__,
    tags=["konspekt", "training"],
    user_defined_filters={"folder_name": safe_name},
    default_args={"retries": settings.retries, "retry_delay": timedelta(seconds=30)},
    params={
        "dataset": Param(settings.train_dataset, type="string", minLength=1,
                         description="folder name under data/train/ (metadata.csv + clips)"),
        "base_model": Param(settings.train_base_model, type="string",
                            description="Whisper: a transformers hub id already in the cache, or a local folder "
                                        "(transformers or CTranslate2)"),
        "language": Param(settings.train_language, type="string", description="the dataset's language (ISO code)"),
        "epochs": Param(settings.train_epochs, type="number", minimum=0),
        "max_steps": Param(settings.train_max_steps, type="integer", minimum=0,
                           description="optimizer steps; 0 = as many as the epochs take"),
        "learning_rate": Param(settings.train_learning_rate, type="number", exclusiveMinimum=0),
        "warmup_steps": Param(settings.train_warmup_steps, type="integer", minimum=0),
        "batch_size": Param(settings.train_batch_size, type="integer", minimum=1),
        "grad_accum": Param(settings.train_grad_accum, type="integer", minimum=1,
                            description="micro-batches per optimizer step"),
        "device": Param(settings.device, enum=["auto", "cpu", "cuda"]),
        "log_every": Param(settings.train_log_every, type="integer", minimum=1,
                           description="steps between train.log lines"),
        "eval_every": Param(settings.train_eval_every, type="integer", minimum=0,
                            description="steps between validation losses (0: at the end only)"),
        "ckpt_every": Param(settings.train_ckpt_every, type="integer", minimum=1,
                            description="steps between checkpoints (a retry resumes from the last)"),
        "freeze_encoder": Param(settings.train_freeze_encoder, type="boolean",
                                description="train the decoder only: faster, fits a CPU; the audio side stays as is"),
        "val_fraction": Param(settings.train_val_fraction, type="number", minimum=0, maximum=0.5),
        "max_bad_fraction": Param(settings.train_max_bad_fraction, type="number", minimum=0, maximum=1),
    },
)
def train_asr():
    # Each step's own options; the order comes from konspekt.registry.
    options = {
        "training.read_data": ("--dataset", f"{CONTAINER_TRAIN_DATA}/{{{{ params.dataset }}}}",
                               "--val-fraction", "{{ params.val_fraction }}",
                               "--max-bad-fraction", "{{ params.max_bad_fraction }}"),
        "training.batches": MODEL,
        "training.train": (*MODEL, "--epochs", "{{ params.epochs }}", "--max-steps", "{{ params.max_steps }}",
                           "--learning-rate", "{{ params.learning_rate }}",
                           "--warmup-steps", "{{ params.warmup_steps }}",
                           "--batch-size", "{{ params.batch_size }}", "--grad-accum", "{{ params.grad_accum }}",
                           "--device", "{{ params.device }}", "--log-every", "{{ params.log_every }}",
                           "--eval-every", "{{ params.eval_every }}", "--ckpt-every", "{{ params.ckpt_every }}",
                           "--freeze-encoder", "{{ params.freeze_encoder }}"),
        "training.evaluate": (*MODEL, "--device", "{{ params.device }}"),
        "training.export": (*MODEL, "--dataset", "{{ params.dataset }}"),
    }
    steps = {step.name: stage_task(step.name, RUN_DIR, *options.get(step.name, ()), bad_input="fail")
             for step in registry.TRAINING}
    for step in registry.TRAINING:
        for upstream in step.after:
            steps[upstream] >> steps[step.name]
    first = [steps[step.name] for step in registry.TRAINING if not step.after]
    check_params_task(check_train_params) >> first

    # Here, not in export: the export's container may write only its own models/<run>/ folder.
    @task(execution_timeout=timedelta(minutes=5), outlets=[FINETUNED_WHISPER])
    def register_model() -> dict:
        """Record the exported model in data/models/registry.json (whisper_model=latest-finetuned picks the
        newest whose WER beat its base's) and update the konspekt-finetuned-whisper asset."""
        context = get_current_context()
        return register(context["run_id"], context["params"]["dataset"], context["outlet_events"])

    last = [steps[step.name] for step in registry.TRAINING if not steps[step.name].downstream_task_ids]
    last >> register_model()


train_asr()
