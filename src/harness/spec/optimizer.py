"""The optimizers and their hyperparameters: names free of torch.

An optimizer is two things: its YAML, `configs/optimizer/<name>.yaml` (its name, alpha and its
hyperparameters with their values), and its direction d(.) in
`harness.train.optim_steps.DIRECTIONS` (the math). Adding one is that file and that function;
the names below are read from the YAML files (a test checks they match DIRECTIONS).
`harness.train.optim` builds them, `harness.config.job` validates against them, and
`harness.analysis.frames` checks parquet files against them without importing torch.

    optimizer  hyperparameters (torch.optim's names and meaning)
    adam       betas (beta1, beta2), eps: m, v EMAs of g, g^2; d = m_hat/(sqrt(v_hat) + eps)
    rmsprop    alpha (smoothing of v, not the lr), eps, momentum
    sgd        momentum mu, dampening, nesterov: b <- mu*b + (1 - dampening)*g
"""

from __future__ import annotations

from harness.spec import configs

# name -> its hyperparameter keys: every key of configs/optimizer/<name>.yaml but name and lr
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    spec["name"]: tuple(k for k in spec if k not in ("name", "lr"))
    for spec in configs.group("optimizer")}
OPTIMIZERS = tuple(HYPERPARAMETERS)
