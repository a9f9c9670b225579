"""The names of the optimizers and decay modes: their one home, free of torch.

`harness.optim` builds them (and imports these names), `harness.config` validates against them,
and `harness.analysis` checks parquet files against them without importing torch.

    decay mode     update (alpha = optimizer.lr, eta_t = schedule multiplier, lambda = weight_decay)
    none           no decay
    l2             g <- g + lambda * theta_{t-1}; the optimizer's moments see it
    decoupled      theta <- theta - eta_t * lambda * theta_{t-1}          (the paper's SGDW/AdamW)
    decoupled_lr   theta <- theta - alpha * eta_t * lambda * theta_{t-1}  (torch.optim.AdamW)
"""

OPTIMIZERS = ("sgd", "adam", "rmsprop")
DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
