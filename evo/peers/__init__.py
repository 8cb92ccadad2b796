"""Peers: the tools a user would pick instead of ours, run on our tasks, model,
splits and budget (``runs/bench_peers.py``).

- :mod:`evo.peers.budget`: a backend wrapper that counts the completions a method
  generates and refuses to go past its budget;
- :mod:`evo.peers.render`: a peer's result (an instruction text) as one of our
  strategies, so every method is scored by the same verifier on the same test tasks;
- :mod:`evo.peers.gepa_peer`: GEPA (PyPI ``gepa``, the ``peers`` extra) with an
  adapter over our backend and the bundled model as its reflection model;
- :mod:`evo.peers.evoprompt`: EvoPrompt's genetic algorithm (Guo et al., 2023),
  written here from the paper: roulette selection, LLM crossover + mutation, top-N;
- :mod:`evo.peers.dspy_peer`: DSPy's MIPROv2 and BootstrapFewShotWithRandomSearch
  (PyPI ``dspy``, the ``peers`` extra): a ``dspy.LM`` engine over our backend that
  batches DSPy's threaded calls and stops at the budget, and an adapter that renders
  and parses our format.
"""
