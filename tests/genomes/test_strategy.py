"""Strategies (genomes.strategy): encoding round-trips, the content hash, rendering,
shipped seeds, JSON / TOML / YAML files, and InputError naming the field at fault."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from fitness.format import parse_completion
from genomes.chat_format import BEGIN_ANSWER, COT, END_ANSWER
from genomes.errors import InputError
from genomes.strategy import (
    SCHEMA_VERSION,
    SEEDS_DIR,
    ChainGene,
    DecodingGene,
    Exemplar,
    Strategy,
    seed_names,
)

REPO = Path(__file__).resolve().parents[2]

# Every field set explicitly, so the pinned hash below does not move with defaults.
FULL = {
    "schema_version": 1,
    "name": "full",
    "prompt": {
        "role": "You are a meticulous mathematician.",
        "approach": "Break the problem into parts.",
        "format_rule": "Use <cot> before each step.",
        "cautions": "Copy numbers exactly.",
        "answer_format": "Answer with a number only.",
        "exemplars": [
            {"question": "What is 12 + 7 - 4?", "steps": ["12 + 7 = 19", "19 - 4 = 15"], "answer": "15",
             "response": "Adding then subtracting gives 15."},
            {"question": "How many r in 'a red car'?", "steps": ["red: 1", "car: 1", "1 + 1 = 2"], "answer": "2",
             "response": ""},
        ],
    },
    "chain": {"step_hints": ["Restate the question.", "Compute.", "State the result."], "max_steps": 5,
              "self_check": True, "prefill": False},
    "decoding": {"model": "smollm2", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256, "votes": 5},
    "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]},
}
FULL_HASH = "7c2ba901ddcf2388"
DEFAULT_FIELDS = {"name", "prompt", "chain", "decoding", "lora", "schema_version"}


def full() -> Strategy:
    return Strategy.decode(copy.deepcopy(FULL))


def with_field(path: str, value):
    """FULL with one dotted field replaced (or added)."""
    data = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


def without_field(path: str):
    data = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    del node[last]
    return data


# ---- encoding ------------------------------------------------------------------------
def test_decode_builds_the_genes():
    s = full()
    assert s.name == "full"
    assert s.prompt.exemplars[0] == Exemplar("What is 12 + 7 - 4?", ("12 + 7 = 19", "19 - 4 = 15"), "15",
                                             "Adding then subtracting gives 15.")
    assert isinstance(s.prompt.exemplars, tuple) and isinstance(s.chain.step_hints, tuple)
    assert s.chain == ChainGene(("Restate the question.", "Compute.", "State the result."), 5, True, False)
    assert s.decoding == DecodingGene("smollm2", 0.7, 0.9, 256, 5)
    assert s.lora == {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}


NEAREST = replace(full(), prompt=replace(full().prompt, exemplar_choice="nearest_only"))


@pytest.mark.parametrize("strategy", [Strategy(), full(), NEAREST], ids=["default", "full", "nearest"])
def test_encode_json_decode_round_trip(strategy):
    data = strategy.encode()
    assert set(data) == DEFAULT_FIELDS
    assert data["schema_version"] == SCHEMA_VERSION
    back = Strategy.decode(json.loads(json.dumps(data)))
    assert back == strategy
    assert back.content_hash() == strategy.content_hash()
    assert back.encode() == data


def test_decode_of_empty_object_is_the_default():
    assert Strategy.decode({}) == Strategy()
    assert Strategy.decode({"decoding": {"temperature": 1}}).decoding.temperature == 1.0  # int is a float
    assert isinstance(Strategy.decode({"decoding": {"temperature": 1}}).decoding.temperature, float)


def test_save_then_load(tmp_path):
    path = tmp_path / "s.json"
    full().save(path)
    assert Strategy.load(path) == full()
    assert json.loads(path.read_text())["name"] == "full"


# ---- content hash ----------------------------------------------------------------------
def test_content_hash_is_pinned():
    h = full().content_hash()
    assert h == FULL_HASH
    assert len(h) == 16 and int(h, 16) >= 0


def test_content_hash_is_the_same_in_another_process():
    code = textwrap.dedent(f"""
        from genomes.strategy import Strategy
        print(Strategy.decode({FULL!r}).content_hash(), Strategy().content_hash())
    """)
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [full().content_hash(), Strategy().content_hash()]


def test_exemplar_choice_is_encoded_only_when_not_the_default():
    # Strategies written before the field existed keep their hash (FULL_HASH is one).
    assert "exemplar_choice" not in full().encode()["prompt"]
    assert NEAREST.encode()["prompt"]["exemplar_choice"] == "nearest_only"
    assert Strategy.decode(with_field("prompt.exemplar_choice", "fixed")).content_hash() == FULL_HASH


def test_constrain_is_encoded_only_when_on():
    # strategies written before the field existed keep their hash
    assert "constrain" not in full().encode()["decoding"]
    assert Strategy.decode(with_field("decoding.constrain", "off")).content_hash() == FULL_HASH
    assert Strategy.decode(with_field("decoding.constrain", "answer")).encode()["decoding"]["constrain"] == "answer"


def test_content_hash_ignores_the_name():
    assert replace(full(), name="renamed").content_hash() == full().content_hash()
    assert Strategy(name="a").content_hash() == Strategy(name="b").content_hash()


GENE_CHANGES = [
    ("prompt.role", "You are terse."),
    ("prompt.approach", "Guess."),
    ("prompt.format_rule", "Any format."),
    ("prompt.cautions", ""),
    ("prompt.answer_format", "Words are fine."),
    ("prompt.exemplars", []),
    ("prompt.exemplars", list(reversed(FULL["prompt"]["exemplars"]))),
    ("prompt.exemplar_choice", "nearest_last"),
    ("prompt.exemplar_choice", "nearest_only"),
    ("chain.step_hints", ["Compute."]),
    ("chain.max_steps", 6),
    ("chain.self_check", False),
    ("chain.prefill", True),
    ("decoding.model", "other"),
    ("decoding.temperature", 0.8),
    ("decoding.top_p", 0.95),
    ("decoding.max_new_tokens", 255),
    ("decoding.votes", 3),
    ("decoding.constrain", "structure"),
    ("decoding.constrain", "answer"),
    ("lora", None),
    ("lora", {"rank": 16, "alpha": 16, "targets": ["q_proj", "v_proj"]}),
]


@pytest.mark.parametrize("path,value", GENE_CHANGES, ids=[f"{p}={v!r}"[:40] for p, v in GENE_CHANGES])
def test_content_hash_changes_with_every_gene(path, value):
    changed = Strategy.decode(with_field(path, value))
    assert changed != full()
    assert changed.content_hash() != FULL_HASH


def test_content_hash_changes_with_exemplar_fields():
    for key, value in [("question", "What is 12 + 8 - 4?"), ("answer", "16"), ("response", "x"),
                       ("steps", ["12 + 7 = 19"])]:
        data = copy.deepcopy(FULL)
        data["prompt"]["exemplars"][0][key] = value
        assert Strategy.decode(data).content_hash() != FULL_HASH, key


# ---- rendering -------------------------------------------------------------------------
def test_render_full_strategy():
    s = full()
    r = s.render("What is 3 + 4?")
    roles = [m["role"] for m in r.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert r.messages[-1] == {"role": "user", "content": "What is 3 + 4?"}
    system = r.messages[0]["content"]
    for fragment in ("You are a meticulous mathematician.", "Break the problem into parts.", "Copy numbers exactly.",
                     "Answer with a number only.", "Use at most 5 steps.", "Check the result once more."):
        assert fragment in system
    assert f"{COT} Restate the question. {COT} Compute. {COT} State the result." in system
    assert system.index("meticulous") < system.index("Break the problem")  # role before approach
    assert r.prefill == ""  # chain.prefill is False
    for i, ex in enumerate(s.prompt.exemplars):
        user, assistant = r.messages[1 + 2 * i], r.messages[2 + 2 * i]
        assert user["content"] == ex.question
        parsed = parse_completion(assistant["content"])
        assert parsed.steps == ex.steps
        assert parsed.answer == ex.answer
        assert parsed.answer_problem is None
        assert parsed.response == (ex.response or None)


def test_render_default_strategy():
    r = Strategy().render("Q?")
    assert [m["role"] for m in r.messages] == ["system", "user"]
    assert r.messages[1]["content"] == "Q?"
    assert r.prefill == COT == "<cot>"
    assert BEGIN_ANSWER in r.messages[0]["content"] and END_ANSWER in r.messages[0]["content"]
    assert "Follow this chain" not in r.messages[0]["content"]  # no step hints, no self-check
    assert "  " not in r.messages[0]["content"]  # the empty cautions slot leaves no gap


def test_render_is_pure():
    s = full()
    assert s.render("a") == s.render("a")
    assert s.render("a").messages[:-1] == s.render("b").messages[:-1]
    assert s == full()


def test_prefill_follows_the_chain_gene():
    assert replace(full(), chain=replace(full().chain, prefill=True)).render("q").prefill == "<cot>"
    assert replace(Strategy(), chain=ChainGene(prefill=False)).render("q").prefill == ""


# ---- shipped seeds ---------------------------------------------------------------------
SEED_FILES = sorted(SEEDS_DIR.glob("*.json"))


def test_seed_names_lists_the_seed_files():
    if SEEDS_DIR.is_dir() and any(SEEDS_DIR.iterdir()):
        assert SEED_FILES, f"{SEEDS_DIR} has files but no *.json seed"
    assert seed_names() == sorted(p.stem for p in SEED_FILES)


@pytest.mark.parametrize("path", SEED_FILES, ids=[p.stem for p in SEED_FILES])
def test_every_shipped_seed_loads(path):
    by_name = Strategy.load(path.stem)
    assert by_name == Strategy.load(path)
    assert by_name.name == path.stem
    assert json.loads(path.read_text()).get("schema_version", SCHEMA_VERSION) == SCHEMA_VERSION
    rendered = by_name.render("What is 2 + 2?")
    assert rendered.messages[-1]["content"] == "What is 2 + 2?"
    for i, ex in enumerate(by_name.prompt.exemplars):
        parsed = parse_completion(rendered.messages[2 + 2 * i]["content"])
        assert (parsed.steps, parsed.answer) == (ex.steps, ex.answer)


# ---- file formats ----------------------------------------------------------------------
TOML_TEXT = """\
schema_version = 1
name = "full"

[prompt]
role = "You are a meticulous mathematician."
approach = "Break the problem into parts."
format_rule = "Use <cot> before each step."
cautions = "Copy numbers exactly."
answer_format = "Answer with a number only."

[[prompt.exemplars]]
question = "What is 12 + 7 - 4?"
steps = ["12 + 7 = 19", "19 - 4 = 15"]
answer = "15"
response = "Adding then subtracting gives 15."

[[prompt.exemplars]]
question = "How many r in 'a red car'?"
steps = ["red: 1", "car: 1", "1 + 1 = 2"]
answer = "2"

[chain]
step_hints = ["Restate the question.", "Compute.", "State the result."]
max_steps = 5
self_check = true
prefill = false

[decoding]
model = "smollm2"
temperature = 0.7
top_p = 0.9
max_new_tokens = 256
votes = 5

[lora]
rank = 8
alpha = 16
targets = ["q_proj", "v_proj"]
"""

YAML_TEXT = """\
schema_version: 1
name: full
prompt:
  role: You are a meticulous mathematician.
  approach: Break the problem into parts.
  format_rule: Use <cot> before each step.
  cautions: Copy numbers exactly.
  answer_format: Answer with a number only.
  exemplars:
    - question: What is 12 + 7 - 4?
      steps: ["12 + 7 = 19", "19 - 4 = 15"]
      answer: "15"
      response: Adding then subtracting gives 15.
    - question: How many r in 'a red car'?
      steps: ["red: 1", "car: 1", "1 + 1 = 2"]
      answer: "2"
chain:
  step_hints: [Restate the question., Compute., State the result.]
  max_steps: 5
  self_check: true
  prefill: false
decoding:
  model: smollm2
  temperature: 0.7
  top_p: 0.9
  max_new_tokens: 256
  votes: 5
lora: {rank: 8, alpha: 16, targets: [q_proj, v_proj]}
"""


def test_json_toml_and_yaml_files_give_the_same_strategy(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(FULL, indent=1))
    (tmp_path / "s.toml").write_text(TOML_TEXT)
    (tmp_path / "s.yaml").write_text(YAML_TEXT)
    (tmp_path / "s.yml").write_text(YAML_TEXT)
    loaded = [Strategy.load(tmp_path / f) for f in ("s.json", "s.toml", "s.yaml", "s.yml")]
    assert all(s == full() for s in loaded)
    assert {s.content_hash() for s in loaded} == {FULL_HASH}
    assert Strategy.load(str(tmp_path / "s.toml")) == full()  # a str path works too


# ---- bad input -------------------------------------------------------------------------
def raises_naming(data, field: str, *more: str):
    with pytest.raises(InputError) as err:
        Strategy.decode(data)
    message = str(err.value)
    assert field in message, message
    for m in more:
        assert m in message, message
    return message


def test_unknown_fields_are_rejected():
    raises_naming({**FULL, "nmae": "x"}, "strategy.nmae", "unknown field")
    raises_naming(with_field("decoding.temprature", 0.5), "strategy.decoding.temprature", "unknown field")
    raises_naming(with_field("chain.maxsteps", 3), "strategy.chain.maxsteps", "unknown field")
    raises_naming(with_field("prompt.rol", "x"), "strategy.prompt.rol", "unknown field")
    data = copy.deepcopy(FULL)
    data["prompt"]["exemplars"][1]["anwser"] = "2"
    raises_naming(data, "strategy.prompt.exemplars[1].anwser", "unknown field")


@pytest.mark.parametrize("path,value", [
    ("decoding.max_new_tokens", "many"),
    ("decoding.max_new_tokens", True),  # a bool is not an int
    ("decoding.max_new_tokens", 12.5),
    ("decoding.votes", False),
    ("decoding.temperature", "hot"),
    ("decoding.temperature", True),
    ("decoding.model", 3),
    ("chain.prefill", 1),  # an int is not a bool
    ("chain.max_steps", "3"),
    ("chain.step_hints", "Compute."),
    ("chain.step_hints", ["ok", 3]),
    ("prompt.role", None),
    ("prompt.exemplar_choice", 3),
    ("prompt.exemplars", {"question": "q"}),
    ("decoding", [1, 2]),
    ("prompt", "be smart"),
    ("lora", "rank 8"),
    ("name", 7),
])
def test_wrong_types_name_the_field(path, value):
    raises_naming(with_field(path, value), f"strategy.{path}")


def test_wrong_type_at_the_top():
    raises_naming([FULL], "strategy", "expected a table/object")
    raises_naming("x", "strategy", "expected a table/object")


@pytest.mark.parametrize("path,value,why", [
    ("decoding.temperature", -0.1, "must be >= 0"),
    ("decoding.temperature", float("nan"), "must be >= 0"),
    ("decoding.temperature", float("inf"), "must be finite"),
    ("decoding.top_p", 0, "must be in (0, 1]"),
    ("decoding.top_p", 1.01, "must be in (0, 1]"),
    ("decoding.max_new_tokens", 0, "must be in [1, 8192]"),
    ("decoding.max_new_tokens", 100_000, "must be in [1, 8192]"),
    ("decoding.votes", 0, "must be in [1, 64]"),
    ("chain.max_steps", 0, "must be in [1, 64]"),
    ("chain.max_steps", 65, "must be in [1, 64]"),
    ("prompt.exemplar_choice", "nearest", "must be one of fixed, nearest_last, nearest_only"),
    ("decoding.constrain", "strict", "must be one of off, structure, answer"),
])
def test_out_of_range_values_name_the_field(path, value, why):
    raises_naming(with_field(path, value), f"strategy.{path}", why)


def test_votes_need_a_temperature():
    data = with_field("decoding.temperature", 0.0)
    assert data["decoding"]["votes"] == 5
    raises_naming(data, "strategy.decoding.votes", "self-consistency needs temperature > 0")
    data["decoding"]["votes"] = 1
    assert Strategy.decode(data).decoding.votes == 1  # greedy single pass is fine


@pytest.mark.parametrize("field", ["answer", "question"])
def test_exemplar_missing_a_required_field(field):
    raises_naming(without_field(f"prompt.exemplars.1.{field}"), f"strategy.prompt.exemplars[1].{field}", "missing")


def test_exemplar_steps_are_optional():
    s = Strategy.decode(without_field("prompt.exemplars.1.steps"))
    assert s.prompt.exemplars[1].steps == ()
    parsed = parse_completion(s.render("q").messages[4]["content"])
    assert (parsed.steps, parsed.answer) == ((), "2")


@pytest.mark.parametrize("key,value,why", [
    ("answer", "", "must not be empty"),
    ("answer", "  ", "must not be empty"),
    ("answer", 15, "expected str"),
    ("answer", f"4 {END_ANSWER} 5", "format marker"),
    ("steps", ["ok", " "], "must not be empty"),
    ("steps", [f"a {COT} b"], "format marker"),
    ("response", f"done {BEGIN_ANSWER}", "format marker"),
])
def test_exemplars_that_would_render_malformed_are_rejected(key, value, why):
    data = copy.deepcopy(FULL)
    data["prompt"]["exemplars"][0][key] = value
    raises_naming(data, f"strategy.prompt.exemplars[0].{key}", why)


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "chain": {"max_steps": }\n}\n')
    with pytest.raises(InputError, match=r"bad\.json: malformed JSON at line 3 column 26"):
        Strategy.load(path)


def test_malformed_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[decoding\ntemperature = 0.5\n')
    with pytest.raises(InputError, match=r"bad\.toml: malformed TOML: .*line 2"):
        Strategy.load(path)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndecoding:\n  temperature: [0.5\n")
    with pytest.raises(InputError, match=r"bad\.yaml: malformed YAML"):
        Strategy.load(path)


def test_non_mapping_yaml(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(InputError, match=r"list\.yaml: expected a table/object, got list"):
        Strategy.load(path)


def test_field_errors_in_files_name_the_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[decoding]\ntemprature = 0.5\n")
    with pytest.raises(InputError, match=r"typo\.toml\.decoding\.temprature: unknown field"):
        Strategy.load(path)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "strategy.json"
    with pytest.raises(InputError, match="strategy file not found") as err:
        Strategy.load(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(InputError, match="not_a_seed"):
        Strategy.load("not_a_seed")
    with pytest.raises(InputError, match="strategy file not found"):
        Strategy.load(tmp_path)  # a directory is not a strategy file


@pytest.mark.parametrize("version", [0, 2, "1"])
def test_unsupported_schema_version(version):
    raises_naming({**FULL, "schema_version": version}, "strategy.schema_version", "unsupported version")


def test_the_error_type_is_a_value_error():
    # callers that catch ValueError keep working
    with pytest.raises(ValueError):
        Strategy.decode({"decoding": {"votes": 0}})
    assert issubclass(InputError, ValueError)
