"""The method-agnostic forward-pass engine: what every explainer and metric needs from a model.

* :func:`batch_slices` / :func:`batched` — the fixed batches every loop cuts its items into;
* :func:`eval_mode` — eval mode for the duration, every module's own ``training`` flag restored after;
* :func:`hooks` — forward/backward hooks registered for the duration, removed in ``finally``;
* :func:`named_layers` / :func:`captured_outputs` — layers by name (one error listing the valid names) and
  their outputs captured during a forward pass;
* :func:`copies_per_pass` — how inputs are packed into forward passes, with the one memory knob
  ``forward_batch`` (inputs per pass) that every method and metric takes under that name;
* :func:`gather_scores` / :func:`target_scores` — the target's ``logit``, ``probability`` or ``log_probability``;
* :func:`packed_scores` / :func:`perturbed_scores` — the (B, K) target scores of K modified copies of every
  sample, packed ``forward_batch`` inputs per pass, with no Python loop over samples.
"""

from xaicore.engine.batches import batch_slices, batched
from xaicore.engine.model import captured_outputs, eval_mode, hooks, named_layers
from xaicore.engine.passes import (
    FORWARD_BATCH,
    PACK_BYTES,
    SCORES,
    check_forward_batch,
    copies_per_pass,
    gather_scores,
    packed_scores,
    perturbed_scores,
    target_scores,
)

__all__ = ["FORWARD_BATCH", "PACK_BYTES", "SCORES", "batch_slices", "batched", "captured_outputs",
           "check_forward_batch", "copies_per_pass", "eval_mode", "gather_scores", "hooks", "named_layers",
           "packed_scores", "perturbed_scores", "target_scores"]
