"""The model layer: the simulation engine, the mixed-type links and the reference designs."""

from . import designs, engine, links

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
    mixed_d1_all_model,
    mixed_d1_links,
    mixed_d1_model,
    model_from_singular_values,
    modality_names,
    published_hierarchy,
    wide_hierarchy,
    wide_model,
)
from .engine import (
    LATENT_LAWS,
    STUDENT_T_DF,
    HierarchicalModel,
    MixedModel,
    draw_latent,
    draw_noise_variances,
    published_block,
)
from .links import (
    LINK_KINDS,
    TYPE_CODES,
    ColumnLink,
    MixedLinks,
    binary,
    continuous,
    count,
    ordinal,
    ternary,
    truncated,
)

__all__ = engine.__all__ + designs.__all__ + links.__all__
