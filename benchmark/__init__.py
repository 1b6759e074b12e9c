"""metabench: a benchmark suite for meta-reinforcement learning.

``metabench`` (this folder, ``benchmark/``) holds the runner, CLI, suites,
profiles, statistics and reports; ``metabench.agents`` the agents and
``metabench.envs`` the task families. Importing it is cheap: heavy modules
load where they are used.
"""

__version__ = "0.1.0"
