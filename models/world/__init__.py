"""The embedded world: procedural shapes with exact masks, the bundled models' training and their evaluation."""
