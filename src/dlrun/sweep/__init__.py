"""Hyperparameter search with Optuna: the pieces shared by the sweeper and the jobs.

The Hydra sweeper plugin (``hydra_plugins.dlrun_optuna_sweeper``) drives a study; each
job it launches is an ordinary dlrun run that learns its trial's identity from the
``trial.*`` overrides (:mod:`dlrun.sweep.protocol`) and reports per-epoch validation values
to that trial (:mod:`dlrun.sweep.pruning`). Nothing here imports optuna at import time, so
the plugin scan Hydra performs on every start-up (even ``--help``) stays cheap.
"""
