"""The four weight-decay modes of Loshchilov & Hutter (ICLR 2019): names free of torch.

alpha = optimizer.lr, eta_t = schedule multiplier, lambda = decay.weight_decay, theta_{t-1} = the
weights before the step. `harness.train.optim` places the one decay step of its chain by mode.

    decay mode     update
    none           no decay
    l2             g <- g + lambda * theta_{t-1}; the optimizer's moments see it
    decoupled      theta <- theta - eta_t * lambda * theta_{t-1}          (the paper's SGDW/AdamW)
    decoupled_lr   theta <- theta - alpha * eta_t * lambda * theta_{t-1}  (torch.optim.AdamW)
"""

DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
