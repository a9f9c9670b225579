"""Stage 1 of 6, torch-free: what each kind is (optimizer, decay mode, schedule, dataset,
model) and the record schema. Every later stage reads its names and checks from here: each
kind's module has its table and one `check` (values.py: the value kinds and `SpecError`).

    spec -> config -> train -> sweep -> analysis -> cli      (docs/DESIGN.md)
"""
