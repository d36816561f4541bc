"""The pipeline: transfer, distill, prune, quantize and export in one resumable run, with a report.

Build one in Python with `tfkd.Pipeline([...stages])` (its docstring has an example),
or from a config file: `tfkd run pipeline.yaml` (see `load_config`).
"""

# These modules import no Keras (nor TensorFlow): `tfkd check` and `tfkd report` start in
# a fraction of a second. Keras loads when a stage runs, or with `Context`.
from tfkd.pipeline.clustering import Cluster
from tfkd.pipeline.config import ConfigError, PipelineConfig, load_config, run_config
from tfkd.pipeline.data import Data
from tfkd.pipeline.distilling import Distill
from tfkd.pipeline.micro import Micro
from tfkd.pipeline.pipeline import Pipeline
from tfkd.pipeline.pruning import Prune, PruneChannels
from tfkd.pipeline.quantizing import QuantizeAware
from tfkd.pipeline.report import Report
from tfkd.pipeline.stage import Stage, get_stage, register_stage, registered_stages
from tfkd.pipeline.stages import Export, Load, Transfer
from tfkd.pipeline.training import Train

__all__ = [
    "Cluster",
    "ConfigError",
    "Context",
    "Data",
    "Distill",
    "Export",
    "Load",
    "Micro",
    "Pipeline",
    "PipelineConfig",
    "Prune",
    "PruneChannels",
    "QuantizeAware",
    "Report",
    "Stage",
    "Train",
    "Transfer",
    "get_stage",
    "load_config",
    "register_stage",
    "registered_stages",
    "run_config",
]


def __getattr__(name):
    if name == "Context":
        from tfkd.pipeline.context import Context

        return Context
    raise AttributeError(f"module 'tfkd.pipeline' has no attribute {name!r}")
