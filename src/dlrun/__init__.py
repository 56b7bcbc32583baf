"""dlrun: a command-line deep-learning experiment runner driven by YAML configs.

Importing the package is cheap on purpose: torch and friends are imported by the modules
that use them, so ``dlrun --help`` and config errors answer in well under a second.
"""

__version__ = "0.1.0"
