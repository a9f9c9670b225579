"""Stage 3 of 6: data on the device (`data`, format readers in `datasets`), networks (`models`),
the optimizer chain and its steps (`optim`, `optim_steps`), eta_t (`schedules`), packs of K
cells as one network (`packed`) and the training loop (`loop`), which yields records and
writes no file.

    spec -> config -> train -> sweep -> analysis -> cli      (docs/DESIGN.md)
"""
