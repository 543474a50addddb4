"""Extraction by a trained essence encoder (TargetCLIP's second variant): one forward pass per
target instead of an optimisation.

The target is prepared as the encoder was trained (``train-encoder``): its largest face aligned
as FFHQ and reduced to the encoder's input, or, for a picture in which no face is found (a
cartoon, a painting), the centre square taken whole, as ``train-encoder --no-align`` does.
The essence file is the same as the optimisation's; its metadata records the method and the
encoder checkpoint's sha256.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import EssencekitError, OptionError
from ..essence import FORMAT_VERSION, Essence
from ..images import Target, read_target
from ..weights import weights_identity

ALIGN_MODES = ("auto", "face", "whole")
#: The side of the FFHQ crop transfer renders before reducing it to the encoder's input.
ALIGN_OUTPUT_SIZE = 1024


def target_pixels(target: Target, size: int, *, align: str = "auto", aligner: str | None = None,
                  notify: Callable[[str], None] | None = None) -> tuple[torch.Tensor, str]:
    """``([1, 3, size, size] in [-1, 1], "face" or "whole")``: what the encoder sees of ``target``."""
    from ..faces import align_faces, face_from_aligned_crop
    from ..images import centre_square

    if align != "whole":
        faces = align_faces(target.image, aligner=aligner, which="largest", output_size=ALIGN_OUTPUT_SIZE)
        if faces:
            return faces[0].crop_tensor(size), "face"
        name = target.file or target.name
        if align == "face":
            raise EssencekitError(f"no face found in {name}; let the encoder take the whole picture (align 'auto')")
        if notify is not None:
            notify(f"no face found in {name}: the encoder takes the whole picture (its centre square)")
    face = face_from_aligned_crop(centre_square(target.image), output_size=ALIGN_OUTPUT_SIZE)
    return face.crop_tensor(size), "whole"


def extract_with_encoder(
    targets, encoder, *, device=None, align: str = "auto", aligner: str | None = None,
    notify: Callable[[str], None] | None = None, combine: bool = False, name: str | None = None,
) -> list[Essence]:
    """The essences of ``targets`` (paths, PIL images or :class:`~essencekit.images.Target`)
    from the essence encoder ``encoder`` (a ``train-encoder`` checkpoint path, or a loaded
    :class:`~essencekit.essence_encoder.EssenceEncoder`), in batches of the backend's size.

    ``align``: ``"auto"`` (the largest face, else the whole picture), ``"face"`` (a face is
    required) or ``"whole"`` (the centre square, for pictures already aligned).

    ``combine``: the targets are photos of one target, and the result is one essence whose
    direction is the mean of the photos' directions (the encoder maps pixels to a direction;
    it takes no CLIP embedding that could be averaged first), named ``name``."""
    from ..backends import resolve_backend
    from ..essence_encoder import EssenceEncoder, load_essence_encoder

    if align not in ALIGN_MODES:
        raise OptionError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}", parameter="align")
    backend = resolve_backend(device)
    if isinstance(encoder, EssenceEncoder):
        label, sha = "in-memory essence encoder", ""
        model = encoder
    else:
        if encoder is None:
            raise OptionError("the encoder method needs a trained essence encoder: give the run's best.pt "
                              "(essencekit train-encoder makes one)", parameter="encoder")
        if Path(encoder).is_dir():  # a train-encoder run folder: its chosen weights
            if not (Path(encoder) / "best.pt").is_file():
                raise EssencekitError(f"{encoder} is a folder without best.pt: give a train-encoder run folder, "
                                      "or the checkpoint file itself")
            encoder = Path(encoder) / "best.pt"
        path, label, sha = weights_identity(encoder, "")
        model = load_essence_encoder(path)
    # extraction only runs the encoder forward: its BatchNorm-folded form does the same with less work
    model = backend.prepare(model.eval().for_inference())
    read = [t if isinstance(t, Target) else read_target(t) for t in targets]
    started = time.perf_counter()
    prepared = [target_pixels(t, model.input_size, align=align, aligner=aligner, notify=notify) for t in read]
    directions = []
    step = max(1, backend.max_batch)
    for start in range(0, len(prepared), step):
        batch = torch.cat([pixels for pixels, _ in prepared[start : start + step]])
        with backend.autocast():
            directions.append(model.directions(batch.to(backend.device)).float().cpu())
    directions = torch.cat(directions)
    if combine:
        seconds = time.perf_counter() - started
        essence = _essence(model, read[0], directions.mean(0), prepared[0][1], label, sha, backend.name, seconds)
        photos = [{"file": t.file or t.name, "sha256": t.sha256, "crop": how} for t, (_, how) in zip(read, prepared)]
        if len(read) > 1:
            essence.metadata.update(
                target_file=json.dumps([p["file"] for p in photos]),
                target_sha256=json.dumps([p["sha256"] for p in photos]),
                target_crop=json.dumps([p["crop"] for p in photos]),
            )
        essence.metadata["name"] = name or read[0].name
        essence.metadata["target"] = json.dumps({
            "photos": photos, "text": None, "text_weight": 0.0,
            "combination": "mean of the photos' essence directions" if len(read) > 1 else "the photo's direction"})
        return [essence]
    seconds = (time.perf_counter() - started) / max(1, len(read))
    return [
        _essence(model, target, direction, how, label, sha, backend.name, seconds)
        for target, direction, (_, how) in zip(read, directions, prepared)
    ]


def _essence(model, target: Target, direction, how: str, label: str, sha: str, backend: str, seconds: float) -> Essence:
    from ..version import __version__

    trained = model.metadata
    metadata = {
        "format_version": FORMAT_VERSION,
        "name": target.name,
        "kind": "essence",
        "method": "TargetCLIP encoder variant (essencekit extract --method encoder)",
        "latent_space": "w+",
        "shape": json.dumps([model.n_latent, model.style_dim]),
        "encoder": label,
        "encoder_sha256": sha,
        "encoder_steps": trained.get("steps_done", ""),
        "clip_model": trained.get("clip_model", ""),
        "clip_input": trained.get("clip_input", ""),
        "generator": trained.get("generator", ""),
        "target_file": target.file,
        "target_sha256": target.sha256,
        "target_crop": how,
        "recommended_strength": repr(model.recommended_strength),
        "backend": backend,
        "seconds": f"{seconds:.3f}",
        "essencekit_version": __version__,
        "torch_version": str(torch.__version__),
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
    }
    return Essence(direction, torch.zeros(0), metadata)
