"""Runs that explain themselves, and the tools to look inside a model.

Every run records cheap health signals while it trains (:mod:`.recorders`: per-layer
gradient norms every N optimizer steps, dead and saturated units on the validation split
at the end) and, after the test evaluation, judges them with pure functions over history
rows and recorded numbers (:mod:`.verdicts`, remedies as pasteable overrides in
:mod:`.remedies`). :func:`dlrun.diagnostics.summary.diagnose` turns that into the
``diagnostics`` section of metrics.json and report.md.

The companion commands live here too: ``dlrun-gradcheck`` (:mod:`.gradcheck`),
``dlrun-lrfind`` (:mod:`.lrfind`) and ``dlrun-inspect`` (:mod:`.inspection`), and the
study notes' lessons as experiments (:mod:`.lessons`, ``make lessons``).

Importing this package costs nothing: the modules that need torch import it themselves.
"""
