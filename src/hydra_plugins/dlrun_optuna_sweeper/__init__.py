"""dlrun's Optuna sweeper for Hydra: ``hydra/sweeper=dlrun_optuna`` (see config.py).

Hydra finds it by scanning the ``hydra_plugins`` namespace package on start-up, so this
package and the modules it imports at the top must stay light (no optuna, no torch).
"""
