"""Gradient-based adversarial attacks on the explicit input gradient and Jacobian.

Every attack takes a model, a batch ``x`` of shape ``(n, d)`` in a box
``[lo, hi]`` (default ``[0, 1]``) and the true labels ``y``. It returns an
``AttackResult`` with the adversarial inputs, per-sample success flags, step
counts and the L-inf, L2 and L0 sizes of the perturbations. Gradients come
from ``resgrad.input_gradient`` and Jacobians from ``resgrad.input_jacobian``,
with no autograd, so NumPy and PyTorch inputs run the same code and results
keep the input's namespace, device and dtype. On PyTorch the attacks run
with autograd off, so the results carry no graph.
"""

from ._common import BOX_TOLERANCE, AttackResult
from ._iterative import bim, illcm, least_likely_class, mifgsm, pgd, pgd_l2
from ._jsma import jsma, mjsma
from ._single_step import fgsm, rfgsm

# The attacks by the names the command line and resgrad.robustness use.
ATTACKS = {
    "fgsm": fgsm,
    "bim": bim,
    "illcm": illcm,
    "rfgsm": rfgsm,
    "mifgsm": mifgsm,
    "pgd": pgd,
    "pgd_l2": pgd_l2,
    "jsma": jsma,
    "mjsma": mjsma,
}

__all__ = [
    "ATTACKS",
    "BOX_TOLERANCE",
    "AttackResult",
    "bim",
    "fgsm",
    "illcm",
    "jsma",
    "least_likely_class",
    "mifgsm",
    "mjsma",
    "pgd",
    "pgd_l2",
    "rfgsm",
]
