"""The schedules of eta_t and the options each takes: names free of torch.

Their values live only in `configs/schedule/<name>.yaml`; `harness.train.schedules` computes
eta_t (the formulas are in its docstring).
"""

SCHEDULES = ("constant", "step", "cosine", "warm_restarts")
OPTIONS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("milestones", "factor"),        # epochs of each drop; eta_t *= factor at each
    "cosine": (),
    "warm_restarts": ("t_0", "t_mult"),      # first period in epochs; growth of each period
}
