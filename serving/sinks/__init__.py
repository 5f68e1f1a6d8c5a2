"""Where the batch job writes scores (being split into one module per target; see sql.py)."""

from serving.sinks.sql import *  # noqa: F403
from serving.sinks.sql import _value  # noqa: F401
