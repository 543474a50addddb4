"""The encoder variant of TargetCLIP: fine-tune e4e so that it outputs a target's essence.

``essencekit train-encoder`` (:func:`essencekit.training.api.train_encoder`) trains it, on one
process or many under ``torchrun``. The pieces, one job each: :mod:`.settings` (the
hyper-parameters, declared and checked once), :mod:`.data` (training folders, aligned once and
cached), :mod:`.sampling` (which images each step and each rank sees, and their flips),
:mod:`.loss` (the per-target training loss on the shared CLIP losses), :mod:`.ranger` (the
optimisers), :mod:`.run_folder` (checkpoints, the metrics log, resuming), :mod:`.trainer` (the
loop). The checkpoint format and the trained model are in the shared layer
(:mod:`essencekit.essence_encoder`), where extraction reads them.
"""
