"""The names of the optimizers, their hyperparameters and the decay modes: their one home,
free of torch.

`harness.optim` builds them (and imports these names), `harness.config` validates against them,
and `harness.analysis` checks parquet files against them without importing torch. The values
of the hyperparameters live only in `configs/optimizer/<name>.yaml`.

    optimizer  hyperparameters (torch.optim's names and meaning)
    sgd        momentum mu, dampening, nesterov: b <- mu*b + (1 - dampening)*g
    adam       betas (beta1, beta2), eps: m, v EMAs of g, g^2; d = m_hat/(sqrt(v_hat) + eps)
    rmsprop    alpha (smoothing of v, not the lr), eps, momentum

    decay mode     update (alpha = optimizer.lr, eta_t = schedule multiplier, lambda = weight_decay)
    none           no decay
    l2             g <- g + lambda * theta_{t-1}; the optimizer's moments see it
    decoupled      theta <- theta - eta_t * lambda * theta_{t-1}          (the paper's SGDW/AdamW)
    decoupled_lr   theta <- theta - alpha * eta_t * lambda * theta_{t-1}  (torch.optim.AdamW)
"""

HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "dampening", "nesterov"),
    "adam": ("betas", "eps"),
    "rmsprop": ("alpha", "eps", "momentum"),
}
OPTIMIZERS = tuple(HYPERPARAMETERS)
DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
