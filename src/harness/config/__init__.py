"""Stage 2 of 6: Hydra composes `configs/` + `experiments/` (`compose`) into plain dicts,
`validate.expand` turns each into checked cells (`job.Config`, identified by `run_id`).

    spec -> config -> train -> sweep -> analysis -> cli      (docs/DESIGN.md)
"""
