"""Ray sharding: two local actors on the hf backend give exactly the single-process
results, and a killed actor is replaced with its shard retried."""

from __future__ import annotations

import pytest
from conformance import QUESTIONS, make_request, mixed_requests

from fitness.backends.factory import BackendSpec, build_backend_from_spec
from fitness.backends.ray_pool import shard_bounds
from genomes.errors import InputError


def test_shard_bounds_cover_everything_in_order():
    for n in range(0, 12):
        for shards in range(1, 6):
            bounds = shard_bounds(n, shards)
            flat = [i for a, b in bounds for i in range(a, b)]
            assert flat == list(range(n))
            if n:
                sizes = [b - a for a, b in bounds]
                assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1 and len(bounds) == min(shards, n)


def test_unknown_backend_kind_names_the_field():
    with pytest.raises(InputError, match="model.backend"):
        build_backend_from_spec(BackendSpec("tgi"))


@pytest.fixture(scope="module")
def ray_backend(hf_backend):  # hf_backend first: the model cache exists before the actors start
    pytest.importorskip("ray")
    import ray

    from fitness.backends.ray_pool import RayBackend

    backend = RayBackend(BackendSpec("hf", {"dtype": "float32"}), actors=2)  # as the hf_backend fixture
    yield backend
    backend.close()
    ray.shutdown()


@pytest.mark.slow
def test_two_actors_equal_the_single_process_run(ray_backend, hf_backend, lora_adapters):
    requests = mixed_requests(lora_adapters, max_new_tokens=20)
    seen = []
    sharded = ray_backend.generate(requests, progress=lambda n, tokens=0: seen.append(n))
    single = hf_backend.generate(requests)
    assert [c.text for c in sharded] == [c.text for c in single]
    assert [(c.completion_tokens, c.finish_reason) for c in sharded] == [(c.completion_tokens, c.finish_reason) for c in single]
    assert sum(seen) == len(requests) and len(seen) == 2  # one progress report per shard
    import ray

    assert len({ray.get(a.pid.remote()) for a in ray_backend.actors}) == 2  # really two processes
    assert ray_backend.count_tokens("What is 7 + 5?") == hf_backend.count_tokens("What is 7 + 5?")


@pytest.mark.slow
def test_a_dead_actor_is_replaced_and_its_shard_retried(ray_backend, hf_backend):
    import ray

    requests = [make_request(q, max_new_tokens=12) for q in QUESTIONS]
    dead = ray_backend.actors[0]
    ray.kill(dead, no_restart=True)
    out = ray_backend.generate(requests)
    assert [c.text for c in out] == [c.text for c in hf_backend.generate(requests)]
    assert ray_backend.actors[0] is not dead and ray_backend.replaced >= 1


@pytest.mark.slow
def test_backend_errors_are_raised_not_retried(ray_backend, tmp_path):
    with pytest.raises(Exception, match="adapter"):
        ray_backend.generate([make_request(QUESTIONS[0], adapter=str(tmp_path / "no-such-adapter"))])
