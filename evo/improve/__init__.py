"""`evo improve`: rounds of evolution, distillation and training (:mod:`evo.improve.rounds`)."""
