"""The meta-learning half of a GTN: the meta-loss and its gradient estimator, the outer step.

``estimator``: meta_loss(φ) over fresh learners unrolled on the teacher's curriculum and the
estimate (loss, meta-gradient, metrics) of it; ``outer``: the outer optimiser and the guarded
update of the meta-state: arrays in, arrays out, no run directory, logging or data loading
(``commands.meta_train`` owns those). ``gtn``: a GTN built from its config, and read back from a
run directory's checkpoints for the commands that use one.
"""

from gtn_nas.meta.estimator import full_backprop, make_meta_loss
from gtn_nas.meta.outer import make_meta_step


def exact_meta_step(cfg, teacher, source, mean, std, augment=None, mesh=None,
                    scan_unroll: int | bool = 1):
    """The paper's outer step: the exact second-order meta-gradient (``full_backprop`` of
    ``make_meta_loss``) applied by the guarded outer update (``outer.make_meta_step``)."""
    meta_loss = make_meta_loss(cfg, teacher, source, mean, std, augment, mesh, scan_unroll)
    return make_meta_step(cfg, teacher, full_backprop(meta_loss))


__all__ = ["exact_meta_step"]
