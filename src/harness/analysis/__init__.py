"""Stage 5 of 6, torch-free: parquet files -> frames (`frames`) -> statistics (`stats`) ->
the paper's claims (`claims`) -> figures (`heatmaps`, `curves`, sharing `figures`; `units`)
-> report.md (`report`).

    spec -> config -> train -> sweep -> analysis -> cli      (docs/DESIGN.md)
"""
