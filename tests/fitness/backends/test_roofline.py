"""The roofline arithmetic (fitness.backends.roofline) on a hand-sized model."""

from __future__ import annotations

from fitness.backends.roofline import Machine, ModelShape, forward_seconds

SHAPE = ModelShape(params=1000, matmul_params=800, layers=2, heads=4, kv_heads=2, head_dim=8, bytes_per_value=2)


def test_flops_and_bytes_follow_the_definition():
    assert SHAPE.kv_bytes_per_token() == 2 * 2 * 2 * 8 * 2 == 128  # layers x (k, v) x kv heads x dim x bytes
    # one decode token over 10 cached: 2 x 800 matmul + 4 x 2 layers x 4 heads x 8 x (10 + 1)
    assert SHAPE.flops(rows=1, new=1, context=10) == 1600 + 4 * 2 * 4 * 8 * 11
    assert SHAPE.flops(rows=3, new=1, context=10) == 3 * SHAPE.flops(1, 1, 10)
    assert SHAPE.bytes(rows=3, new=1, context=10) == 2000 + 3 * 11 * 128


def test_the_bound_is_the_slower_of_compute_and_memory():
    fast_memory = Machine("bfloat16", matmul_flops=1e3, read_bytes=1e12)
    fast_compute = Machine("bfloat16", matmul_flops=1e12, read_bytes=1e3)
    assert forward_seconds(SHAPE, fast_memory, 2, 1, 10) == SHAPE.flops(2, 1, 10) / 1e3
    assert forward_seconds(SHAPE, fast_compute, 2, 1, 10) == SHAPE.bytes(2, 1, 10) / 1e3


def test_the_ceiling_is_the_best_of_several_measurements():
    from fitness.backends.roofline import Machine, best_machine

    busy, quiet = Machine("bfloat16", 2.0e12, 15e9), Machine("bfloat16", 1.5e12, 23e9)
    assert best_machine(busy, quiet) == Machine("bfloat16", 2.0e12, 23e9)
