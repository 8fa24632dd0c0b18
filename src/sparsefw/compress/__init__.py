"""One-shot compression without retraining (needs torch.nn only).

prune            magnitude pruning (global or per layer; or N:M semi-structured, pattern="2:4"), zeros
                 in the weights; criterion="wanda" scores |W|·‖x‖ from calibration inputs (`criteria`)
remove_filters   physically smaller convs, exactly the function of the ln_structured-masked model;
                 coupled=True shrinks every coupled channel space (residual streams, MLP hidden units)
channel_groups   the coupled channel spaces of a model and the parameter slices of each channel
                 (re-exported from `sparsefw.graph`)
factorize        truncated-SVD factor pairs where smaller and faster (convs; rank, energy or budget rule)
FactorizedConv2d, FactorizedLinear, ReducedConv2d
                 the layers factorize and the in-place filter removal put in: still nn.Conv2d /
                 nn.Linear with the layer's attributes, `weight` derived from the stages
summarize        parameters, FLOPs and latency of original vs compressed, with ratios
recalibrate_batchnorm   re-estimate BatchNorm running statistics on a few input batches
rebuild          recreate a compressed architecture from the original one and a recipe
diagnose         per layer, what decides the damage: shrunken filters BN keeps alive, spectra, thresholds
"""
from .batchnorm import recalibrate_batchnorm
from ..graph import ChannelGroup, ChannelSlice, channel_groups
from .diagnose import Diagnosis, diagnose
from ._modules import FactorizedConv2d, FactorizedLinear, ReducedConv2d
from .factorize import factorize
from .filters import filter_keep_mask, remove_filters
from .metrics import CompressionSummary, count_flops, count_parameters, measure_latency, summarize
from .prune import prune
from .recipe import rebuild

__all__ = ["ChannelGroup", "ChannelSlice", "CompressionSummary", "Diagnosis", "FactorizedConv2d", "FactorizedLinear",
           "ReducedConv2d", "channel_groups", "count_flops", "count_parameters", "diagnose", "factorize",
           "filter_keep_mask", "measure_latency", "prune", "rebuild", "recalibrate_batchnorm", "remove_filters",
           "summarize"]
