"""Training: the LightningModule (module.py), callbacks (callbacks.py), the Trainer (trainer.py) and `fit`
(fit.py), which trains prepared data into a run folder. Importing this package imports nothing heavy."""
