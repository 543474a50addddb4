"""``essencekit evaluate``: the TargetCLIP paper's measures of an edit (identity kept, target
similarity, consistency, identity leak) over strengths, as a table, JSON and an HTML report.

:mod:`.metrics` (the measures as functions of embeddings), :mod:`.sources` (what is measured),
:mod:`.api` (:func:`~essencekit.evaluation.api.evaluate`: render with transfer's pipeline,
embed, summarise) and :mod:`.report` (the HTML file). docs/evaluate.md describes the command.

Evaluation renders its images with the public transfer pipeline,
:class:`essencekit.transfers.Transferrer`, which is its job (the images it measures are exactly
what ``essencekit transfer`` makes); that is its only import from a sibling command package.
Everything else it shares with the other commands (essences, inputs, latent files, targets)
comes from the shared layer at the top of ``essencekit``.
"""
