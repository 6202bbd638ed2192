"""Following faces across frames: one track per person, smoothing and hysteresis of its label."""
