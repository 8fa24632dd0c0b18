"""Step an SFW optimizer beside a torch optimizer (the oracle) on the same gradients."""


def step_side_by_side(ours, theirs, opt, ref, grads_per_step) -> None:
    """For each step's list of gradients: give parameter i of `ours` and of `theirs` gradient i (each
    its own copy), then step `opt` and `ref`."""
    for grads in grads_per_step:
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
