"""Stage 3 of 6: data on the device (`data`, format readers in `datasets`), networks (`models`),
the optimizer chain, its steps and its per-cell layout (`optim`, `optim_steps`, `buckets`),
eta_t (`schedules`), packs of K cells as one network (`packed`) and how many fit (`memory`),
one train step on the device (`step`) and the training loop (`loop`), which yields records
and writes no file.

    spec -> config -> train -> sweep -> analysis -> cli      (docs/DESIGN.md)
"""
