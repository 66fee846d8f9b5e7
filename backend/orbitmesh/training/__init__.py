"""Training for the LRM family: config TOML, losses, schedule, EMA, checkpoints and the loop.

``orbitmesh train CONFIG.toml`` (see :mod:`orbitmesh.cli.train`) drives :class:`Trainer`. Part of the
optional ``orbitmesh[train]`` tools with :mod:`orbitmesh.data` and :mod:`orbitmesh.bench`: they may
import the runtime, the runtime never imports them.
"""

from orbitmesh.training.config import TrainConfig, load_config, parse_config
from orbitmesh.training.loop import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config", "parse_config"]
