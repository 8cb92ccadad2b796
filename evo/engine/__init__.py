"""The evolution engine: the DEAP loop, typed individuals, the loop's checkpoint
state, where training and held-out tasks come from, and the backend it drives."""
