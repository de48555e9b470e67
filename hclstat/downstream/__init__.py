"""Downstream prediction from hierarchical component scores.

The outcome model is::

    y = b0 + sum_S z_S^T beta_S + eps                      (continuous)
    P(y = 1 | z) = sigmoid(b0 + sum_S z_S^T beta_S)         (binary)
    P(y = c | z) = softmax_c(b0 + sum_S B_S^T z_S)          (multiclass, C > 2 classes)
    h(t | z) = h0(t) exp(sum_S z_S^T beta_S)                (time to event, Cox)

with only some structures ``S`` task-relevant (``beta_S != 0``; for ``C`` classes
``B_S`` is ``k_S x C``, one column per class, and a structure is relevant for all
classes or none). The latents are
not observed: a *representation* (an HCL, StructuredFactorAnalysis or any
:class:`~hclstat.estimators.base.BaseHierarchicalEstimator`) is fitted on a
(possibly large, unlabelled) sample and turns the views into scores; a group
lasso over structures (groups = structures, or components) on the scores picks
the task-relevant structures; the selected groups are refitted without penalty
and the refit carries statsmodels inference.

Scores and the measurement-error correction
-------------------------------------------
Let the fitted factor model have stacked loadings ``A`` (p x K) and noise
``Psi``, and write ``N = A^T Psi^{-1} A``, ``M = I + N``.

* ``scores="posterior"`` (default): ``zt = E[z | x] = M^{-1} A^T Psi^{-1} (x - mu)``.
  The error is *Berkson-type*: ``z = zt + u`` with ``u`` uncorrelated with
  ``zt`` (``Cov(zt) = Cov(zt, z) = I - M^{-1}``). Regressing ``y`` on ``zt``
  is therefore already unbiased for ``beta`` (regression calibration), and
  the regression is exactly well specified in the Gaussian model:
  ``y | x ~ N(b0 + zt^T beta, sigma^2 + beta^T M^{-1} beta)``. No correction
  is needed and none is applied.
* ``scores="bartlett"``: ``zt = N^{-1} A^T Psi^{-1} (x - mu) = z + v`` with
  *classical* error ``v`` independent of ``z``, ``Cov(v) = V = N^{-1}``.
  Regressing ``y`` on ``zt`` attenuates: it estimates ``(I + V)^{-1} beta``.

The correction (``measurement_error="correct"``, default) replaces the score
Gram matrix ``G = Zt^T Zt / m`` (centred) by ``G - E`` with the model-implied
``E = Cov(zt) - Cov(zt, z) = Cov(zt, zt - z)``: ``E = 0`` for posterior scores
and ``E = V = (A^T Psi^{-1} A)^{-1}`` for Bartlett scores, so in both cases the
normal equations estimate the structural ``beta`` (the coefficient on ``z``
with ``Cov(z) = I``). ``G - E`` may be indefinite in small samples (``V``
large against the sample spread of the scores); it is then projected onto the
PSD cone (eigenvalues clipped at ``1e-4 * lambda_max(G - E)``, which bounds
the condition number the solver and the refit face) and an
:class:`~hclstat.exceptions.EstimationWarning` says so. The correction matters
only for noisy *unbiased* scores (Bartlett / least-squares, as in the
published design); with posterior scores it is the identity. Predictions always
use the best linear predictor of ``z^T beta`` from ``x``, i.e. posterior scores
times the structural coefficients (for Bartlett scores with the correction
switched off, the attenuated coefficients times the Bartlett scores, which is
the same predictor in the population). Coefficients of an *estimated*
representation are in its basis of each structure (identified up to a rotation
within the structure); selection and ``||beta_S||`` do not depend on that basis.

For a binary outcome (and a time to event) no Gram correction applies. With posterior scores,
``P(y = 1 | x) = E[sigmoid(eta) | x]`` with ``eta | x`` Gaussian, so the
logistic fit on ``zt`` estimates approximately
``beta / sqrt(1 + pi/8 * beta^T M^{-1} beta)`` (probit approximation): the
coefficients are mildly attenuated, the predicted probabilities are right to
that approximation. The multinomial fit (more than two classes) is in the same
case: no correction, coefficients shrunk by the posterior spread
``Cov(z | x) = M^{-1}`` of the linear predictors; the accuracy gap to the
softmax on the true latents is that spread's (measured in
``tests/test_multiclass.py``).

For a time to event (:class:`HCLSurvival`) the group lasso minimises
``-(1/m)`` times Breslow's partial log-likelihood (censored rows, tied times;
no intercept), the refit is the unpenalised Cox fit with statsmodels ``PHReg``
inference and hazard ratios, and ``score`` is Harrell's concordance index
(:func:`concordance_index`). As for the binary outcome, posterior scores give
mildly attenuated coefficients (the hazard given ``x`` mixes over
``eta | x``), while the ranking of rows is that of ``E[z | x]^T beta``.

Tuning rule
-----------
``criterion="cv"`` (the regressor's default): K-fold cross-validation (stratified for the
classifier) over a common path of ``n_lambdas`` values from ``lambda_max`` of
the full sample down to ``lambda_min_ratio * lambda_max``. For each fold the
score centring, the (corrected) Gram matrix, the whole path and — with
``cv_refit=True`` (default) — the unpenalised refit of each selected set are
computed from the training rows only; the validation rows only give the loss
(mean squared error; mean log-loss for the classifier). ``cv_rule="1se"``
(default) picks the largest ``lambda`` whose mean validation loss is within one
standard error of the minimum; ``"min"`` picks the minimiser. The
representation is unsupervised (it never sees ``y``), so it is fitted once.
``criterion="bic"`` (the classifier's default, see :class:`HCLClassifier`):
on the full sample, ``m log(RSS/m) + df log m`` (regression) or
``2 m logloss + df log m`` (classifier) of the refit of each selected set,
``df`` = number of selected components + 1 (times ``C - 1`` for ``C > 2``
classes: one contrast per class against the baseline); the smallest wins. For
the Cox model the CV loss is the cross-validated partial likelihood of Verweij
and van Houwelingen, ``-(l(b_{-k}) - l_{-k}(b_{-k}))`` per event of fold ``k``
(folds stratified on the event), and BIC is ``-2 log PL + df log(#events)``
with ``df`` = number of selected components.

Measured on the design of the tests (three modalities, six rank-2 structures,
two relevant, oracle representation; 40 fits per ``m``), regression: refit-CV
with the 1-SE rule (the default) had no false structure at ``m`` = 50..200 and
missed one in 15/40 and 4/40 fits at ``m`` = 50, 100, exact in 40/40 at 200;
refit-CV-min added false structures in 3-11/40; plain lasso CV-min (no refit)
in 28-35/40; BIC in 0-6/40.

Layout
------
:mod:`~hclstat.downstream.base` holds what every outcome model shares
(validation, representation, scores, groups, the path, cross-validation, BIC,
refit summaries); :mod:`~hclstat.downstream.regression`,
:mod:`~hclstat.downstream.classification` and :mod:`~hclstat.downstream.survival`
are the outcome models, each a subclass supplying
:data:`~hclstat.downstream.base.OUTCOME_MODEL_METHODS` (the classifier's
multinomial case, ``C > 2`` classes, lives in :mod:`~hclstat.downstream.multiclass`,
to which it dispatches);
:mod:`~hclstat.downstream.risk` computes excess risks under a known model. A
new outcome model is a new module beside them.
"""

from .base import OUTCOME_MODEL_METHODS, POST_SELECTION_CAVEAT, BaseHCLPredictor
from .classification import HCLClassifier
from .regression import HCLRegressor
from .survival import HCLSurvival, concordance_index
from .risk import _true_posterior, excess_risk

__all__ = ["HCLRegressor", "HCLClassifier", "HCLSurvival", "concordance_index", "excess_risk",
           "POST_SELECTION_CAVEAT", "BaseHCLPredictor",
           "OUTCOME_MODEL_METHODS"]
