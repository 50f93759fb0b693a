"""The arviz workflow: InferenceData from draws, the diagnostics gate, PSIS-LOO / WAIC model
comparison and plots (:mod:`diagnostics`), and Markdown reports (:mod:`report`). Generic:
never imports a model family, the commands or the CLI."""
