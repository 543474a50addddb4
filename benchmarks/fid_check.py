"""Check essencekit's FID against torch-fidelity's own published value, where the real weights are.

torch-fidelity publishes, in its test ``tests/tf1/numerical_precision/test_metric_fid_fidelity.py``
(0.4.0), the FID between the first 5,000 CIFAR-10 training images and the first 5,000 CIFAR-10
test images: 10.3233274 (within 1e-4), which agrees with the TTUR TensorFlow reference to a
relative 1e-5. This script computes the same figure through essencekit's path (the
``inception-v3-fid`` weights from the cache or ``--weights``, read with weights_only=True, our
batching and our Fréchet distance) and, with ``--library``, through torch-fidelity's own
``calculate_metrics`` on the same images, and fails when either differs from the published value.

It needs the Inception weights (``essencekit pull-weights inception-v3-fid``, or ``--from`` a
folder holding ``weights-inception-2015-12-05-6726825d.pth``) and CIFAR-10 in torchvision's
format (``--cifar DIR`` holding ``cifar-10-batches-py``; nothing is downloaded). It was not run
where essencekit was written (no network there): run it once on a machine that has both.

    python benchmarks/fid_check.py --cifar ~/data/cifar10 [--weights FILE] [--library] [--limit 5000]

5,000 images each through Inception take a few minutes on a GPU (``--device cuda``) and about
half an hour on a laptop CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PUBLISHED = 10.3233274
TOLERANCE = 1e-4 * 10  # the library's own delta is 1e-4; allow for another machine's float32 convolutions


def cifar_images(root: Path, train: bool, limit: int):
    from torchvision.datasets import CIFAR10

    data = CIFAR10(str(root), train=train, download=False)
    return [data.data[i] for i in range(min(limit, len(data)))]  # [32, 32, 3] uint8, in the dataset's order


def features(images, model, device) -> object:
    import torch

    from essencekit.evaluation.fid import InceptionFeatures

    collector = InceptionFeatures(model, device)
    for i, image in enumerate(images):
        collector.add(i, image)
    collector.flush()
    return torch.stack([collector.out[i] for i in range(len(images))]).numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=Path, required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--weights", default=None, help="Inception weights file (default: the inception-v3-fid artifact)")
    parser.add_argument("--limit", type=int, default=5000, help="images per side (the published figure: 5000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--library", action="store_true", help="also run torch-fidelity's calculate_metrics")
    args = parser.parse_args(argv)

    from essencekit.evaluation.fid import frechet_distance, load_inception

    model, label, sha256 = load_inception(args.weights, args.device)
    print(f"Inception: {label} (sha256 {sha256})")
    train, test = cifar_images(args.cifar, True, args.limit), cifar_images(args.cifar, False, args.limit)
    start = time.perf_counter()
    ours = frechet_distance(features(train, model, args.device), features(test, model, args.device))
    print(f"essencekit FID, {len(train)} vs {len(test)} images: {ours:.7f} ({time.perf_counter() - start:.0f} s); "
          f"published {PUBLISHED}")
    ok = args.limit != 5000 or abs(ours - PUBLISHED) <= TOLERANCE
    if args.library:
        import torch_fidelity
        from PIL import Image

        from essencekit.weights import resolve_weights

        with tempfile.TemporaryDirectory() as folder:
            for name, images in (("train", train), ("test", test)):
                (Path(folder) / name).mkdir()
                for i, image in enumerate(images):
                    Image.fromarray(image).save(Path(folder) / name / f"{i:05d}.png")
            metrics = torch_fidelity.calculate_metrics(
                input1=str(Path(folder) / "train"), input2=str(Path(folder) / "test"), fid=True, verbose=False,
                cuda=args.device.startswith("cuda"),
                feature_extractor_weights_path=str(resolve_weights(args.weights, "inception-v3-fid")),
            )
        theirs = metrics["frechet_inception_distance"]
        print(f"torch-fidelity FID on the same images: {theirs:.7f}; difference {abs(theirs - ours):.2e}")
        ok = ok and abs(theirs - ours) <= 1e-3 * max(1.0, abs(theirs))
    if args.limit == 5000:
        print("OK: matches the published value" if ok else "FAIL: differs from the published value")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
