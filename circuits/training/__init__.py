"""Training small models from scratch: config, data (text corpus and synthetic tasks), model,
checkpoints and the loop. A run folder is a model source for ``circuits.zoo``; its emergence
trace is ``circuits.emergence``."""
