"""``essencekit extract``: find the essence of target images by optimisation (TargetCLIP)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape

from ..extraction.settings import DEFAULTS  # the one declaration of the defaults (no torch)
from .options import (
    Aligner,
    Backend,
    BatchSize,
    ClipInput,
    Generator,
    Json,
    NoAlign,
    Overwrite,
    add_command,
    exit_statuses,
)
from .output import err, out, print_json, print_note, progress_enabled

ESSENCE_SUFFIXES = (".pt", ".safetensors")


def _expand(targets: list[Path]) -> list[Path]:
    """The TARGET arguments with glob patterns that name no file (a quoted ``"obama/*.jpg"``)
    replaced by their sorted matches."""
    from ..extraction.targets import is_pattern, photos_of

    return [photo for target in targets for photo in (photos_of(target)[0] if is_pattern(target) else [target])]


def one_target(targets: list[Path], output: Path | None, text: str | None) -> bool:
    """Whether the TARGET arguments are photos of ONE target (one essence) rather than one target
    each. -o decides when given: a .pt/.safetensors file is one essence, a folder one essence per
    photo. Without -o, a folder argument is one target, separate files one target each. --text
    always makes one target."""
    if text is not None:
        return True
    if output is not None:
        is_file = output.suffix.lower() in ESSENCE_SUFFIXES and not output.is_dir()
        return is_file and (len(targets) > 1 or any(t.is_dir() for t in targets))
    return any(t.is_dir() for t in targets)


def _photo_files(targets: list[Path]) -> list[Path]:
    """The TARGET arguments with every folder replaced by its photos (sorted by name)."""
    from ..extraction.targets import photos_of

    return [photo for t in targets for photo in (photos_of(t)[0] if t.is_dir() else [t])]


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "text"


def _one_target_name(targets: list[Path], output: Path | None, text: str | None) -> str:
    if output is not None and output.suffix:
        return output.stem
    if targets:
        return targets[0].resolve().name if targets[0].is_dir() else targets[0].stem
    return _slug(text or "")


def _plan_outputs(targets: list[Path], output: Path | None, preview: Path | None, overwrite: bool,
                  name: str | None = None):
    """(essence path, preview path or None) per target; refuses clashes and existing files.
    ``name``: the targets are one target of that name (one essence; -o a file, or a folder that
    gets ``<name>.pt``)."""
    from ..atomic import check_output_file
    from ..errors import EssencekitError, OptionError

    if name is not None:
        if output is None or (not output.suffix or output.is_dir()):
            paths = [(output if output is not None else Path.cwd()) / f"{name}.pt"]
        else:
            paths = [output]
        targets = [Path(name)]
    elif len(targets) == 1 and (output is None or output.suffix):
        paths = [output if output is not None else Path.cwd() / f"{targets[0].stem}.pt"]
    else:
        folder = output if output is not None else Path.cwd()
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"with several targets the output is a folder, and {folder} is a file",
                              parameter="output")
        paths = [folder / f"{t.stem}.pt" for t in targets]
    for path in paths:
        if path.suffix.lower() not in ESSENCE_SUFFIXES:
            raise OptionError(f"an essence is written as .pt or .safetensors (`essencekit export` writes .npy), "
                              f"got {path}", parameter="output")
    previews = [None] * len(targets)
    if preview is not None:
        if preview.suffix.lower() != ".png":
            raise OptionError(f"the contact sheet is a .png file, got {preview}", parameter="preview")
        previews = (
            [preview] if len(targets) == 1
            else [preview.with_name(f"{preview.stem}-{t.stem}{preview.suffix}") for t in targets]
        )
    planned = paths + [p for p in previews if p is not None]
    seen: dict[Path, int] = {}
    for index, path in enumerate(planned):
        key = path.resolve()
        if key in seen:
            raise EssencekitError(f"two outputs would be written to {path} (targets with the same name?); "
                                  "rename a target or use separate runs")
        seen[key] = index
        if path.exists() and not overwrite and not path.is_dir():
            raise EssencekitError(f"{path} already exists; pass --overwrite to replace it")
        check_output_file(path, parameter="output" if index < len(paths) else "preview")
    return paths, previews


class _Display:
    """Progress on stderr: a live Rich bar for a person at a terminal, a few log lines otherwise."""

    def __init__(self, steps: int, label: str, backend_name: str, size: int, enabled: bool):
        from ..extraction.eta import EtaEstimator

        self.steps, self.label, self.backend_name, self.size = steps, label, backend_name, size
        self.eta = EtaEstimator(steps)
        self.enabled = enabled
        self.progress = None
        self.task = None
        self._next_log = 0

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                console=err, transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(escape(self.label), total=self.steps, losses="", eta="?")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def phase(self, name: str) -> None:
        text = {
            "sources": "preparing the sources", "target": "encoding the target", "optimise": "optimising",
            "held-out": "choosing among restarts on the held-out sources", "preview": "rendering the preview",
        }.get(name, name)
        if self.progress is not None:
            self.progress.update(self.task, description=escape(f"{self.label}: {text}"))
        elif name != "optimise":
            err.print(f"[dim]{escape(self.label)}: {escape(text)}[/dim]", highlight=False)

    def step(self, report) -> None:
        from ..extraction.eta import format_duration

        self.eta.update(report.seconds)
        best = int(report.loss.argmin())
        losses = (f"loss {float(report.loss[best]):.4f} (transfer {float(report.transfer[best]):.4f}, "
                  f"consistency {float(report.consistency[best]):.4f})")
        eta = format_duration(self.eta.remaining())
        if self.progress is not None:
            self.progress.update(self.task, completed=report.step + 1, losses=losses, eta=eta)
        elif report.step + 1 >= self._next_log or report.step + 1 == report.steps:
            err.print(f"{escape(self.label)}: step {report.step + 1}/{report.steps}  {losses}  ETA {eta}",
                      highlight=False)
            self._next_log = report.step + 1 + max(1, report.steps // 10)
        if self.eta.should_warn():
            err.print(
                f"[yellow]This extraction will take about {format_duration(self.eta.remaining())} "
                f"({self.eta.per_step:.1f} s per step on {escape(self.backend_name)} at {self.size} px). "
                "--fast, fewer --num-sources or --restarts, or a GPU (--backend cuda or mps) make it much "
                "quicker.[/yellow]",
                highlight=False,
            )


def _summary(target, path: Path, essence, preview: Path | None) -> dict:
    info = essence.info()
    return {
        "target": str(target),
        "output": str(path),
        "preview": str(preview) if preview else None,
        "recommended_strength": essence.recommended_strength,
        "chosen_restart": int(info.get("chosen_restart", 0)),
        "selection": info.get("selection"),
        "loss": float(info["loss"]),
        "transfer_loss": float(info["transfer_loss"]),
        "consistency_loss": float(info["consistency_loss"]),
        "held_out_loss": float(info["held_out_loss"]) if "held_out_loss" in info else None,
        "restarts": info.get("restarts"),
        "seed": int(info["seed"]),
        "steps_done": int(info["steps_done"]),
        "seconds": float(info["seconds"]),
        "interrupted": info.get("interrupted") == "true",
    }


def extract(
    targets: Optional[list[Path]] = typer.Argument(
        None, metavar="TARGET",
        help="Target image(s): photos, paintings, drawings; files, folders or quoted globs. Several photos make ONE "
        "essence (the normalised mean of their CLIP embeddings) with -o FILE.pt/.safetensors, with --text, or, "
        "without -o, from a folder; with -o a folder (or files without -o) one essence per photo.",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output",
        help="Essence file (.pt or .safetensors); default <target stem>.pt here. With several photos: a file makes "
        "one essence of them all, a folder one essence per photo.",
    ),
    text: Optional[str] = typer.Option(
        None, "--text", metavar="TEXT",
        help="A target in words (CLIP's text encoder), alone or with photos (one essence). Random starts without a photo.",
    ),
    text_weight: Optional[float] = typer.Option(
        None, "--text-weight", metavar="W",
        help="With photos and --text: the text's weight from 0 to 1 (default 0.5) in the normalised weighted mean "
        "of the photos' and the text's normalised embeddings.",
    ),
    steps: int = typer.Option(DEFAULTS.steps, "--steps", help="Optimisation steps."),
    lr: float = typer.Option(DEFAULTS.lr, "--lr", help="Adam learning rate of the direction (and of the coefficients)."),
    weight_decay: float = typer.Option(DEFAULTS.weight_decay, "--weight-decay", help="Adam weight decay (coupled, not AdamW)."),
    lambda_transfer: float = typer.Option(DEFAULTS.lambda_transfer, "--lambda-transfer", help="Weight of the transfer loss."),
    lambda_consistency: float = typer.Option(DEFAULTS.lambda_consistency, "--lambda-consistency", help="Weight of the consistency loss."),
    consistency: Literal["raw", "normalized"] = typer.Option(
        DEFAULTS.consistency, "--consistency", help="CLIP deltas un-normalised (published recipe) or L2-normalised first."
    ),
    sources: str | None = typer.Option(
        None, "--sources", metavar="FILE|DIR|celebs",
        help="Source latents: a W+ latents file, a folder of face photos (e4e), or 'celebs'. Default: sampled.",
    ),
    num_sources: int = typer.Option(DEFAULTS.num_sources, "--num-sources", help="Training sources N."),
    held_out: int = typer.Option(DEFAULTS.held_out, "--held-out", help="Held-out sources M that choose among restarts (0: none)."),
    restarts: int = typer.Option(DEFAULTS.restarts, "--restarts", help="Directions K optimised at once; the best is kept."),
    init: Literal["auto", "inversion", "random"] = typer.Option(
        DEFAULTS.init, "--init", help="Start of restart 1: the e4e inversion of the target (auto: when there is a face)."
    ),
    coefficients: Literal["sign", "adam", "fixed"] = typer.Option(
        DEFAULTS.coefficients, "--coefficients", help="Per-source coefficient updates: reference sign steps, Adam, or fixed at 1."
    ),
    clip: Optional[str] = typer.Option(
        None, "--clip", metavar="NAME",
        help="CLIP model: ViT-B/32 (the default: the highest-priority registered variant), RN50 or a plugin's.",
    ),
    clip_input: ClipInput = "raw",
    fast: bool = typer.Option(DEFAULTS.fast, "--fast", help="Render at most 256 px while optimising (approximate; CPU/MPS)."),
    batch_size: BatchSize = DEFAULTS.batch_size,
    backend: Backend = None,
    seed: int | None = typer.Option(None, "--seed", help="Random seed (recorded in the essence) for a repeatable run."),
    overwrite: Overwrite = False,
    preview: Path | None = typer.Option(
        None, "--preview", metavar="GRID.png", help="Write a contact sheet at the end."
    ),
    json_: Json = False,
    generator: Generator = None,
    clip_weights: Path | None = typer.Option(None, "--clip-weights", metavar="PATH", help="CLIP weights file."),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", metavar="PATH_OR_ARTIFACT",
        help="--method optimise: the e4e checkpoint that inverts faces (default: e4e-ffhq). --method encoder: the "
        "trained essence encoder (a train-encoder run's best.pt, or the run folder).",
    ),
    aligner: Aligner = None,
    no_align: NoAlign = False,
    method: Literal["optimise", "encoder"] = typer.Option(
        "optimise", "--method",
        help="optimise: TargetCLIP's per-target optimisation; encoder: one forward pass of a trained essence encoder "
        "(--encoder; the optimisation options do not apply).",
    ),
):
    """Find the essence of TARGET: a W+ direction that carries it onto any face (TargetCLIP)."""
    from ..errors import OptionError
    from ..extraction.api import ExtractionInterrupted, Extractor
    from ..extraction.settings import ExtractSettings
    from ..extraction.targets import check_text, resolve_target

    text, text_weight = check_text(text, text_weight)
    targets = _expand(list(targets or []))
    if not targets and text is None:
        raise OptionError("give one or more target photos, or --text", parameter="targets")
    combined = one_target(targets, output, text)
    name = _one_target_name(targets, output, text) if combined else None
    if not combined:
        targets = _photo_files(targets)  # a folder with -o a folder: one essence per photo
    if method == "encoder":
        if text is not None:
            raise OptionError("the essence encoder takes photos, not words: use --method optimise for a text target",
                              parameter="text")
        _extract_with_encoder(targets, output, encoder, backend, aligner, no_align, overwrite, json_, preview,
                              generator, name)
        return

    settings = ExtractSettings(
        steps=steps, lr=lr, weight_decay=weight_decay, lambda_transfer=lambda_transfer,
        lambda_consistency=lambda_consistency, consistency=consistency, num_sources=num_sources, held_out=held_out,
        restarts=restarts, init=init, coefficients=coefficients, fast=fast, batch_size=batch_size,
    )
    if seed is not None and seed < 0:
        from ..errors import OptionError

        raise OptionError(f"seed must be a whole number >= 0, got {seed}", parameter="seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    if combined:
        specs = [resolve_target(targets, text=text, text_weight=text_weight, name=name)]
        labels, shown = [name], [name]
    else:
        specs = [resolve_target(t) for t in targets]
        labels, shown = [t.name for t in targets], [str(t) for t in targets]
    if text is not None and not specs[0].photos and init == "inversion":
        raise OptionError("--init inversion starts from a target photo's inversion; a text alone has no photo: use "
                          "--init random or auto", parameter="init")
    if sources is not None and sources != "celebs" and not Path(sources).exists():
        from ..errors import EssencekitError

        raise EssencekitError(
            f"--sources {sources}: no such file or folder (give a W+ latents file, a folder of face photos, "
            "or 'celebs')"
        )
    paths, previews = _plan_outputs(targets, output, preview, overwrite, name)
    extractor = Extractor(
        generator=generator, clip=clip, clip_weights=clip_weights, clip_input=clip_input, encoder=encoder,
        device=backend, aligner=aligner, notify=print_note, text=text is not None,
    )
    size = 256 if fast and extractor.generator.size > 256 else extractor.generator.size
    summaries = []
    for label, target, path, grid, target_shown in zip(labels, specs, paths, previews, shown):
        try:
            with _Display(settings.steps, label, extractor.backend.name, size, progress_enabled()) as display:
                essence = extractor.run(
                    target, settings, sources=sources, seed=seed, progress=display.step, phase=display.phase
                )
        except ExtractionInterrupted as stop:
            if stop.essence is None:
                raise KeyboardInterrupt from None
            stop.essence.save(path)
            err.print(
                f"[yellow]Interrupted after {stop.steps_done} of {stop.steps} steps: saved the best essence so far to "
                f"{escape(str(path))}[/yellow]",
                highlight=False,
            )
            raise typer.Exit(130) from None
        essence.save(path)
        if grid is not None:
            extractor.write_preview(essence, grid)
        summary = _summary(target_shown, path, essence, grid)
        summaries.append(summary)
        if not json_:
            held = f", held-out loss {summary['held_out_loss']:.4f}" if summary["held_out_loss"] is not None else ""
            out.print(
                f"wrote {escape(str(path))}: restart {summary['chosen_restart'] + 1} of {settings.restarts}, "
                f"loss {summary['loss']:.4f}{held}, recommended strength {summary['recommended_strength']:.3f}"
                + (f"; preview {escape(str(grid))}" if grid is not None else ""),
                highlight=False,
            )
    if json_:
        print_json({"essences": summaries})


def _extract_with_encoder(targets, output, encoder, backend, aligner, no_align, overwrite, json_, preview,
                          generator, name=None) -> None:
    """``--method encoder``: every target through the trained essence encoder in batches; with
    ``name``, the photos of one target, whose directions are averaged into one essence."""
    from ..extraction.encoder_method import extract_with_encoder
    from ..extraction.targets import photos_of

    if name is not None:
        targets = photos_of(targets)[0]
    paths, previews = _plan_outputs(targets, output, preview, overwrite, name)
    essences = extract_with_encoder(targets, encoder, device=backend, align="whole" if no_align else "auto",
                                    aligner=aligner, notify=print_note, combine=name is not None, name=name)
    summaries = []
    for target, essence, path, grid in zip([name] if name is not None else targets, essences, paths, previews):
        essence.save(path)
        if grid is not None:
            from ..extraction.preview import preview_on_sampled_sources

            preview_on_sampled_sources(essence, grid, generator=generator, device=backend)
        info = essence.info()
        summaries.append({"target": str(target), "output": str(path), "preview": str(grid) if grid else None,
                          "method": "encoder", "recommended_strength": essence.recommended_strength,
                          "target_crop": info.get("target_crop"), "seconds": float(info["seconds"])})
        if not json_:
            out.print(f"wrote {escape(str(path))} (encoder, {info.get('target_crop')} crop, {float(info['seconds']):.2f} s), "
                      f"recommended strength {essence.recommended_strength:.3f}"
                      + (f"; preview {escape(str(grid))}" if grid is not None else ""), highlight=False)
    if json_:
        print_json({"essences": summaries})


def register(app: typer.Typer) -> None:
    add_command(app, "extract", extract, exit_statuses(
        stopped="the best essence found so far is saved (nothing, before the first step)"))
