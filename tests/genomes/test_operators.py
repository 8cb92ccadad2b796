"""Genetic operators (genomes.operators) and the fragment library (genomes.fragments):
purity, determinism, validity of every output, limits, crossover inheritance, the
global random state, correctness of the shipped exemplars, and the LLM-rewrite
sanitiser."""

from __future__ import annotations

import copy
import dataclasses
import random
import re
import subprocess
import sys
from dataclasses import fields, replace

import pytest

from fitness.format import normalise_space, parse_completion
from genomes import operators as ops
from genomes.chat_format import MARKERS, format_completion
from genomes.exemplar_choice import EXEMPLAR_CHOICES, choose_exemplars, same_kind
from genomes.fragments import (
    ANSWER_FORMATS,
    APPROACHES,
    CAUTIONS,
    EXEMPLARS,
    ROLES,
    SLOT_FRAGMENTS,
    STEP_HINTS,
)
from genomes.operators import (
    MAX_EXEMPLARS,
    MAX_HINTS,
    MAX_REWRITE_CHARS,
    PROMPT_SLOTS,
    STEPS_RANGE,
    TOKEN_GRID,
    VOTES,
    apply_rewrite,
    cx_chain,
    cx_decoding,
    cx_prompt,
    cx_strategy,
    mut_chain,
    mut_decoding,
    mut_prompt,
    mut_strategy,
    pair_up_exemplars,
    random_strategy,
    rewrite_messages,
    sanitise_rewrite,
)
from genomes.strategy import ChainGene, DecodingGene, PromptGene, Strategy

SEED_NAMES = ("direct", "stepwise", "fewshot")
MODELS = ("default", "other-model")
LORA = {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}


def seeds() -> list[Strategy]:
    return [Strategy.load(n) for n in SEED_NAMES]


def parents() -> list[Strategy]:
    """The shipped seeds, random strategies, one with a LoRA gene and one at the limits."""
    rng = random.Random(99)
    full = replace(
        random_strategy(random.Random(5)),
        prompt=replace(PromptGene(), exemplars=EXEMPLARS[:MAX_EXEMPLARS]),
        chain=ChainGene(step_hints=STEP_HINTS[:MAX_HINTS], max_steps=STEPS_RANGE[1], self_check=True, prefill=False),
        decoding=DecodingGene(temperature=1.5, top_p=0.5, max_new_tokens=TOKEN_GRID[-1], votes=5),
    )
    return seeds() + [random_strategy(rng, MODELS) for _ in range(6)] + [replace(seeds()[1], lora=copy.deepcopy(LORA)), full]


def roundtrips(s: Strategy) -> bool:
    return Strategy.decode(s.encode()) == s


def check_limits(s: Strategy) -> None:
    p, c, d = s.prompt, s.chain, s.decoding
    assert len(p.exemplars) <= MAX_EXEMPLARS
    assert len(set(p.exemplars)) == len(p.exemplars)
    assert len(c.step_hints) <= MAX_HINTS
    assert STEPS_RANGE[0] <= c.max_steps <= STEPS_RANGE[1]
    assert 0.0 <= d.temperature <= 1.5
    assert 0.5 <= d.top_p <= 1.0
    assert d.max_new_tokens in TOKEN_GRID
    assert d.votes in VOTES
    assert d.votes == 1 or d.temperature > 0
    assert d.model in MODELS


# ---- the fragment library -----------------------------------------------------------
@pytest.mark.parametrize("name, pool, lo, hi", [
    ("ROLES", ROLES, 6, 12), ("APPROACHES", APPROACHES, 6, 12), ("CAUTIONS", CAUTIONS, 6, 12),
    ("ANSWER_FORMATS", ANSWER_FORMATS, 6, 12), ("STEP_HINTS", STEP_HINTS, 15, 25),
])
def test_fragment_pools_are_sized_distinct_and_free_of_markers(name, pool, lo, hi):
    assert isinstance(pool, tuple) and lo <= len(pool) <= hi, name
    assert len(set(pool)) == len(pool), f"{name} has duplicates"
    for text in pool:
        assert isinstance(text, str) and text == text.strip() and len(text) <= MAX_REWRITE_CHARS
        assert not any(m in text for m in MARKERS), text
    assert ("" in pool) == (name == "CAUTIONS"), "only the cautions slot may be left empty"


def test_slot_fragments_name_the_prompt_slots():
    assert set(SLOT_FRAGMENTS) == {"role", "approach", "cautions", "answer_format"}
    assert all(hasattr(PromptGene(), slot) for slot in SLOT_FRAGMENTS)


def test_exemplar_pool_is_distinct_and_valid():
    assert 8 <= len(EXEMPLARS) <= 12
    assert len({e.question for e in EXEMPLARS}) == len(EXEMPLARS)
    # Strategy.decode validates exemplars (non-empty answer and steps, no markers).
    data = Strategy(prompt=PromptGene(exemplars=EXEMPLARS)).encode()
    assert Strategy.decode(data).prompt.exemplars == EXEMPLARS
    for e in EXEMPLARS:
        assert e.steps and e.response
        assert not any(m in t for m in MARKERS for t in (e.question, e.answer, e.response, *e.steps))


@pytest.mark.parametrize("exemplar", EXEMPLARS, ids=lambda e: e.question[:30])
def test_exemplar_parses_back_to_its_steps_and_answer(exemplar):
    parsed = parse_completion(format_completion(exemplar.steps, exemplar.answer, exemplar.response))
    assert parsed.steps == tuple(normalise_space(s) for s in exemplar.steps)
    assert parsed.answer == exemplar.answer
    assert parsed.response == exemplar.response
    assert parsed.well_formed


def _expected_answer(question: str):
    """The answer computed from the question, by family; None if not computable."""
    if m := re.fullmatch(r"State the final answer to the following arithmetic problem: (.*) =", question):
        return ("arithmetic", eval(m.group(1), {"__builtins__": {}}))  # digits and + - * / only
    if m := re.fullmatch(r"Calculate (.*)\.", question):
        return ("arithmetic", eval(m.group(1), {"__builtins__": {}}))
    if m := re.fullmatch(r'How many times does the letter "(.)" appear in the text: "(.*)"\?', question):
        return ("letters", str(m.group(2).count(m.group(1))))
    if m := re.fullmatch(r"Spell this word backward \(example: sun -> nus\): (\w+)", question):
        return ("backward", m.group(1)[::-1])
    if m := re.fullmatch(r"Sort these words in (ascending|descending) order .*list: (.*)", question):
        words = [w.strip() for w in m.group(2).split(",")]
        return ("sorting", ", ".join(sorted(words, reverse=m.group(1) == "descending")))
    if m := re.fullmatch(r"How many 1 bits are there in the binary representation of the number (\d+)\?", question):
        return ("bits", str(int(m.group(1)).bit_count()))
    if question.startswith("Consider these statements:"):
        return ("syllogism", None)
    return (None, None)


def test_exemplars_cover_the_families_and_their_answers_are_correct():
    families = set()
    for e in EXEMPLARS:
        family, expected = _expected_answer(e.question)
        assert family is not None, f"no checker for exemplar {e.question!r}"
        families.add(family)
        if family == "arithmetic":
            assert re.fullmatch(r"[\d\s+\-*/]+", e.question.split(":")[-1].replace("Calculate", "").strip(" =."))
            assert float(e.answer) == expected, e.question
        elif family == "syllogism":
            assert e.answer in ("Yes", "No")
        else:
            assert e.answer == expected, e.question
    assert families == {"arithmetic", "letters", "backward", "sorting", "bits", "syllogism"}


def test_arithmetic_exemplar_steps_are_correct():
    for e in EXEMPLARS:
        if _expected_answer(e.question)[0] != "arithmetic":
            continue
        for step in e.steps:
            lhs, rhs = step.split("=")
            assert eval(lhs, {"__builtins__": {}}) == float(rhs), step
        assert float(e.steps[-1].split("=")[1]) == float(e.answer)


def test_syllogism_answers():
    answers = {re.search(r"follow that:\n(.*)\?", e.question).group(1): e.answer
               for e in EXEMPLARS if e.question.startswith("Consider")}
    assert answers == {"All cats are animals": "Yes", "Some dogs are birds": "No"}


# ---- purity, determinism, the global random state ------------------------------------
def _calls(rng_seed: int, a: Strategy, b: Strategy):
    """Every operator applied to (a, b) with a fresh rng of the given seed."""
    def rng():
        return random.Random(rng_seed)
    return {
        "mut_prompt": lambda: mut_prompt(a.prompt, rng()),
        "mut_chain": lambda: mut_chain(a.chain, rng()),
        "mut_decoding": lambda: mut_decoding(a.decoding, rng(), MODELS),
        "cx_prompt": lambda: cx_prompt(a.prompt, b.prompt, rng()),
        "cx_chain": lambda: cx_chain(a.chain, b.chain, rng()),
        "cx_decoding": lambda: cx_decoding(a.decoding, b.decoding, rng()),
        "mut_strategy": lambda: mut_strategy(a, rng(), MODELS),
        "cx_strategy": lambda: cx_strategy(a, b, rng()),
        "random_strategy": lambda: random_strategy(rng(), MODELS),
        "apply_rewrite": lambda: apply_rewrite(a.prompt, "approach", "  'Go slowly.'\nmore"),
        "rewrite_messages": lambda: rewrite_messages(a.prompt.approach, "approach"),
    }


def _pairs():
    ps = parents()
    return [(ps[i], ps[(i * 3 + 1) % len(ps)]) for i in range(len(ps))]


def test_operators_never_modify_their_inputs():
    for seed in range(30):
        for a, b in _pairs():
            before = (copy.deepcopy(a), copy.deepcopy(b), a.encode(), b.encode())
            for name, call in _calls(seed, a, b).items():
                call()
                assert (a, b, a.encode(), b.encode()) == (before[0], before[1], before[2], before[3]), name


def test_lora_is_copied_not_shared():
    a = replace(seeds()[0], lora=copy.deepcopy(LORA))
    b = replace(seeds()[2], lora={"rank": 4})
    child, _ = mut_strategy(a, random.Random(0))
    assert child.lora == a.lora and child.lora is not a.lora
    for c in cx_strategy(a, b, random.Random(1)):
        assert c.lora in (a.lora, b.lora) and c.lora is not a.lora and c.lora is not b.lora


def _frozen(value):
    if isinstance(value, tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Strategy):
        return value.encode()
    return value


def test_same_seed_gives_the_same_outputs():
    for seed in range(20):
        for a, b in _pairs():
            first = {k: _frozen(f()) for k, f in _calls(seed, a, b).items()}
            second = {k: _frozen(f()) for k, f in _calls(seed, a, b).items()}
            assert first == second


def test_random_strategy_is_deterministic_and_varied():
    one = [random_strategy(random.Random(s)).encode() for s in range(40)]
    two = [random_strategy(random.Random(s)).encode() for s in range(40)]
    assert one == two
    assert len({Strategy.decode(d).content_hash() for d in one}) == 40


def test_global_random_state_is_untouched():
    random.seed(12345)
    state = random.getstate()
    for seed in range(10):
        for a, b in _pairs():
            for f in _calls(seed, a, b).values():
                f()
    assert random.getstate() == state


def test_genomes_stay_free_of_heavy_and_upstream_imports():
    code = (
        "import sys, genomes.operators, genomes.fragments\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'fitness', 'evo')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- validity and limits -------------------------------------------------------------
def test_500_chained_operations_from_the_seeds_stay_valid():
    rng = random.Random(2024)
    population = seeds()
    for _ in range(500):
        if rng.random() < 0.6:
            child, op = mut_strategy(rng.choice(population), rng, MODELS)
            assert op in ("mut_prompt", "mut_chain", "mut_decoding")
            children = [child]
        else:
            children = list(cx_strategy(rng.choice(population), rng.choice(population), rng))
        for child in children:
            assert roundtrips(child), child
            check_limits(child)
            assert child.name == f"s-{child.content_hash()[:8]}"
        population = (population + children)[-30:]


def test_random_strategies_are_valid():
    for seed in range(200):
        s = random_strategy(random.Random(seed), MODELS)
        assert roundtrips(s)
        check_limits(s)
        assert s.lora is None and s.chain.prefill


def test_limits_hold_at_the_edges():
    rng = random.Random(3)
    full_prompt = PromptGene(exemplars=EXEMPLARS[:MAX_EXEMPLARS])
    full_chain = ChainGene(step_hints=STEP_HINTS[:MAX_HINTS], max_steps=STEPS_RANGE[1])
    short_chain = ChainGene(step_hints=(), max_steps=STEPS_RANGE[0])
    for _ in range(300):
        assert len(mut_prompt(full_prompt, rng).exemplars) <= MAX_EXEMPLARS
        assert len(mut_chain(full_chain, rng).step_hints) <= MAX_HINTS
        assert STEPS_RANGE[0] <= mut_chain(full_chain, rng).max_steps <= STEPS_RANGE[1]
        assert STEPS_RANGE[0] <= mut_chain(short_chain, rng).max_steps <= STEPS_RANGE[1]
        d = mut_decoding(DecodingGene(temperature=0.0, votes=1), rng)
        assert d.votes == 1 or d.temperature >= ops.MIN_VOTING_TEMPERATURE
        d = mut_decoding(DecodingGene(temperature=0.4, votes=5), rng)
        assert d.votes == 1 or d.temperature > 0


def test_voting_raises_the_temperature_and_greedy_drops_the_votes():
    rng = random.Random(8)
    seen_votes = seen_greedy = False
    for _ in range(400):
        d = mut_decoding(DecodingGene(temperature=0.0, votes=1), rng)
        if d.votes > 1:
            seen_votes = True
            assert d.temperature >= ops.MIN_VOTING_TEMPERATURE
        d = mut_decoding(DecodingGene(temperature=0.7, votes=3), rng)
        if d.temperature == 0:
            seen_greedy = True
            assert d.votes == 1
    assert seen_votes and seen_greedy


def test_model_comes_from_the_configured_list():
    rng = random.Random(4)
    models = {mut_decoding(DecodingGene(model="a"), rng, ("a", "b", "c")).model for _ in range(300)}
    assert models == {"a", "b", "c"}
    assert all(mut_decoding(DecodingGene(), rng).model == "default" for _ in range(100))
    with pytest.raises(ValueError):
        mut_decoding(DecodingGene(), rng, ())


def test_mut_chain_never_toggles_prefill():
    rng = random.Random(6)
    for prefill in (True, False):
        gene = ChainGene(step_hints=STEP_HINTS[:2], prefill=prefill)
        for _ in range(200):
            gene = mut_chain(gene, rng)
            assert gene.prefill is prefill


def test_mut_prompt_uses_the_library_and_the_pool():
    rng = random.Random(7)
    gene = PromptGene()
    for _ in range(300):
        new = mut_prompt(gene, rng)
        for slot, pool in SLOT_FRAGMENTS.items():
            assert getattr(new, slot) == getattr(gene, slot) or getattr(new, slot) in pool
        assert set(new.exemplars) <= set(gene.exemplars) | set(EXEMPLARS)
        gene = new
    # An empty pool leaves only slot changes; a custom pool is where exemplars come from.
    assert all(mut_prompt(PromptGene(), rng, exemplar_pool=()).exemplars == () for _ in range(50))
    custom = (EXEMPLARS[0],)
    assert {e for _ in range(50) for e in mut_prompt(PromptGene(), rng, exemplar_pool=custom).exemplars} <= set(custom)


def _kind_counts(exemplars) -> list[int]:
    return [sum(same_kind(e.question, other.question) for other in exemplars) for e in exemplars]


def test_pair_up_gives_every_kind_of_the_pool_two_exemplars_shown_nearest_two():
    fewshot = Strategy.load("fewshot").prompt  # one chain-sum and one letter-counting exemplar
    chain, _, calc_a, calc_b, letter = pool = EXEMPLARS[:5]  # chain sum x2, "Calculate" x2, letters
    before = copy.deepcopy(fewshot)
    partners = set()
    for seed in range(20):
        out = pair_up_exemplars(fewshot, pool, random.Random(seed))
        partners |= set(out.exemplars) & set(pool[:2])
        assert fewshot == before  # pure
        assert out.exemplars[:2] == fewshot.exemplars  # the gene's own exemplars stay first, in order
        assert len(out.exemplars) == 6 and len(set(out.exemplars)) == 6
        assert _kind_counts(out.exemplars) == [2] * 6
        assert {calc_a, calc_b, letter} <= set(out.exemplars)
        assert out.exemplar_choice == "nearest_two"
        assert Strategy.decode(replace(Strategy.load("fewshot"), prompt=out).encode()).prompt == out
        # each question sees the two exemplars of its own kind and nothing else
        for exemplar in pool:
            shown = choose_exemplars(out.exemplars, exemplar.question, out.exemplar_choice)
            assert len(shown) == 2 and all(same_kind(e.question, exemplar.question) for e in shown)
    # fewshot's chain-sum exemplar gets one partner, drawn from the pool's two chain sums
    assert partners == {chain, pool[1]}


def test_pair_up_respects_the_exemplar_cap_and_refills_a_missing_pair():
    full = pair_up_exemplars(PromptGene(), EXEMPLARS, random.Random(0))  # 7 kinds in the library
    assert len(full.exemplars) == MAX_EXEMPLARS
    assert all(count <= 2 for count in _kind_counts(full.exemplars))
    paired = pair_up_exemplars(Strategy.load("fewshot").prompt, EXEMPLARS[:5], random.Random(0))
    rng = random.Random(3)
    # at the cap nothing is added, by pair-up or otherwise
    assert all(len(mut_prompt(paired, rng, EXEMPLARS[:5]).exemplars) <= MAX_EXEMPLARS for _ in range(200))
    # one exemplar short and back to "fixed": one mutation (pair-up) restores a full pairing
    one_short = replace(paired, exemplars=paired.exemplars[:5], exemplar_choice="fixed")
    outs = [mut_prompt(one_short, rng, EXEMPLARS[:5]) for _ in range(300)]
    refilled = [g for g in outs if len(g.exemplars) == 6 and g.exemplar_choice == "nearest_two"]
    assert refilled and all(g.exemplars[:5] == one_short.exemplars for g in refilled)
    assert all(_kind_counts(g.exemplars) == [2] * 6 for g in refilled)


# ---- mutation changes something --------------------------------------------------------
@pytest.mark.parametrize("op", ["mut_prompt", "mut_chain", "mut_decoding"])
def test_gene_mutation_always_changes_the_gene(op):
    rng = random.Random(11)
    for i in range(200):
        s = parents()[i % 11] if i < 11 else random_strategy(rng, MODELS)
        if op == "mut_prompt":
            gene, out = s.prompt, mut_prompt(s.prompt, rng)
        elif op == "mut_chain":
            gene, out = s.chain, mut_chain(s.chain, rng)
        else:
            gene, out = s.decoding, mut_decoding(s.decoding, rng, MODELS)
        assert out != gene


def test_mut_strategy_changes_the_hash_and_exactly_the_reported_gene():
    rng = random.Random(12)
    changed, used = 0, set()
    population = parents()
    for _ in range(200):
        s = rng.choice(population)
        out, op = mut_strategy(s, rng, MODELS)
        changed += out.content_hash() != s.content_hash()
        gene = op.removeprefix("mut_")
        used.add(gene)
        for other in ("prompt", "chain", "decoding"):
            assert (getattr(out, other) != getattr(s, other)) == (other == gene), (op, other)
        assert out.lora == s.lora
        population.append(out)
    assert changed / 200 >= 0.95
    assert used == {"prompt", "chain", "decoding"}


def test_gene_weights_pick_the_gene():
    rng = random.Random(13)
    s = seeds()[1]
    assert {mut_strategy(s, rng, gene_weights={"chain": 1.0})[1] for _ in range(30)} == {"mut_chain"}
    assert {mut_strategy(s, rng, gene_weights={"prompt": 0, "decoding": 2})[1] for _ in range(30)} == {"mut_decoding"}
    switched_on, op = mut_strategy(s, rng, gene_weights={"lora": 1.0})  # no gene yet: mutation switches one on
    assert op == "mut_lora" and s.lora is None and switched_on.lora.enabled
    with pytest.raises(ValueError):  # a fixed adapter dict is not evolvable
        mut_strategy(dataclasses.replace(s, lora={"adapter_dir": "x"}), rng, gene_weights={"lora": 1.0})
    with pytest.raises(ValueError):
        mut_strategy(s, rng, gene_weights={"prompt": 0.0})
    from genomes.lora import LoraGene

    with_lora = dataclasses.replace(s, lora=LoraGene(enabled=True))
    child, op = mut_strategy(with_lora, rng, gene_weights={"lora": 1.0})
    assert op == "mut_lora" and child.lora != with_lora.lora and child.prompt == with_lora.prompt


# ---- crossover inheritance ---------------------------------------------------------------
def _is_one_point_child(child: tuple, x: tuple, y: tuple, cap: int, dedupe: bool) -> bool:
    def shape(seq):
        seq = tuple(dict.fromkeys(seq)) if dedupe else seq
        return seq[:cap]
    return any(shape(x[:i] + y[j:]) == child for i in range(len(x) + 1) for j in range(len(y) + 1))


def test_cx_prompt_children_take_every_slot_from_a_parent():
    rng = random.Random(21)
    for _ in range(100):
        a, b = random_strategy(rng).prompt, random_strategy(rng).prompt
        a = replace(a, format_rule="Rule A.", exemplars=tuple(rng.sample(EXEMPLARS, rng.randint(0, 4))),
                    exemplar_choice=rng.choice(EXEMPLAR_CHOICES))
        b = replace(b, format_rule="Rule B.", exemplars=tuple(rng.sample(EXEMPLARS, rng.randint(0, 4))),
                    exemplar_choice=rng.choice(EXEMPLAR_CHOICES))
        c1, c2 = cx_prompt(a, b, rng)
        for slot in PROMPT_SLOTS:
            assert (getattr(c1, slot), getattr(c2, slot)) in (
                (getattr(a, slot), getattr(b, slot)), (getattr(b, slot), getattr(a, slot))), slot
        assert _is_one_point_child(c1.exemplars, a.exemplars, b.exemplars, MAX_EXEMPLARS, dedupe=True)
        assert _is_one_point_child(c2.exemplars, b.exemplars, a.exemplars, MAX_EXEMPLARS, dedupe=True)
        for c in (c1, c2):
            assert len(c.exemplars) <= MAX_EXEMPLARS and len(set(c.exemplars)) == len(c.exemplars)
            # from a parent, or reset where the child has too few exemplars for it to matter
            assert c.exemplar_choice in ((a.exemplar_choice, b.exemplar_choice) if len(c.exemplars) > 1 else ("fixed",))
    assert set(PROMPT_SLOTS) == {f.name for f in fields(PromptGene)} - {"exemplars", "exemplar_choice"}


def test_cx_chain_children_take_every_field_from_a_parent():
    rng = random.Random(22)
    for _ in range(100):
        a = ChainGene(step_hints=tuple(rng.sample(STEP_HINTS, rng.randint(0, 6))), max_steps=rng.randint(1, 12),
                      self_check=rng.random() < 0.5, prefill=True)
        b = ChainGene(step_hints=tuple(rng.sample(STEP_HINTS, rng.randint(0, 6))), max_steps=rng.randint(1, 12),
                      self_check=rng.random() < 0.5, prefill=False)
        c1, c2 = cx_chain(a, b, rng)
        assert _is_one_point_child(c1.step_hints, a.step_hints, b.step_hints, MAX_HINTS, dedupe=False)
        assert _is_one_point_child(c2.step_hints, b.step_hints, a.step_hints, MAX_HINTS, dedupe=False)
        for name in ("max_steps", "self_check"):
            assert (getattr(c1, name), getattr(c2, name)) in (
                (getattr(a, name), getattr(b, name)), (getattr(b, name), getattr(a, name)))
        assert (c1.prefill, c2.prefill) == (True, False)


def test_constrain_mode_comes_from_the_configured_modes():
    rng = random.Random(5)
    modes = {mut_decoding(DecodingGene(), rng, constrain_modes=("off", "structure", "answer")).constrain
             for _ in range(300)}
    assert modes == {"off", "structure", "answer"}
    # with one mode the option is off and the rng is drawn exactly as without the field
    one, other = random.Random(6), random.Random(6)
    assert [mut_decoding(DecodingGene(), one) for _ in range(50)] == \
           [mut_decoding(DecodingGene(), other, constrain_modes=("off",)) for _ in range(50)]
    assert random_strategy(random.Random(1), MODELS) == random_strategy(random.Random(1), MODELS, constrain_modes=("off",))
    assert {random_strategy(random.Random(i), MODELS, constrain_modes=("off", "answer")).decoding.constrain
            for i in range(40)} == {"off", "answer"}


def test_cx_decoding_draws_for_constrain_only_where_the_parents_differ():
    a, b = DecodingGene(temperature=0.5), DecodingGene(top_p=0.9)
    before = random.Random(3)
    children = cx_decoding(a, b, before)
    assert before.random() == (lambda r: ([r.random() for _ in range(5)], r.random())[1])(random.Random(3))
    assert all(c.constrain == "off" for c in children)
    mixed = cx_decoding(DecodingGene(constrain="answer"), DecodingGene(), random.Random(3))
    assert sorted(c.constrain for c in mixed) == ["answer", "off"]


def test_cx_decoding_children_take_every_field_from_a_parent_and_stay_valid():
    rng = random.Random(23)
    for _ in range(300):
        a, b = random_strategy(rng, MODELS).decoding, random_strategy(rng, MODELS).decoding
        for c in cx_decoding(a, b, rng):
            for f in fields(DecodingGene):
                assert getattr(c, f.name) in (getattr(a, f.name), getattr(b, f.name)), f.name
            assert c.votes == 1 or c.temperature > 0


def test_cx_strategy_children_mix_the_parents():
    rng = random.Random(24)
    a = replace(seeds()[2], lora=copy.deepcopy(LORA))
    b = replace(random_strategy(rng), lora=None)
    loras = set()
    for _ in range(50):
        c1, c2 = cx_strategy(a, b, rng)
        assert sorted([c1.lora is None, c2.lora is None]) == [False, True]  # one lora each
        loras.add(c1.lora is None)
        for c in (c1, c2):
            assert roundtrips(c) and c.name == f"s-{c.content_hash()[:8]}"
    assert loras == {True, False}


# ---- LLM rewrite -------------------------------------------------------------------------
def test_rewrite_messages_shape():
    msgs = rewrite_messages("Think step by step.", "approach")
    assert isinstance(msgs, tuple) and [m["role"] for m in msgs] == ["system", "user"]
    assert "Think step by step." in msgs[1]["content"]
    assert "Write one short instruction" in rewrite_messages("", "cautions")[1]["content"]
    with pytest.raises(ValueError):
        rewrite_messages("x", "format_rule")  # the format rule is not rewritable


@pytest.mark.parametrize("raw, expected", [
    ("  Be careful with signs.  ", "Be careful with signs."),
    ('"Be careful with signs."', "Be careful with signs."),
    ("\u201cCheck every digit.\u201d", "Check every digit."),
    ("'Don't guess.'", "Don't guess."),
    ("Work slowly.\nThis second line is commentary.", "Work slowly."),
    ("Here is a clearer version:\n\nSolve one part at a time.", "Solve one part at a time."),
    ("Instruction: Read the question twice.", "Read the question twice."),
    ("Rewritten instruction: \"Count each letter.\"", "Count each letter."),
    ("Add   the\tnumbers  in order.", "Add the numbers in order."),
])
def test_apply_rewrite_sanitises(raw, expected):
    gene = PromptGene()
    out = apply_rewrite(gene, "approach", raw)
    assert out.approach == expected
    assert replace(out, approach=gene.approach) == gene  # nothing else moved


def test_apply_rewrite_caps_length_at_whole_sentences():
    sentence = "Check each step against the question."
    out = apply_rewrite(PromptGene(), "cautions", " ".join([sentence] * 20))
    assert len(out.cautions) <= MAX_REWRITE_CHARS
    assert out.cautions == " ".join([sentence] * (len(out.cautions) // len(sentence)))
    one_long = "word " * 100
    out = apply_rewrite(PromptGene(), "role", one_long)
    assert 0 < len(out.role) <= MAX_REWRITE_CHARS and out.role.startswith("word word")


@pytest.mark.parametrize("raw", [
    "", "   \n  ", '""', "...", None, 42,
    *[f"Use {m} before each step." for m in MARKERS],
    "Start every step with <cot",  # a marker being written
    "Line one.\nthen <end_response> later",
])
def test_apply_rewrite_refuses_bad_output(raw):
    gene = PromptGene(cautions="Copy numbers exactly.")
    assert apply_rewrite(gene, "cautions", raw) is gene
    assert sanitise_rewrite(raw) is None


def test_apply_rewrite_result_is_a_valid_strategy():
    out = apply_rewrite(PromptGene(), "answer_format", "Write only the number.")
    s = Strategy(prompt=out)
    assert roundtrips(s) and s.prompt.answer_format == "Write only the number."
    with pytest.raises(ValueError):
        apply_rewrite(PromptGene(), "exemplars", "x")
