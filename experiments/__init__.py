"""Studies: one Hydra config per study (experiments/ in the source tree; group `experiment`)."""
