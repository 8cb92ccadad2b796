"""The LoRA gene (genomes.lora): encoding round-trips, the content hash, the 1 KB
bound, validation naming the field, the operators (purity, determinism, the global
random state, the chain cap), the Strategy slot helpers, derive() and tensor_spec()."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from genomes.errors import InputError
from genomes.lora import (
    DEFAULT_SIGMAS,
    KNOWN_TARGETS,
    MAX_CHAIN,
    MAX_LAYER_INDEX,
    MAX_LAYERS,
    SEED_LIMIT,
    TARGET_SETS,
    LoraGene,
    cx_lora,
    decode_chain,
    decode_slot,
    derive,
    encode_chain,
    encode_slot,
    gene_of_slot,
    layer_choices_for,
    mut_lora,
    mut_lora_perturb,
    mut_lora_reshape,
    mut_lora_switch,
    random_lora,
    sigma_is_valid,
    tensor_spec,
)

REPO = Path(__file__).resolve().parents[2]
TRAINED_HASH = "0123456789abcdef" * 4

EXAMPLE = LoraGene(
    enabled=True,
    rank=16,
    alpha=32.0,
    targets=("q_proj", "k_proj", "v_proj", "o_proj"),
    layers=(0, 2, 5),
    init_seed=12345,
    mutations=((1, 0.002), (4294967295, 0.01), (777, 0.005)),
)
# Pinned: a change here changes every stored genome's hash (and cached scores).
EXAMPLE_HASH = "18aec21165e5d0e5"
EXAMPLE_CHAIN = "AAAAAUY_____y0AAADCU2"
DEFAULT_HASH = "62fb3297321452f1"
DERIVE_PINNED = 5980429857637514056  # derive("init", 7, 3, "q_proj", "A")


def worst_case(max_chain: int = MAX_CHAIN) -> LoraGene:
    """Every field at its longest encoding."""
    return LoraGene(
        enabled=True,
        rank=256,
        alpha=1.2345678901234567e-300,
        targets=KNOWN_TARGETS,
        layers=tuple(range(MAX_LAYER_INDEX - MAX_LAYERS + 1, MAX_LAYER_INDEX + 1)),
        source="trained",
        init_seed=SEED_LIMIT - 1,
        mutations=tuple((SEED_LIMIT - 1, 9.9e-10) for _ in range(max_chain)),
        trained_hash="f" * 64,
        max_chain=max_chain,
    )


def genes() -> list[LoraGene]:
    """A spread of valid genes: default, example, trained, disabled with a chain, full."""
    return [
        LoraGene(),
        EXAMPLE,
        LoraGene(enabled=True, source="trained", trained_hash=TRAINED_HASH, targets=("o_proj", "down_proj")),
        replace(EXAMPLE, enabled=False),
        replace(EXAMPLE, max_chain=3),  # at the cap
        random_lora(random.Random(3)),
        worst_case(),
    ]


def roundtrip(g: LoraGene) -> LoraGene:
    return LoraGene.decode(json.loads(json.dumps(g.encode())))


# ---- encoding ------------------------------------------------------------------------
@pytest.mark.parametrize("gene", genes(), ids=["default", "example", "trained", "off", "capped", "random", "worst"])
def test_encode_json_decode_round_trip(gene):
    data = gene.encode()
    # base is written only when set: genes of single-model runs keep their hashes
    assert set(data) == {f.name for f in fields(LoraGene)} - ({"base"} if not gene.base else set())
    back = roundtrip(gene)
    assert back == gene and back.content_hash() == gene.content_hash()
    assert isinstance(back.targets, tuple) and isinstance(back.layers, tuple) and isinstance(back.mutations, tuple)


def test_base_model_is_encoded_when_set_and_changes_the_hash():
    gene = LoraGene(enabled=True, mutations=((1, 0.01),))
    on_other = replace(gene, base="gemma3")
    assert "base" not in gene.encode() and on_other.encode()["base"] == "gemma3"
    assert roundtrip(on_other) == on_other and on_other.content_hash() != gene.content_hash()
    with pytest.raises(InputError, match="lora.base"):
        LoraGene.decode({"base": 3})


def test_encoding_is_pinned():
    assert EXAMPLE.encode() == {
        "enabled": True, "rank": 16, "alpha": 32.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "layers": [0, 2, 5], "source": "seed_chain", "init_seed": 12345, "mutations": EXAMPLE_CHAIN,
        "trained_hash": "", "max_chain": 64,
    }
    assert EXAMPLE.content_hash() == EXAMPLE_HASH
    assert LoraGene().content_hash() == DEFAULT_HASH


def test_chain_packing_is_exact_and_readable_pairs_decode_too():
    assert encode_chain(EXAMPLE.mutations) == EXAMPLE_CHAIN
    assert decode_chain(EXAMPLE_CHAIN) == EXAMPLE.mutations
    pairs = [[s, sigma] for s, sigma in EXAMPLE.mutations]
    assert LoraGene.decode({**EXAMPLE.encode(), "mutations": pairs}) == EXAMPLE
    assert LoraGene.decode({**EXAMPLE.encode(), "mutations": [[5, 1]]}).mutations == ((5, 1.0),)  # int sigma
    rng = random.Random(0)
    for _ in range(300):
        sigma = float(f"{rng.randint(10, 99)}e-{rng.randint(1, 11)}")
        chain = ((rng.randrange(SEED_LIMIT), sigma), (0, sigma), (SEED_LIMIT - 1, sigma))
        assert decode_chain(encode_chain(chain)) == chain


def test_sigma_grid():
    for ok in (0.002, 0.005, 0.01, 0.0025, 0.015, 0.1, 1.0, 9.9, 1e-10, 9.9e-10):
        assert sigma_is_valid(ok), ok
    for bad in (0.0123, 0.0, -0.01, float("nan"), float("inf"), 10.0, 9.9e-11, 1, True, "0.01"):
        assert not sigma_is_valid(bad), bad
    with pytest.raises(ValueError):
        encode_chain([(1, 0.0123)])
    with pytest.raises(ValueError):
        encode_chain([(SEED_LIMIT, 0.01)])


def test_field_order_and_default_values():
    g = LoraGene()
    assert (g.enabled, g.rank, g.alpha, g.targets, g.layers, g.source, g.init_seed, g.mutations, g.trained_hash, g.max_chain) == (
        False, 8, 16.0, ("q_proj", "v_proj"), (), "seed_chain", 0, (), "", 64)
    assert LoraGene.decode({}) == g
    assert not g.is_active and not g.has_weights
    assert replace(g, enabled=True).is_active
    assert EXAMPLE.scaling == 2.0


# ---- content hash --------------------------------------------------------------------
CHANGES = [
    ("enabled", False),
    ("rank", 8),
    ("alpha", 16.0),
    ("targets", ("q_proj", "v_proj")),
    ("layers", ()),
    ("layers", (0, 2, 6)),
    ("init_seed", 12346),
    ("mutations", ((1, 0.002), (4294967295, 0.01))),
    ("mutations", ((1, 0.002), (4294967295, 0.01), (777, 0.002))),
    ("mutations", ((1, 0.002), (4294967295, 0.01), (778, 0.005))),
    ("mutations", ((4294967295, 0.01), (1, 0.002), (777, 0.005))),  # order matters
    ("max_chain", 63),
]


@pytest.mark.parametrize("name,value", CHANGES, ids=[f"{n}={v!r}"[:40] for n, v in CHANGES])
def test_content_hash_changes_with_every_field(name, value):
    changed = replace(EXAMPLE, **{name: value}).validate()
    assert changed.content_hash() != EXAMPLE_HASH


def test_content_hash_changes_with_the_source():
    trained = replace(EXAMPLE, source="trained", trained_hash=TRAINED_HASH).validate()
    other = replace(trained, trained_hash="f" * 64)
    assert len({EXAMPLE.content_hash(), trained.content_hash(), other.content_hash()}) == 3


def test_weights_hash_ignores_what_the_weights_do_not_depend_on():
    key = EXAMPLE.weights_hash()
    assert replace(EXAMPLE, enabled=False).weights_hash() == key
    assert replace(EXAMPLE, max_chain=10).weights_hash() == key
    for name, value in CHANGES[1:11]:
        assert replace(EXAMPLE, **{name: value}).weights_hash() != key, name
    trained = LoraGene(enabled=True, source="trained", trained_hash=TRAINED_HASH)
    assert replace(trained, init_seed=99).weights_hash() == trained.weights_hash()  # unused for trained


def test_hash_is_stable_across_processes():
    code = (
        "import json; from genomes.lora import LoraGene, derive; "
        "g = LoraGene.decode(json.loads(input())); "
        "print(g.content_hash(), derive('init', 7, 3, 'q_proj', 'A'))"
    )
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(EXAMPLE.encode()), cwd=REPO,
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.split() == [EXAMPLE_HASH, str(DERIVE_PINNED)]


# ---- size bound ----------------------------------------------------------------------
def test_encoding_stays_under_1kb_at_the_worst_case():
    worst = worst_case()
    assert len(worst.mutations) == worst.max_chain == MAX_CHAIN
    assert len(json.dumps(worst.encode())) < 1024
    assert len(json.dumps(worst.encode(), separators=(",", ":"))) < 1024


def test_a_gene_grown_by_perturbation_stays_under_1kb():
    rng = random.Random(8)
    g = LoraGene(enabled=True, rank=256, targets=KNOWN_TARGETS)
    for _ in range(MAX_CHAIN + 20):
        g = mut_lora_perturb(g, rng)
    assert len(g.mutations) == MAX_CHAIN
    assert len(json.dumps(g.encode())) < 1024


# ---- validation ----------------------------------------------------------------------
BAD = [
    ("rank", 0, "lora.rank"),
    ("rank", 257, "lora.rank"),
    ("rank", True, "lora.rank"),
    ("rank", "8", "lora.rank"),
    ("alpha", 0, "lora.alpha"),
    ("alpha", -1.0, "lora.alpha"),
    ("alpha", float("nan"), "lora.alpha"),
    ("alpha", float("inf"), "lora.alpha"),
    ("enabled", 1, "lora.enabled"),
    ("targets", [], "lora.targets"),
    ("targets", "q_proj", "lora.targets"),
    ("targets", ["q_proj", "lm_head"], "lora.targets"),
    ("targets", ["v_proj", "q_proj"], "lora.targets"),
    ("targets", ["q_proj", "q_proj"], "lora.targets"),
    ("layers", [3, 1], "lora.layers"),
    ("layers", [1, 1], "lora.layers"),
    ("layers", [-1], "lora.layers[0]"),
    ("layers", [MAX_LAYER_INDEX + 1], "lora.layers[0]"),
    ("layers", [0, "1"], "lora.layers[1]"),
    ("layers", list(range(MAX_LAYERS + 1)), "lora.layers"),
    ("layers", 3, "lora.layers"),
    ("source", "random", "lora.source"),
    ("init_seed", -1, "lora.init_seed"),
    ("init_seed", SEED_LIMIT, "lora.init_seed"),
    ("mutations", [[1, 0.0]], "lora.mutations[0].sigma"),
    ("mutations", [[1, -0.01]], "lora.mutations[0].sigma"),
    ("mutations", [[1, float("nan")]], "lora.mutations[0].sigma"),
    ("mutations", [[1, 0.01], [2, 0.0123]], "lora.mutations[1].sigma"),
    ("mutations", [[SEED_LIMIT, 0.01]], "lora.mutations[0].seed"),
    ("mutations", [[-1, 0.01]], "lora.mutations[0].seed"),
    ("mutations", [[1.5, 0.01]], "lora.mutations[0].seed"),
    ("mutations", [[1, 0.01, 3]], "lora.mutations[0]"),
    ("mutations", "AAAAAU", "lora.mutations"),
    ("mutations", "AAAAAU*", "lora.mutations"),
    ("mutations", "______" + "_", "lora.mutations[0]"),  # sigma code 1023 is not on the grid
    ("mutations", 7, "lora.mutations"),
    ("max_chain", 0, "lora.max_chain"),
    ("max_chain", MAX_CHAIN + 1, "lora.max_chain"),
    ("max_chain", 2, "lora.mutations"),  # EXAMPLE's chain has 3
    ("trained_hash", "abc", "lora.trained_hash"),  # non-empty for a seed chain
    ("adapter_dir", "/tmp/x", "lora.adapter_dir"),  # unknown field
]


@pytest.mark.parametrize("name,value,field", BAD, ids=[f"{n}={v!r}"[:40] for n, v, _ in BAD])
def test_validation_errors_name_the_field(name, value, field):
    data = {**EXAMPLE.encode(), name: value}
    with pytest.raises(InputError) as err:
        LoraGene.decode(data)
    assert str(err.value).startswith(f"{field}:"), str(err.value)


@pytest.mark.parametrize("trained_hash", ["", "abc", "0123456789ABCDEF", "g" * 16, "0" * 65])
def test_a_trained_source_needs_a_hex_hash(trained_hash):
    with pytest.raises(InputError, match=r"^strategy\.lora\.trained_hash:"):
        LoraGene.decode({"enabled": True, "source": "trained", "trained_hash": trained_hash}, where="strategy.lora")


def test_trained_hash_lengths_accepted():
    for h in ("0" * 16, TRAINED_HASH):
        assert LoraGene.decode({"source": "trained", "trained_hash": h}).is_active is False  # not enabled


def test_decode_rejects_a_non_mapping():
    with pytest.raises(InputError, match=r"^lora: expected a table/object"):
        LoraGene.decode([1, 2])


# ---- operators: purity, determinism, global random ------------------------------------
OPERATORS = {
    "perturb": lambda g, rng: mut_lora_perturb(g, rng),
    "reshape": lambda g, rng: mut_lora_reshape(g, rng, layer_choices=((), (0, 1), (2, 3))),
    "switch": lambda g, rng: mut_lora_switch(g, rng),
    "mut_lora": lambda g, rng: mut_lora(g, rng)[0],
    "cx": lambda g, rng: cx_lora(g, EXAMPLE, rng),
}


@pytest.mark.parametrize("op", list(OPERATORS))
def test_operators_are_pure_deterministic_and_valid(op):
    fn = OPERATORS[op]
    for g in genes():
        before = copy.deepcopy(g)
        out1 = fn(g, random.Random(42))
        out2 = fn(g, random.Random(42))
        assert g == before and g.encode() == before.encode()
        assert out1 == out2
        for child in out1 if isinstance(out1, tuple) and isinstance(out1[0], LoraGene) else (out1,):
            assert roundtrip(child) == child


def test_operators_leave_the_global_random_state_alone():
    random.seed(1234)
    state = random.getstate()
    rng = random.Random(5)
    g = LoraGene()
    for _ in range(200):
        g, _ = mut_lora(g, rng, layer_choices=layer_choices_for(30))
        cx_lora(g, EXAMPLE, rng)
    random_lora(rng)
    assert random.getstate() == state


def test_a_sequence_of_mutations_is_reproducible():
    def run(seed):
        rng, g, ops = random.Random(seed), LoraGene(), []
        for _ in range(100):
            g, op = mut_lora(g, rng, layer_choices=layer_choices_for(24))
            ops.append(op)
        return g, ops

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_500_chained_mutations_stay_valid_and_change_the_gene():
    rng = random.Random(2024)
    g, changed = LoraGene(), 0
    for _ in range(500):
        out, op = mut_lora(g, rng, layer_choices=layer_choices_for(30))
        assert op in {"mut_lora_perturb", "mut_lora_reshape", "mut_lora_switch"}
        assert roundtrip(out) == out
        changed += out != g
        g = out
    assert changed == 500


# ---- operators: behaviour ------------------------------------------------------------
def test_perturb_appends_exactly_one_pair():
    rng = random.Random(1)
    for g in genes():
        if g.at_cap:
            continue
        out = mut_lora_perturb(g, rng)
        assert out.mutations[:-1] == g.mutations and len(out.mutations) == len(g.mutations) + 1
        seed, sigma = out.mutations[-1]
        assert 0 <= seed < SEED_LIMIT and sigma in DEFAULT_SIGMAS
        assert replace(out, mutations=g.mutations) == g  # nothing else changed
    assert mut_lora_perturb(LoraGene(), rng, sigmas=(0.02,)).mutations[-1][1] == 0.02
    with pytest.raises(ValueError):
        mut_lora_perturb(LoraGene(), rng, sigmas=(0.0123,))
    with pytest.raises(ValueError):
        mut_lora_perturb(LoraGene(), rng, sigmas=())


def test_perturb_draws_several_sigmas():
    rng = random.Random(2)
    sigmas = {mut_lora_perturb(EXAMPLE, rng).mutations[-1][1] for _ in range(100)}
    assert sigmas == set(DEFAULT_SIGMAS)


def test_perturb_at_the_cap_returns_the_gene_unchanged():
    capped = replace(EXAMPLE, max_chain=len(EXAMPLE.mutations))
    rng = random.Random(3)
    state = rng.getstate()
    assert mut_lora_perturb(capped, rng) is capped
    assert rng.getstate() == state  # the rng is not used
    for _ in range(50):  # mut_lora still changes a capped gene, never by perturbing it
        out, op = mut_lora(capped, rng)
        assert op != "mut_lora_perturb" and out != capped


def test_reshape_reinitialises_and_changes_one_shape_field():
    rng = random.Random(4)
    seen = set()
    trained = LoraGene(enabled=True, source="trained", trained_hash=TRAINED_HASH)
    for g in [EXAMPLE, trained] * 50:
        out = mut_lora_reshape(g, rng, layer_choices=((), (0, 1)))
        assert out.mutations == () and out.init_seed != g.init_seed
        assert out.source == "seed_chain" and out.trained_hash == ""
        assert (out.enabled, out.alpha, out.max_chain) == (g.enabled, g.alpha, g.max_chain)
        diff = [n for n in ("rank", "targets", "layers") if getattr(out, n) != getattr(g, n)]
        assert len(diff) == 1
        seen.add(diff[0])
    assert seen == {"rank", "targets", "layers"}


def test_reshape_canonicalises_target_sets_and_layer_choices():
    rng = random.Random(5)
    out = mut_lora_reshape(LoraGene(), rng, ranks=(8,), target_sets=[("v_proj", "q_proj")], layer_choices=[(3, 1, 1)])
    assert out.layers == (1, 3) and out.validate() == out  # the only change possible
    assert mut_lora_reshape(LoraGene(), rng, ranks=(8,), target_sets=[("q_proj", "v_proj")]) == LoraGene()
    with pytest.raises(ValueError):
        mut_lora_reshape(LoraGene(), rng, target_sets=[("lm_head",)])
    with pytest.raises(ValueError):
        mut_lora_reshape(LoraGene(), rng, ranks=(0,))


def test_switch_is_reversible():
    rng = random.Random(6)
    for g in genes():
        once = mut_lora_switch(g, rng)
        assert once.enabled != g.enabled
        twice = mut_lora_switch(once, rng)
        assert twice.enabled == g.enabled
        if g.enabled or g.has_weights:
            assert twice == g  # switching off keeps the adapter; switching on restores it


def test_switching_on_a_gene_without_weights_starts_a_fresh_chain():
    rng = random.Random(7)
    g = LoraGene()
    on = mut_lora_switch(g, rng)
    assert on.enabled and on.source == "seed_chain" and on.init_seed != g.init_seed
    assert len(on.mutations) == 1 and on.has_weights
    inits = {mut_lora_switch(g, rng).init_seed for _ in range(20)}
    assert len(inits) == 20


def test_cx_children_are_the_parents():
    rng = random.Random(8)
    a, b = EXAMPLE, random_lora(random.Random(1))
    orders = set()
    for _ in range(40):
        c1, c2 = cx_lora(a, b, rng)
        assert {c1.content_hash(), c2.content_hash()} == {a.content_hash(), b.content_hash()}
        orders.add(c1 == a)
    assert orders == {True, False}


def test_mut_lora_switches_on_when_off_and_mostly_perturbs_when_on():
    rng = random.Random(9)
    assert all(mut_lora(replace(EXAMPLE, enabled=False), rng)[1] == "mut_lora_switch" for _ in range(20))
    counts = {"mut_lora_perturb": 0, "mut_lora_reshape": 0, "mut_lora_switch": 0}
    for _ in range(1000):
        counts[mut_lora(EXAMPLE, rng)[1]] += 1
    assert counts["mut_lora_perturb"] > counts["mut_lora_reshape"] > counts["mut_lora_switch"] > 0
    only = {mut_lora(EXAMPLE, rng, op_weights={"reshape": 1.0})[1] for _ in range(20)}
    assert only == {"mut_lora_reshape"}


def test_random_lora_is_valid_enabled_and_deterministic():
    out = [random_lora(random.Random(i), layer_choices=layer_choices_for(30)) for i in range(30)]
    assert out == [random_lora(random.Random(i), layer_choices=layer_choices_for(30)) for i in range(30)]
    for g in out:
        assert g.is_active and len(g.mutations) == 1 and roundtrip(g) == g
        assert g.targets in TARGET_SETS
    assert len({g.content_hash() for g in out}) == 30


def test_layer_choices_for():
    assert layer_choices_for(30) == ((), tuple(range(15)), tuple(range(15, 30)), tuple(range(23, 30)))
    assert layer_choices_for(1) == ((),)
    assert all(len(c) <= MAX_LAYERS for c in layer_choices_for(200))


# ---- the Strategy slot ---------------------------------------------------------------
def test_slot_helpers_keep_legacy_dicts():
    legacy = {"adapter_dir": "/tmp/adapter"}
    free_form = {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
    assert decode_slot(None) is None
    assert decode_slot(legacy) == legacy and decode_slot(free_form) == free_form
    assert decode_slot(EXAMPLE.encode()) == EXAMPLE
    assert decode_slot(EXAMPLE) is EXAMPLE
    with pytest.raises(InputError, match=r"^strategy\.lora: expected"):
        decode_slot("rank 8", "strategy.lora")
    with pytest.raises(InputError, match=r"^strategy\.lora\.rank:"):
        decode_slot({"enabled": True, "rank": 0}, "strategy.lora")
    assert encode_slot(EXAMPLE) == EXAMPLE.encode()
    copied = encode_slot(legacy)
    assert copied == legacy and copied is not legacy
    assert encode_slot(None) is None
    assert gene_of_slot(None) == LoraGene() and gene_of_slot(EXAMPLE) is EXAMPLE
    assert gene_of_slot(legacy) is None


# ---- derive and tensor_spec ----------------------------------------------------------
def test_derive_is_pinned_and_in_range():
    assert derive("init", 7, 3, "q_proj", "A") == DERIVE_PINNED
    values = {derive("noise", s, 0, "v_proj", m) for s in range(200) for m in "AB"}
    assert len(values) == 400 and all(0 <= v < 2**63 for v in values)
    assert derive(1, 2) != derive(2, 1)
    with pytest.raises(TypeError):
        derive(1.5)
    with pytest.raises(TypeError):
        derive(True)
    with pytest.raises(ValueError):
        derive("a/b")
    with pytest.raises(ValueError):
        derive()


def test_tensor_spec_follows_the_contract():
    spec = tensor_spec(EXAMPLE, n_layers=8)
    assert (spec.source, spec.rank, spec.alpha, spec.scaling) == ("seed_chain", 16, 32.0, 2.0)
    assert spec.layers == (0, 2, 5) and spec.layers_to_transform == (0, 2, 5)
    assert spec.weights_hash == EXAMPLE.weights_hash()
    assert [(m.layer, m.target) for m in spec.modules] == [(l, t) for l in (0, 2, 5) for t in EXAMPLE.targets]
    for m in spec.modules:
        assert m.init_seed_a == derive("init", 12345, m.layer, m.target, "A")
        assert m.noise == tuple((derive("noise", s, m.layer, m.target, "A"), derive("noise", s, m.layer, m.target, "B"), sigma)
                                for s, sigma in EXAMPLE.mutations)
    assert tensor_spec(EXAMPLE) == spec  # n_layers only checks listed layers


def test_tensor_spec_all_layers_and_trained():
    g = LoraGene(enabled=True, init_seed=3)
    spec = tensor_spec(g, n_layers=4)
    assert spec.layers == (0, 1, 2, 3) and spec.layers_to_transform is None and len(spec.modules) == 8
    assert all(m.noise == () for m in spec.modules)  # no chain: B = 0
    with pytest.raises(ValueError):
        tensor_spec(g)  # all layers, depth unknown
    trained = LoraGene(enabled=True, source="trained", trained_hash=TRAINED_HASH, mutations=((9, 0.01),))
    spec = tensor_spec(trained, n_layers=2)
    assert spec.trained_hash == TRAINED_HASH and all(m.init_seed_a is None and len(m.noise) == 1 for m in spec.modules)
    with pytest.raises(ValueError):
        tensor_spec(LoraGene(), n_layers=2)  # switched off
    with pytest.raises(InputError, match=r"^lora\.layers:"):
        tensor_spec(EXAMPLE, n_layers=5)  # layer 5 does not exist


def test_genomes_lora_imports_no_torch_or_numpy():
    code = "import sys, genomes.lora; assert not {'torch', 'numpy'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
