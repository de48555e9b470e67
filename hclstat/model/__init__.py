"""The model layer: the simulation engine and the reference designs."""

from . import designs, engine

from .designs import (
    D1_DIMS,
    LARGE_RANK_DIMS,
    LARGE_RANK_LABEL_STRUCTURES,
    LARGE_RANK_RANKS,
    PUBLISHED_DIMS,
    WIDE_DIMS,
    LatentClassRule,
    d1_hierarchy,
    d1_model,
    independent_views_hierarchy,
    independent_views_model,
    large_rank_hierarchy,
    large_rank_model,
    model_from_singular_values,
    modality_names,
    published_hierarchy,
    wide_hierarchy,
    wide_model,
)
from .engine import LATENT_LAWS, STUDENT_T_DF, HierarchicalModel, draw_latent, draw_noise_variances, published_block

__all__ = engine.__all__ + designs.__all__
