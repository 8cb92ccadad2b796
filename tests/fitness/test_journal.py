"""The run journal: results survive reopening, and journaled work is never redone."""

from __future__ import annotations

from fitness.backends.base import Completion
from fitness.journal import Journal, evaluate_with_journal, planned_rollouts
from fitness.tasks import Task
from genomes.chat_format import format_completion
from genomes.strategy import DecodingGene, Strategy


class CountingBackend:
    def __init__(self):
        self.requests = 0

    def generate(self, requests, progress=None):
        self.requests += len(requests)
        return [Completion(format_completion(["a b"], "4", "it is 4"), 9, 6, "stop") for _ in requests]

    def count_tokens(self, text):
        return len(text.split())


TASKS = [Task(id=f"jsonl:t/L0/{i}", family="jsonl:t", question=f"q{i}", answer="4", level=0, difficulty=0.0,
              verifier="numeric") for i in range(3)]


def test_results_round_trip_and_survive_reopening(tmp_path):
    backend = CountingBackend()
    with Journal(tmp_path / "j.sqlite") as journal:
        first, new, reused = evaluate_with_journal([(Strategy(), TASKS)], backend, journal, seed=0, generation=0)
        assert (new, reused, backend.requests) == (3, 0, 3)
    with Journal(tmp_path / "j.sqlite") as journal:
        again, new, reused = evaluate_with_journal([(Strategy(), TASKS)], backend, journal, seed=0, generation=1)
        assert (new, reused, backend.requests) == (0, 3, 3)  # nothing regenerated
        assert again == first  # identical ExampleResult objects back from SQLite
        assert journal.count() == 3
        assert Strategy.decode(journal.strategy(Strategy().content_hash())) == Strategy()
        assert [gen for gen, _ in journal.all_results()] == [0, 0, 0]


def test_only_missing_pairs_are_generated_and_duplicates_once(tmp_path):
    backend = CountingBackend()
    a, b = Strategy(name="a"), Strategy(name="b", decoding=DecodingGene(max_new_tokens=50))
    with Journal(tmp_path / "j.sqlite") as journal:
        evaluate_with_journal([(a, TASKS[:2])], backend, journal, seed=0, generation=0)
        assert backend.requests == 2
        # a again on one old and one new task; a renamed copy of a; and b
        jobs = [(a, TASKS[1:]), (Strategy(name="a-copy"), TASKS), (b, TASKS[:1])]
        per_job, new, reused = evaluate_with_journal(jobs, backend, journal, seed=0, generation=1)
        assert backend.requests == 2 + 1 + 1  # TASKS[2] for a (once, shared with its copy), TASKS[0] for b
        assert new == 2
        assert [len(r) for r in per_job] == [2, 3, 1]
        assert [r.task_id for r in per_job[1]] == [t.id for t in TASKS]


def test_a_voting_strategy_costs_one_rollout_per_vote_and_the_plan_says_so(tmp_path):
    backend = CountingBackend()
    voter = Strategy(decoding=DecodingGene(temperature=0.7, votes=3))
    with Journal(tmp_path / "j.sqlite") as journal:
        jobs = [(voter, TASKS[:2]), (Strategy(), TASKS)]
        assert planned_rollouts(jobs, journal, seed=0) == 3 * 2 + 3
        _, new, reused = evaluate_with_journal(jobs, backend, journal, seed=0, generation=0)
        assert (new, reused, backend.requests) == (9, 0, 9)
        assert planned_rollouts(jobs, journal, seed=0) == 0
        assert planned_rollouts([(voter, TASKS)], journal, seed=0) == 3  # only the missing task, 3 votes
        _, new, reused = evaluate_with_journal([(voter, TASKS)], backend, journal, seed=0, generation=1)
        assert (new, reused) == (3, 6)


def test_another_seed_is_another_key(tmp_path):
    backend = CountingBackend()
    with Journal(tmp_path / "j.sqlite") as journal:
        evaluate_with_journal([(Strategy(), TASKS)], backend, journal, seed=0, generation=0)
        evaluate_with_journal([(Strategy(), TASKS)], backend, journal, seed=1, generation=0)
    assert backend.requests == 6
