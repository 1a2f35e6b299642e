"""The fit loop for finetune / frozen / scratch / gradual runs, the frozen-feature cache,
checkpoints, and run directories (``rundir``: the one writer and the one loader)."""
