"""Shared audio prefix: encode a recording once, prefill its prompt prefix once, answer all its questions on it.

YODAS2-MCQA asks five questions per recording. The audio encoding depends only on the recording (the audio tower
and projector are frozen and LoRA touches the language model only), so it is computed once and reused across
adapters, RoPE methods and questions. The KV cache of the prompt prefix (chat header + audio + instruction) is
computed once per (recording, adapter, method), in chunks of ``prefill_chunk`` tokens (bounded activations; the
audio RoPE plan of the whole prompt is used for every chunk, so chunking is exact).

The questions then share that **one** copy of the prefix: their suffixes are packed into one sequence behind it
with a block mask (each suffix token sees the prefix and the earlier tokens of its own question; positions restart
after the prefix for every question), and greedy decoding continues every question from there in the same way.
The cache is one buffer sized once for prefix + packed tokens (no per-question copies, no regrowth). Afterwards it
is cropped back to the prefix. Attention kernels that take no 4-D mask (flash-attention 2) run the questions in
turn on the same cache instead. Predictions equal those of evaluating each question alone (same tokens:
:func:`vlat.data.prompts.mcqa_prompt_ids`; tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from vlat.audio import tokens as audio_tokens
from vlat.audio.tokens import AudioTokens, prompt_embeds, time_layout
from vlat.evaluation.scoring import Prediction, parse_answer
from vlat.rope import current_compression, find_audio_model, plan_chunked_prefill
from vlat.rope.hf_cache import with_cache
from vlat.training.lm_head import backbone

DEFAULT_PREFILL_CHUNK = 4096  # tokens per prefill forward: ~0.5 GiB of activations on the 7B model in bf16
ENCODE_WINDOWS = 8  # 30-s windows per audio-tower forward


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are views of one buffer of ``capacity`` tokens, allocated at the first
    update: growing writes in place instead of concatenating (the stock layer copies the whole prefix at every
    chunk, and the allocator fragments on ever larger blocks); ``crop`` keeps working (it narrows the view)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, _, d = key_states.shape
        self.key_buffer = key_states.new_empty(b, h, self.capacity, d)
        self.value_buffer = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self.keys.shape[-2], key_states.shape[-2]
        if n + m > self.capacity:
            raise RuntimeError(f"KV cache: {n + m} tokens exceed the reserved {self.capacity}")
        self.key_buffer[:, :, n : n + m].copy_(key_states)
        self.value_buffer[:, :, n : n + m].copy_(value_states)
        self.keys, self.values = self.key_buffer[:, :, : n + m], self.value_buffer[:, :, : n + m]
        return self.keys, self.values


def reserved_cache(capacity: int) -> Cache:
    """A KV cache holding at most ``capacity`` tokens per layer, allocated once."""
    return Cache(layer_class_to_replicate=lambda: ReservedLayer(capacity))


def cache_elements(cache: Cache) -> int:
    """Elements the cache has allocated (keys and values of every layer)."""
    return sum(layer.key_buffer.numel() + layer.value_buffer.numel() for layer in cache.layers if layer.is_initialized)


@torch.no_grad()
def encode_audio(
    model,
    input_features: torch.Tensor,
    feature_attention_mask: torch.Tensor,
    windows: int = ENCODE_WINDOWS,
    on_windows: Callable[[int, int], None] | None = None,
) -> AudioTokens:
    """The audio tokens of one recording under the model's compression setting (``current_compression``), in order.

    The audio tower runs on ``windows`` 30-s windows at a time (its activations stay bounded at any length);
    ``on_windows(done, total)`` after each group."""
    audio_model = find_audio_model(model)
    return audio_tokens.encode_audio(
        audio_model, input_features, feature_attention_mask, current_compression(model), windows, on_windows
    )


def packs_questions(model) -> bool:
    """Whether the attention kernel takes a 4-D mask (sdpa, eager): then questions share one packed forward."""
    return find_audio_model(model).language_model.config._attn_implementation != "flash_attention_2"


@torch.no_grad()
def prefill(
    model,
    prefix_ids: Sequence[int],
    audio: AudioTokens,
    capacity: int,
    chunk: int = DEFAULT_PREFILL_CHUNK,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Cache:
    """KV cache of the prompt prefix (no logits), filled ``chunk`` tokens at a time; room for ``capacity`` tokens.

    ``audio``: :func:`encode_audio` of the recording (compressed audio is placed by time). ``on_chunk(done, total)``
    after every chunk (tokens), e.g. a progress bar."""
    audio_model = find_audio_model(model)
    device = audio.device
    ids = torch.tensor([list(prefix_ids)], device=device)
    audio_mask = ids == audio_model.config.audio_token_id
    if audio.compression != current_compression(model):
        raise ValueError(f"audio encoded with {audio.compression}, model set to {current_compression(model)}")
    times = time_layout(audio_mask, audio) if audio.compression.active else None
    embeds = prompt_embeds(audio_model, ids, audio)
    cache = reserved_cache(capacity)
    plan_chunked_prefill(model, ids, cache, times)
    step = chunk if chunk and chunk > 0 else ids.shape[1]
    for start in range(0, ids.shape[1], step):
        end = min(start + step, ids.shape[1])
        backbone(
            model,
            input_ids=ids[:, start:end],
            inputs_embeds=embeds[:, start:end],
            attention_mask=torch.ones(1, end, dtype=torch.long, device=device),
            use_cache=True,
            **with_cache(cache),
        )
        if on_chunk is not None:
            on_chunk(end, ids.shape[1])
    return cache


class _Tail:
    """Tokens cached behind the shared prefix: which question owns each, and at which raw position."""

    def __init__(self, prefix_len: int, device):
        self.prefix_len, self.device = prefix_len, device
        self.owner = torch.empty(0, dtype=torch.long, device=device)

    def forward(self, model, cache: Cache, ids: list[int], owner: list[int], positions: list[int]) -> torch.Tensor:
        """Run ``ids`` (question ``owner[i]`` at raw position ``positions[i]``) on the cache; hidden states (n, h).

        Each new token attends to the prefix and to the earlier-or-same tokens of its own question."""
        dev = self.device
        new_owner = torch.tensor(owner, device=dev)
        old = len(self.owner)
        self.owner = torch.cat([self.owner, new_owner])
        inputs = torch.tensor([ids], device=dev)
        if len(set(owner)) == 1 and bool((self.owner == owner[0]).all()):  # one question alone: plain causal
            mask = torch.ones(1, self.prefix_len + len(self.owner), dtype=torch.long, device=dev)
        else:
            tail = torch.arange(len(self.owner), device=dev)
            mine = (self.owner[None] == new_owner[:, None]) & (tail[None] <= tail[old:, None])
            allowed = torch.cat([torch.ones(len(ids), self.prefix_len, dtype=torch.bool, device=dev), mine], 1)
            dtype = find_audio_model(model).language_model.embed_tokens.weight.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
            mask = mask[None, None]
        pos = torch.tensor([positions], device=dev)
        out = backbone(
            model, input_ids=inputs, attention_mask=mask, position_ids=pos, use_cache=True, **with_cache(cache)
        )
        return out.last_hidden_state[0]

    def reset(self, cache: Cache) -> None:
        """Crop the cache back to the prefix, layer by layer: a forward that failed part-way (out of memory, Ctrl-C)
        has extended only the layers before it."""
        for layer in cache.layers:
            extra = layer.keys.shape[-2] - self.prefix_len if layer.is_initialized else 0
            if extra > 0:
                layer.crop(-extra)
        self.owner = self.owner[:0]


def _logits(model, hidden: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """LM-head logits at the given rows of packed hidden states only: (len(rows), V)."""
    return model.get_output_embeddings()(hidden[torch.tensor(rows, device=hidden.device)])


def _groups(model, n: int) -> list[list[int]]:
    return [list(range(n))] if packs_questions(model) else [[i] for i in range(n)]


def _packed_suffixes(prefix_len: int, suffixes: Sequence[Sequence[int]], group: list[int]):
    ids, owner, pos, last = [], [], [], []
    for q in group:
        s = list(suffixes[q])
        ids += s
        owner += [q] * len(s)
        pos += range(prefix_len, prefix_len + len(s))
        last.append(len(ids) - 1)
    return ids, owner, pos, last


def reserved_tokens(model, per_question: Sequence[int]) -> int:
    """KV-cache tokens reserved behind the prefix for questions taking ``per_question`` tokens each (suffix plus
    generated): all of them when packed, the longest when they run in turn."""
    return sum(per_question) if packs_questions(model) else max(per_question)


def _capacity(model, prefix_len: int, per_question: Sequence[int]) -> int:
    return prefix_len + reserved_tokens(model, per_question)


@torch.no_grad()
def score_questions(
    model,
    prefix_ids: Sequence[int],
    suffixes: Sequence[Sequence[int]],
    audio: AudioTokens,
    option_ids: list[int],
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
) -> list[Prediction]:
    """Logits scoring of several questions sharing one prefix: prefill once, suffixes packed on its one copy."""
    L = len(prefix_ids)
    cache = prefill(model, prefix_ids, audio, _capacity(model, L, [len(s) for s in suffixes]), prefill_chunk)
    tail, probs = _Tail(L, audio.device), [None] * len(suffixes)
    for group in _groups(model, len(suffixes)):
        ids, owner, pos, last = _packed_suffixes(L, suffixes, group)
        hidden = tail.forward(model, cache, ids, owner, pos)
        p = _logits(model, hidden, last)[:, option_ids]
        for q, row in zip(group, p.float().softmax(-1), strict=True):
            probs[q] = row
        tail.reset(cache)
    return [Prediction(int(p.argmax()), probs=p.tolist()) for p in probs]


def _eos_ids(model) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


_UNSUPPORTED_GENERATION = (
    "no_repeat_ngram_size",
    "bad_words_ids",
    "min_new_tokens",
    "suppress_tokens",
    "sequence_bias",
)


def _repetition_penalty(model) -> float:
    gen = getattr(model, "generation_config", None)
    set_ = [k for k in _UNSUPPORTED_GENERATION if getattr(gen, k, None)]
    if set_:
        warnings.warn(f"generate scoring: the model's generation_config sets {set_}, not applied", stacklevel=3)
    return float(getattr(gen, "repetition_penalty", None) or 1.0)


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    prefix_ids: Sequence[int],
    suffixes: Sequence[Sequence[int]],
    audio: AudioTokens,
    max_new_tokens: int = 24,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
) -> list[Prediction]:
    """Greedy replies of several questions sharing one prefix, parsed into options (``generate`` scoring).

    Every question continues from the one prefix copy; each step runs the unfinished questions' next tokens as one
    packed forward with logits at those tokens only. Stops per question at an end-of-sequence token or after
    ``max_new_tokens``, as ``generate(do_sample=False)`` does for a prompt alone (the model's
    ``repetition_penalty`` included)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    L, dev = len(prefix_ids), audio.device
    eos, penalty = _eos_ids(model), _repetition_penalty(model)
    process = RepetitionPenaltyLogitsProcessor(penalty) if penalty != 1.0 else None
    capacity = _capacity(model, L, [len(s) + max_new_tokens for s in suffixes])
    cache = prefill(model, prefix_ids, audio, capacity, prefill_chunk)
    tail, replies = _Tail(L, dev), [[] for _ in suffixes]
    for group in _groups(model, len(suffixes)):
        ids, owner, pos, last = _packed_suffixes(L, suffixes, group)
        active = list(group)
        while True:
            hidden = tail.forward(model, cache, ids, owner, pos)
            logits = _logits(model, hidden, last).float()
            if process is not None:
                seqs = [list(prefix_ids) + list(suffixes[q]) + replies[q] for q in active]
                width = max(map(len, seqs))  # pad with a token already in every row: the penalty is unchanged
                seqs = torch.tensor([s + [prefix_ids[0]] * (width - len(s)) for s in seqs], device=dev)
                logits = process(seqs, logits)
            nxt = logits.argmax(-1).tolist()
            for q, t in zip(active, nxt, strict=True):
                replies[q].append(t)  # an end token too: decoding drops it when special, as after generate()
            active = [q for q, t in zip(active, nxt, strict=True) if t not in eos and len(replies[q]) < max_new_tokens]
            if not active:
                break
            ids, owner = [replies[q][-1] for q in active], active
            pos = [L + len(suffixes[q]) + len(replies[q]) - 1 for q in active]
            last = list(range(len(active)))
        tail.reset(cache)
    texts = tokenizer.batch_decode(replies, skip_special_tokens=True)
    return [Prediction(parse_answer(t), text=t) for t in texts]
