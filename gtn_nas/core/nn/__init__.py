"""Weight-normalised layers and the normalisation variants GTN learners and generators use."""

from gtn_nas.core.nn.layers import (BatchNorm, BatchStatsNorm, MeanOnlyBN, PlainConv, PlainDense,
                                    WNConv, WNDense, leaky_relu)

__all__ = ["BatchNorm", "BatchStatsNorm", "MeanOnlyBN", "PlainConv", "PlainDense", "WNConv",
           "WNDense", "leaky_relu"]
