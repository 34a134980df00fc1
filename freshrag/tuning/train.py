"""The training child: `python -m freshrag.tuning.train SPEC.json`.

A process of its own, beneath serving (niced, SCHED_IDLE, and held stopped while the
service works: freshrag/tuning/yielding.py), so that a crash or a kill cannot touch the
serving process, and gone with the service. It trains a copy of the base model with
sentence-transformers' own trainer (MultipleNegativesRankingLoss: in-batch negatives, no
duplicate texts in a batch), stops at `steps` or `max_seconds` of training, then
interpolates the tuned weights with the base ones (`keep` of the tuned side: a tuned
model forgets what the base knew; the average keeps most of both, as WiSE-FT does), and
writes the folder under a temporary name that becomes the final one only when complete.
Progress goes to `progress_file` as one JSON object, rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from freshrag.tuning.yielding import RunningClock
from retrieval.background import die_with_parent, lower_priority


@dataclass(slots=True)
class TuneSpec:
    base_model: str  # a name the encoders resolve, or a folder
    pairs_file: str  # JSONL of {"anchor", "positive", "kind"}
    out_dir: str  # the final folder; written as out_dir + ".partial" first
    progress_file: str
    steps: int = 150
    max_seconds: float = 900.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    keep: float = 0.5  # weight of the tuned model in the interpolation (1: tuned only)
    max_seq_length: int = 256
    threads: int = 0  # torch threads; 0: every core
    nice: int = 10
    idle: bool = False  # SCHED_IDLE: a core only when nothing else wants one
    paused_file: str = ""  # where the service counts the seconds it held this process
    seed: int = 0
    card: dict[str, Any] = field(default_factory=dict)  # what the corpus was, for the card

    @classmethod
    def load(cls, path: Path) -> TuneSpec:
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


def _progress(spec: TuneSpec, **fields: Any) -> None:
    tmp = Path(spec.progress_file + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), **fields}))
    tmp.replace(spec.progress_file)


def _interpolate(model: Any, base_state: dict[str, Any], keep: float) -> None:
    if keep >= 1.0:
        return
    state = model.state_dict()
    for name, tensor in state.items():
        if name in base_state and tensor.is_floating_point():
            tensor.mul_(keep).add_(base_state[name], alpha=1.0 - keep)


def blend(tuned: str, base: str, keep: float, out: str) -> None:
    """A copy of the `tuned` folder whose weights are `keep` × tuned + (1 − keep) × base:
    one training run, several points between the two models (bench/tune.py compares them)."""
    from sentence_transformers import SentenceTransformer

    from retrieval.encoders import resolve_model_path

    model = SentenceTransformer(tuned, device="cpu")
    base_state = SentenceTransformer(resolve_model_path(base), device="cpu").state_dict()
    _interpolate(model, base_state, keep)
    model.save(out)
    facts = json.loads((Path(tuned) / "freshrag-tune.json").read_text())
    (Path(out) / "freshrag-tune.json").write_text(json.dumps({**facts, "keep": keep}, indent=1))


def _card(spec: TuneSpec, pairs: int, kinds: dict[str, int], steps: int, seconds: float) -> str:
    c = spec.card
    return "\n".join(
        [
            f"# {Path(spec.out_dir).name}",
            "",
            "A corpus-adapted copy of a sentence-transformers model, made by `freshrag tune`.",
            "",
            f"- base model: {c.get('base_label', spec.base_model)}",
            f"- trained on: {c.get('scope', '?')}: {c.get('documents', '?')} documents, "
            f"{c.get('chunks', '?')} chunks",
            f"- pairs: {pairs} ({', '.join(f'{k} {n}' for k, n in kinds.items())}), mined "
            "from the chunks' own structure; no evaluation question or label",
            f"- objective: MultipleNegativesRankingLoss, batch {spec.batch_size}, learning "
            f"rate {spec.learning_rate:g}, {steps} steps in {seconds:.0f} s on CPU",
            f"- weights: {spec.keep:g} × tuned + {1 - spec.keep:g} × base",
            f"- made: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
            "",
            "Compare before you switch: `freshrag reindex --model <this folder>`, then "
            "`freshrag eval --generation standby`.",
            "",
        ]
    )


def train(spec: TuneSpec) -> dict[str, Any]:
    """Trains, interpolates and saves; returns what the card says, as data."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    from retrieval.encoders import resolve_model_path

    if spec.threads:
        torch.set_num_threads(spec.threads)
    rows = [json.loads(line) for line in Path(spec.pairs_file).read_text().splitlines() if line]
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    data = Dataset.from_dict(
        {"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]}
    )
    path = resolve_model_path(spec.base_model)
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = min(model.max_seq_length or spec.max_seq_length, spec.max_seq_length)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # The budget counts the time this process ran, not the time the service held it
    # stopped while it served (freshrag/tuning/yielding.py).
    clock = RunningClock(spec.paused_file)
    _progress(spec, state="training", step=0, steps=spec.steps, seconds=0.0)

    class Budget(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            seconds = clock.seconds()
            _progress(
                spec, state="training", step=state.global_step, steps=spec.steps, seconds=seconds
            )
            if seconds >= spec.max_seconds:
                control.should_training_stop = True
            return control

    work = Path(spec.out_dir + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "trainer"),
        max_steps=spec.steps,
        per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        warmup_steps=max(1, spec.steps // 10),
        lr_scheduler_type="linear",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=spec.seed,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=data,
        loss=losses.MultipleNegativesRankingLoss(model),
        callbacks=[Budget()],
    )
    trainer.train()
    steps = trainer.state.global_step
    seconds = clock.seconds()
    _progress(spec, state="saving", step=steps, steps=spec.steps, seconds=seconds)
    _interpolate(model, base_state, spec.keep)
    shutil.rmtree(work / "trainer", ignore_errors=True)
    model.save(str(work))
    (work / "README.md").write_text(_card(spec, len(rows), kinds, steps, seconds))
    facts = {
        **spec.card,
        "pairs": len(rows),
        "kinds": kinds,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "keep": spec.keep,
    }
    (work / "freshrag-tune.json").write_text(json.dumps(facts, indent=1))
    shutil.rmtree(spec.out_dir, ignore_errors=True)
    work.rename(spec.out_dir)  # complete or absent: never a half-written model folder
    _progress(spec, state="done", step=steps, steps=spec.steps, seconds=seconds, out=spec.out_dir)
    return facts


def main(argv: list[str]) -> int:
    spec = TuneSpec.load(Path(argv[1]))
    die_with_parent()  # a service killed while it holds this process stopped
    # Before torch starts its thread pool: the policy is per thread, and inherited.
    lower_priority(spec.nice, spec.idle)
    try:
        train(spec)
    except BaseException as exc:  # the parent reads why from the progress file
        shutil.rmtree(spec.out_dir + ".partial", ignore_errors=True)
        _progress(spec, state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
