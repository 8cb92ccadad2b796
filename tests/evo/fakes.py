"""Test doubles shared by the evo tests (and the crash-test subprocess runner)."""

from __future__ import annotations

import json
import re

from evo.config.sections import RunConfig
from fitness.backends.base import Completion
from genomes.chat_format import format_completion


class ArithmeticOracle:
    """Answers chain_sum questions correctly iff the request allows >= 96 new tokens,
    so selection has a real signal to find; records every request it sees."""

    def __init__(self, garbage: bool = False, count_file: str | None = None):
        self.garbage = garbage
        self.requests = []
        self.count_file = count_file  # a crash-test subprocess reports its request count here

    def generate(self, requests, progress=None):
        self.requests += requests
        out = []
        for r in requests:
            question = r.messages[-1]["content"]
            match = re.search(r"problem: (.*) =", question)
            if "Rewrite this instruction" in question or "Write one short instruction" in question:
                text = "Check every digit twice."
            elif self.garbage or not match:
                text = "\x00\ufffd" * 40
            elif r.sampling.max_new_tokens >= 96:
                text = format_completion([match.group(1)], str(eval(match.group(1))), f"It is {eval(match.group(1))}.")
            else:
                text = format_completion([match.group(1)], "12345")
            out.append(Completion(text, 10, 20, "stop"))
        if progress:
            progress(len(requests))
        if self.count_file:
            with open(self.count_file, "a") as f:
                f.write(f"{len(requests)}\n")
        return out

    def count_tokens(self, text):
        return len(text.split())


class AdapterHelps(ArithmeticOracle):
    """Right on even sums without an adapter (so the journal holds right and wrong
    answers), always right with one: a trained adapter visibly helps."""

    def generate(self, requests, progress=None):
        out = super().generate(requests, progress)
        fixed = []
        for request, completion in zip(requests, out):
            match = re.search(r"problem: (.*) =", request.messages[-1]["content"])
            if match and request.adapter is None and eval(match.group(1)) % 2:
                completion = Completion(format_completion([match.group(1)], "1"), 10, 20, "stop")
            fixed.append(completion)
        return fixed

    def materialise_lora(self, gene):
        return f"adapter-{gene.weights_hash()}"


class FakeTrainer:
    """Writes a small PEFT-shaped adapter into the run's store, as train_adapter does."""

    def __init__(self, fail_at_call: int | None = None, broken: bool = False):
        self.calls, self.fail_at_call, self.broken = 0, fail_at_call, broken

    def __call__(self, rows, run_dir, weights, settings, **kw):
        import torch
        from peft import LoraConfig
        from safetensors.torch import save_file

        from evo.distill.train import TrainedAdapter, trained_gene

        self.calls += 1
        if self.fail_at_call == self.calls:
            raise RuntimeError("killed")  # stands for a kill: not a handled error
        assert rows and len(kw["example_weights"]) == len(rows)
        path = run_dir / "adapters" / "trained" / f"fake{self.calls}"
        path.mkdir(parents=True)
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM").save_pretrained(str(path))
        if not self.broken:
            save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 8)},
                      str(path / "adapter_model.safetensors"))
            gene = trained_gene(path)
        else:
            gene = None
        return TrainedAdapter(path, f"fake{self.calls}", gene, {"train_loss": 0.5})


def config(tmp_path, **sections) -> RunConfig:
    data = {
        "run": {"name": "t", "out_dir": str(tmp_path), "generations": 3, "seed": 1},
        "population": {"size": 4, "offspring": 4, "seeds": ["direct", "stepwise"]},
        "tasks": {"families": ["chain_sum"], "per_family": 3, "heldout_per_family": 4},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return RunConfig.from_dict(data)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


