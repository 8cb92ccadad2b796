"""`evo tune`: an Optuna study over the loss weights α β γ δ."""
