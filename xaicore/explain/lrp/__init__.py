"""Layer-wise relevance propagation and deep Taylor decomposition (survey §5.1–5.3) as a modified gradient.

* :mod:`.core` — the engine (one forward hook per Linear/Conv layer, the R/a invariant) and the :class:`Rule` type;
* :mod:`.rules` — z, ε, αβ, z⁺, γ, w², flat, z^B as rule configurations;
* :mod:`.composites` — where rules apply, and :func:`lrp`, which runs a composite;
* :mod:`.canonizers` — BatchNorm merging (reversible);
* :mod:`.taylor` — first-order Taylor decomposition at a root point (survey eq. 10);
* :mod:`.methods` — the registered names ``lrp.*``, ``dtd.*`` and ``taylor``.

Residual additions and ``torch.cat`` in a model's forward code need no module or canonizer: the engine's backward
splits them proportionally (z-rule) and conservatively by construction. User models need no changes.
"""

from xaicore.explain.lrp import excitation as _excitation  # noqa: F401  (registers)
from xaicore.explain.lrp import methods as _methods  # noqa: F401  (registers)
from xaicore.explain.lrp import taylor as _taylor  # noqa: F401  (registers)
from xaicore.explain.lrp.canonizers import merge_batch_norm
from xaicore.explain.lrp.composites import Composite, lrp, uniform
from xaicore.explain.lrp.core import Group, Rule, Term
from xaicore.explain.lrp.taylor import taylor_root

__all__ = ["Composite", "Group", "Rule", "Term", "lrp", "merge_batch_norm", "taylor_root", "uniform"]
