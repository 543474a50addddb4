"""``essencekit train-encoder``: fine-tune e4e into an essence encoder (TargetCLIP's variant b)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape

from ..training.settings import DEFAULTS, SCHEDULE_DEFAULTS  # the one declaration of the defaults (no torch)
from .options import Aligner, Backend, ClipInput, Encoder, Generator, Json, NoAlign, add_command, exit_statuses
from .output import err, out, print_json, print_note, progress_bar, progress_enabled

HELP = """Train an essence encoder: e4e fine-tuned so that one forward pass gives a target's essence.

TRAIN_DIR holds the training photos (faces are aligned once and cached; unusable photos are
skipped and listed). Checkpoints go to the run folder -o: best.pt (lowest validation loss on
--val), last.pt (--resume RUN_DIR continues from it exactly), step-N.pt every --checkpoint-every
steps, and metrics.jsonl. Then: `essencekit extract TARGET --method encoder --encoder RUN/best.pt`.

Several GPUs or machines: start the same command with torchrun (`torchrun --nproc-per-node 8
-m essencekit train-encoder ...`); --batch-size is per process. See docs/encoder.md."""


class _Display:
    """Training progress on stderr: a Rich bar with the running losses for a person at a
    terminal, a line every tenth of the run otherwise; quiet on every rank but 0."""

    def __init__(self, steps: int, enabled: bool):
        self.steps, self.enabled = steps, enabled
        self.progress = self.task = None
        self._next_log = 0

    def __enter__(self):
        if self.enabled:
            from rich.progress import TextColumn

            self.progress = progress_bar(TextColumn("{task.fields[losses]}"))
            self.progress.__enter__()
            self.task = self.progress.add_task("training", total=self.steps, losses="")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    @staticmethod
    def _losses(terms) -> str:
        return (f"loss {terms.loss:.4f} (transfer {terms.similarity:.4f}, consistency {terms.consistency:.4f}, "
                f"norm {terms.norm:.3f})")

    def step(self, report) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=report.step, losses=self._losses(report.terms))
        elif report.step >= self._next_log or report.step == report.steps:
            err.print(f"step {report.step}/{report.steps}  {self._losses(report.terms)}  {report.seconds:.2f} s/step",
                      highlight=False)
            self._next_log = report.step + max(1, report.steps // 10)

    def validation(self, report) -> None:
        mark = " (best so far: best.pt)" if report.best else ""
        grid = f"; samples {report.grid}" if report.grid else ""
        line = f"validation at step {report.step}: {self._losses(report.terms)}{mark}{grid}"
        (self.progress.console if self.progress is not None else err).print(escape(line), highlight=False)


def train_encoder(
    train_dir: Path = typer.Argument(..., metavar="TRAIN_DIR", help="Folder of training photos (faces)."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", metavar="RUN_DIR", help="Run folder for checkpoints and logs (a new run)."
    ),
    val_dir: Optional[Path] = typer.Option(
        None, "--val", metavar="VAL_DIR",
        help="Folder of validation photos: chooses best.pt and draws sample grids (without it best.pt is the final "
        "weights).",
    ),
    resume: Optional[Path] = typer.Option(
        None, "--resume", metavar="RUN_DIR", help="Continue the stopped run in RUN_DIR exactly (instead of -o)."
    ),
    steps: int = typer.Option(DEFAULTS.steps, "--steps", help="Training steps (with --resume: the total)."),
    lr: float = typer.Option(DEFAULTS.lr, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size", metavar="N", help="Targets per step, per process."),
    optimizer: Literal["ranger", "adamw"] = typer.Option(
        DEFAULTS.optimizer, "--optimizer", help="Ranger (RAdam + Lookahead, the reference's) or AdamW."
    ),
    lambda_consistency: float = typer.Option(DEFAULTS.lambda_consistency, "--lambda-consistency",
                                             help="Weight of the consistency loss."),
    lambda_norm: float = typer.Option(DEFAULTS.lambda_norm, "--lambda-norm", help="Weight of each direction's norm."),
    no_flip: bool = typer.Option(not DEFAULTS.flip, "--no-flip", help="No random horizontal flips of the targets."),
    batchnorm: Literal["frozen", "train"] = typer.Option(
        DEFAULTS.batchnorm, "--batchnorm",
        help="BatchNorm on e4e's running statistics (frozen) or on each batch's (train, as the reference).",
    ),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the data order and flips."),
    val_every: Optional[int] = typer.Option(
        None, "--val-every", metavar="N", help="Validate every N steps (default: so that validation costs about 10 % of the time)."
    ),
    checkpoint_every: int = typer.Option(SCHEDULE_DEFAULTS.checkpoint_every, "--checkpoint-every", metavar="N",
                                         help="Write step-N.pt and last.pt every N steps."),
    samples: int = typer.Option(SCHEDULE_DEFAULTS.samples, "--samples", metavar="N",
                                help="Validation targets in each sample grid (0: none)."),
    sources: Optional[str] = typer.Option(
        None, "--sources", metavar="FILE", help="Source W+ latents [S, 18, 512] (default: encoder-sources)."
    ),
    clip: Optional[str] = typer.Option(None, "--clip", metavar="NAME", help="CLIP model (default: ViT-B/32)."),
    clip_input: ClipInput = "raw",
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", metavar="PATH", help="CLIP weights file."),
    encoder: Encoder = None,
    generator: Generator = None,
    no_align: NoAlign = False,
    aligner: Aligner = None,
    backend: Backend = None,
    json_: Json = False,
):
    """Train an essence encoder (see the command's help)."""
    from ..distributed import launch_environment
    from ..training.api import train_encoder as run
    from ..training.trainer import TrainingInterrupted

    main = launch_environment().is_main
    if resume is not None and output is not None and output.resolve() != resume.resolve():
        raise typer.BadParameter(f"--resume continues the run in {resume}; leave out -o or give the same folder",
                                 param_hint="'-o'")
    if resume is None and output is None:
        raise typer.BadParameter("give the run folder: -o RUN_DIR for a new run, --resume RUN_DIR to continue one",
                                 param_hint="'-o'")
    run_dir = resume if resume is not None else output
    with _Display(steps, main and progress_enabled()) as display:
        try:
            result = run(
                train_dir, run_dir, val_dir=val_dir, resume=resume is not None, encoder=encoder, generator=generator, clip=clip,
                clip_weights=clip_weights, clip_input=clip_input, sources=sources, device=backend, align=not no_align,
                aligner=aligner, val_every=val_every, checkpoint_every=checkpoint_every, samples=samples,
                progress=display.step if main else None, on_validation=display.validation if main else None,
                notify=print_note if main else None,
                steps=steps, lr=lr, batch_size=batch_size, optimizer=optimizer, lambda_consistency=lambda_consistency,
                lambda_norm=lambda_norm, flip=not no_flip, batchnorm=batchnorm, seed=seed,
            )
        except TrainingInterrupted as stop:
            if main and stop.last is not None:
                err.print(f"[yellow]Stopped after step {stop.steps_done}: saved {escape(str(stop.last))}; continue "
                          f"with --resume {escape(str(run_dir))}[/yellow]", highlight=False)
            if stop.signal_number == signal.SIGTERM:  # a scheduler's stop: the status scripts expect of it
                from . import EXIT_TERMINATED

                raise typer.Exit(EXIT_TERMINATED) from None
            raise
    if not main:
        return
    summary = {
        "run": str(run_dir), "best": str(result.best), "last": str(result.last), "steps_done": result.steps_done,
        "best_val_loss": result.best_val_loss, "train": result.train.as_dict() if result.train else None,
    }
    if json_:
        print_json(summary)
        return
    best = f", best validation loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else ""
    out.print(f"trained {result.steps_done} steps{best}: {escape(str(result.best))}", highlight=False)
    out.print(f"next: essencekit extract TARGET --method encoder --encoder {escape(str(result.best))}",
              highlight=False)


def register(app: typer.Typer) -> None:
    add_command(app, "train-encoder", train_encoder, exit_statuses(
        stopped="the current step finishes and last.pt is saved; --resume continues"), help=HELP)

