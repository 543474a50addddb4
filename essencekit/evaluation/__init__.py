"""``essencekit evaluate``: the TargetCLIP paper's measures of an edit (identity kept, target
similarity, consistency, identity leak) over strengths, as a table, JSON and an HTML report.

:mod:`.metrics` (the measures as functions of embeddings), :mod:`.sources` (what is measured),
:mod:`.api` (:func:`~essencekit.evaluation.api.evaluate`: render with transfer's pipeline,
embed, summarise) and :mod:`.report` (the HTML file). docs/evaluate.md describes the command.
"""
