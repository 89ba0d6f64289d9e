"""The YAML config: TwHIN's schema (same keys, types and defaults) plus tbg's extensions.

``schema`` holds the top-level :class:`Config` and its cross-field rules; each section has its own module
(``runtime``, ``training``, ``model``, ``optimizers``, ``data``, ``graph``, ``evaluation``), declared with
``fields.setting``; ``loading`` turns YAML into a validated :class:`Config`, ``docs`` renders docs/config.md.
Every name is re-exported here, so ``from tbg.config import X`` is the one way in.
"""

from tbg.config.data import DataConfig, GlobalNegativesScope, InBatchScope
from tbg.config.evaluation import Candidates, EvalConfig
from tbg.config.graph import ColumnsConfig, GraphConfig, IdMode, SourceFormat
from tbg.config.loading import converter, dump_config, load_config, parse_config
from tbg.config.model import (
    DataType,
    EmbeddingsConfig,
    EmbeddingSnapshot,
    EmbeddingTableConfig,
    ModelConfig,
    RelationConfig,
    RelationSides,
)
from tbg.config.optimizers import (
    AdagradConfig,
    AdamConfig,
    LearningRate,
    LinearRampToConstant,
    LinearRampToCosine,
    LrScaling,
    OptimizerConfig,
    PiecewiseConstant,
    RowAdagradConfig,
    SgdConfig,
)
from tbg.config.runtime import RuntimeConfig, WandbConfig
from tbg.config.schema import Config, check_references
from tbg.config.training import BucketOrder, TrainingConfig, TrainOn
from tbg.errors import ConfigError

__all__ = [
    "AdagradConfig",
    "AdamConfig",
    "BucketOrder",
    "TrainOn",
    "Candidates",
    "ColumnsConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataType",
    "EmbeddingSnapshot",
    "EmbeddingTableConfig",
    "EmbeddingsConfig",
    "EvalConfig",
    "GlobalNegativesScope",
    "GraphConfig",
    "IdMode",
    "InBatchScope",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "LrScaling",
    "ModelConfig",
    "OptimizerConfig",
    "PiecewiseConstant",
    "RelationConfig",
    "RelationSides",
    "RowAdagradConfig",
    "RuntimeConfig",
    "SgdConfig",
    "SourceFormat",
    "TrainingConfig",
    "WandbConfig",
    "check_references",
    "converter",
    "dump_config",
    "load_config",
    "parse_config",
]
