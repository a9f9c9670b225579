"""Stage 4 of 6: cells over time. `cells` skips, claims, packs and resumes them; a `recorder`
owns each cell's outputs (`records` in parquet, `checkpoint`, the W&B mirror).

    spec -> config -> train -> sweep -> analysis -> cli      (docs/DESIGN.md)
"""
