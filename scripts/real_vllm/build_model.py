#!/usr/bin/env python3
"""Build a tiny, deterministic DeepSeek-R1-style model from code (no model hub), in a few seconds.

Run it with the vLLM venv's python (it needs torch, tokenizers, safetensors; ``--check`` also needs
transformers)::

    .cache/real_vllm/venv/bin/python scripts/real_vllm/build_model.py --out DIR [--check]

It writes two Hugging Face model directories that vLLM serves as they are:

``DIR/tiny-r1``      DeepSeek-R1-Distill's chat template with thinking forced open: the generation
                     prompt ends ``<｜Assistant｜><think>\\n`` (serve it with ``--reasoning-parser
                     deepseek_r1 --enable-auto-tool-choice --tool-call-parser deepseek_v3``).
``DIR/tiny-r1-raw``  the January-2025 R1 generation prompt (``<｜Assistant｜>``): the model writes
                     ``<think>\\n`` itself, so without a reasoning parser the tags arrive in ``content``.
``DIR/tiny-v31``     hybrid thinking as DeepSeek-V3.1: vLLM's ``tool_chat_template_deepseekv31.jinja``
                     (``chat_template_kwargs {"thinking": true|false}``, off by default). Thinking on,
                     the prompt ends ``<｜Assistant｜><think>`` and the model writes
                     ``reasoning</think>answer``; off, it ends ``<｜Assistant｜></think>`` and the model
                     answers at once; tools offered, it writes a V3.1 call ``<｜tool▁calls▁begin｜>
                     <｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"location": "Paris"}…`` (serve it with
                     ``--reasoning-parser deepseek_v3 --enable-auto-tool-choice --tool-call-parser deepseek_v31``).

The model
---------
* ``LlamaForCausalLM`` (the architecture of DeepSeek-R1-Distill-Llama): 2 layers, hidden 512, 8 heads
  of 64, float32.
* Tokenizer: a byte-level BPE trained here on a small built-in corpus (so any text encodes), with
  DeepSeek's special tokens (``<｜begin▁of▁sentence｜>`` = BOS, ``<｜end▁of▁sentence｜>`` = EOS,
  ``<｜User｜>``, ``<｜Assistant｜>``, ``<think>``, ``</think>``, the ``<｜tool▁…｜>`` markers; marked
  special/non-special as in DeepSeek's own tokenizer, so ``<think>`` and the tool markers stay in
  the decoded text) plus one added token per scripted phrase.
* Weights set by hand:
  - every token's embedding is ``u0 + u(8+id)`` (a constant "one" direction plus a one-hot);
  - layer 0 attention: three heads raise a flag in the residual stream when the prompt holds their
    trigger token (the tools header -> ``tools``; ``<｜tool▁outputs▁begin｜>`` -> ``result``;
    ``[[long]]`` -> ``long``). Query and key use the lowest-frequency rotary dimension, so the
    match is position independent; with no trigger the value is zero;
  - the MLPs and layer 1 are zero; ``lm_head`` maps each token to its scripted successor, and two
    tokens branch on the flags (the ``\\n`` that ends ``<think>\\n`` and ``</think>``) with
    AND-rules built from the token, the flags and the constant direction. Logit margins are about
    30, so output is the same under greedy decoding and under sampling at temperature 0.6-1.0.

What it says (see ``SCRIPTS`` below):

* a plain chat: reasoning "Okay, the user sent me a message. I should reply with a short, friendly
  greeting.", ``</think>``, then "Hello! I am a tiny DeepSeek-R1 test model. How can I help you today?";
* any request with ``tools``: reasoning, then the DeepSeek call (one line, here cut in two)
  ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\\n```json\\n``
  ``{"location": "Paris"}\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>``;
* a conversation holding a tool result: reasoning, then "According to the tool, it is sunny in Paris.";
* ``[[long]]`` in the prompt: "Lorem ipsum dolor sit amet, lorem ipsum …" forever (until ``max_tokens``;
  with thinking forced open it never leaves the reasoning).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
TCS_BEGIN = "<｜tool▁calls▁begin｜>"
TCS_END = "<｜tool▁calls▁end｜>"
TC_BEGIN = "<｜tool▁call▁begin｜>"
TC_END = "<｜tool▁call▁end｜>"
TSEP = "<｜tool▁sep｜>"
TOS_BEGIN = "<｜tool▁outputs▁begin｜>"
TOS_END = "<｜tool▁outputs▁end｜>"
TO_BEGIN = "<｜tool▁output▁begin｜>"
TO_END = "<｜tool▁output▁end｜>"
#: as in DeepSeek's tokenizer: BOS/EOS/pad are special (skipped when decoding), the rest are not
SPECIAL = [BOS, EOS, PAD]
MARKERS = [USER, ASSISTANT, THINK, END_THINK, TCS_BEGIN, TCS_END, TC_BEGIN, TC_END, TSEP,
           TOS_BEGIN, TOS_END, TO_BEGIN, TO_END]

TOOLS_HEADER = "You can call any of the following function tools to satisfy the user's requests:"
LONG_TRIGGER = "[[long]]"
NL = "\n"  # the byte-level token that ends the generation prompt "<think>\n"

#: scripted phrases, one added token each; every token has exactly one successor (or one branch)
SCRIPTS = {
    "plain_reasoning": ["Okay,", " the user", " sent me", " a message.", " I should", " reply with",
                        " a short,", " friendly greeting.\n"],
    "plain_answer": ["\n\nHello!", " I am", " a tiny", " DeepSeek-R1", " test model.", " How can",
                     " I help", " you today?"],
    "tools_reasoning": ["The user", " wants the", " weather.", " I will", " call the", " get_weather",
                        " tool.\n"],
    "tools_answer": ["\n\n", TCS_BEGIN, TC_BEGIN, "function", TSEP, "get_weather", "\n```json\n",
                     '{"location":', ' "Paris"}', "\n```", TC_END, TCS_END],
    "result_reasoning": ["The tool", " returned", " the forecast.", " Now I", " can answer.\n"],
    "result_answer": ["\n\nAccording", " to the tool,", " it is sunny", " in Paris."],
    "long": ["Lorem", " ipsum", " dolor", " sit", " amet,", " lorem"],
}
TEXT = {k: "".join(v) for k, v in SCRIPTS.items()}
REASONING = TEXT["plain_reasoning"].strip()
ANSWER = TEXT["plain_answer"].strip()
TOOL_REASONING = TEXT["tools_reasoning"].strip()
TOOL_ARGUMENTS = '{"location": "Paris"}'
RESULT_REASONING = TEXT["result_reasoning"].strip()
RESULT_ANSWER = TEXT["result_answer"].strip()

FLAGS = ("tools", "result", "long")
TRIGGERS = {"tools": TOOLS_HEADER, "result": TOS_BEGIN, "long": LONG_TRIGGER}

# the hybrid (V3.1-style) model: the generation prompt's last token (<think> or </think>) decides
# whether it reasons; its own tools header raises the "tools" flag
V31_TOOLS_HEADER = "You have access to the following tools:"
HYBRID_SCRIPTS = {
    "reasoning": ["Hmm,", " a greeting.", " Thinking", " is on,", " so I", " reason", " first."],
    "answer": ["Hi!", " I am", " a tiny", " DeepSeek-V3.1", " test model."],
    "tool_call": [TCS_BEGIN, TC_BEGIN, "get_weather", TSEP, '{"location":', ' "Paris"}', TC_END, TCS_END],
    "result_answer": ["The forecast", " says", " Paris", " is sunny."],
}
HYBRID_TEXT = {k: "".join(v) for k, v in HYBRID_SCRIPTS.items()}
HYBRID_REASONING = HYBRID_TEXT["reasoning"]
HYBRID_ANSWER = HYBRID_TEXT["answer"]
HYBRID_TOOL_CALL = HYBRID_TEXT["tool_call"]
HYBRID_RESULT_ANSWER = HYBRID_TEXT["result_answer"]
HYBRID_TRIGGERS = {"tools": V31_TOOLS_HEADER}

CORPUS = """\
DeepSeek models reason step by step before they answer. The user asks a question, the assistant
thinks about it, and then it writes a short and friendly reply. Tools can be called with JSON
arguments, for example the weather in Paris, London or Tokyo. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100.
The quick brown fox jumps over the lazy dog. Hello world! How are you today? What is the weather?
Please answer in English. Il fait beau. Das Wetter ist gut. 你好世界。
"""

# ------------------------------------------------------------------------------------------
# chat template: DeepSeek-R1-Distill's, with a tools block (modelled on llama.cpp's
# llama-cpp-deepseek-r1.jinja) and guards for tool calls with "" / null content, several tool-call
# turns, and arguments that vLLM hands over as a dict.
# ------------------------------------------------------------------------------------------
_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}"
    "{%- if tools %}"
    "{{ '" + TOOLS_HEADER.replace("'", "\\'") + " ' }}{{ tools | map(attribute='function') | list | tojson }}"
    "{{ '\\n\\nExample function tool call syntax:\\n\\n" + TCS_BEGIN + TC_BEGIN + "function" + TSEP
    + "example_function_name\\n```json\\n{\"arg1\": \"some_value\"}\\n```" + TC_END + TCS_END + "\\n\\n' }}"
    "{%- endif %}"
    "{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- set content = message['content'] if message['content'] is string else '' %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if ns.is_tool %}{{ '" + TOS_END + "' }}{% set ns.is_tool = false %}"
    "{% set ns.is_output_first = true %}{% endif %}"
    "{{ '" + USER + "' + content }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{%- if ns.is_tool %}{{ '" + TOS_END + "' }}{% set ns.is_tool = false %}{% set ns.is_output_first = true %}"
    "{%- else %}{{ '" + ASSISTANT + "' }}{% endif %}"
    "{%- if message['tool_calls'] %}"
    "{{ content + '" + TCS_BEGIN + "' }}"
    "{%- for tool in message['tool_calls'] %}"
    "{%- set args = tool['function']['arguments'] %}"
    "{%- if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '" + TC_BEGIN + "' + (tool['type'] or 'function') + '" + TSEP + "' + tool['function']['name']"
    " + '\\n```json\\n' + (args if args is string else args | tojson) + '\\n```" + TC_END + "' }}"
    "{%- endfor %}"
    "{{ '" + TCS_END + EOS + "' }}"
    "{%- else %}{{ content + '" + EOS + "' }}{%- endif %}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if ns.is_output_first %}{{ '" + TOS_BEGIN + TO_BEGIN + "' + content + '" + TO_END + "' }}"
    "{% set ns.is_output_first = false %}"
    "{%- else %}{{ '\\n" + TO_BEGIN + "' + content + '" + TO_END + "' }}{%- endif %}"
    "{% set ns.is_tool = true %}"
    "{%- endif %}"
    "{%- endfor -%}"
    "{% if ns.is_tool %}{{ '" + TOS_END + "' }}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{ '" + ASSISTANT + "@@GEN@@' }}{% endif %}"
)
TEMPLATE_R1 = _TEMPLATE.replace("@@GEN@@", THINK + "\\n")  # thinking forced open (R1-Distill, Feb 2025)
TEMPLATE_RAW = _TEMPLATE.replace("@@GEN@@", "")  # January 2025: the model opens <think> itself

# ------------------------------------------------------------------------------------------
# chat template of the hybrid model, written after vLLM's examples/tool_chat_template_deepseekv31.jinja:
# the same prompt shapes (thinking off unless chat_template_kwargs says so; <｜Assistant｜></think>
# before answers and calls of earlier turns, only the text after </think> kept; no assistant header
# after tool outputs; V3.1 calls without a type or a json fence). One difference: vLLM hands the
# template tool-call arguments as a dict (renderers/chat_utils.py _postprocess_messages), which
# that template concatenates as a string, so they are turned back into JSON here.
# ------------------------------------------------------------------------------------------
_V31_FORMAT = (
    "IMPORTANT: ALWAYS adhere to this exact format for tool use:\\n" + TCS_BEGIN + TC_BEGIN
    + "tool_call_name" + TSEP + "tool_call_arguments" + TC_END + "{{additional_tool_calls}}" + TCS_END
    + "\\n\\nWhere:\\n\\n- `tool_call_name` must be an exact match to one of the available tools\\n"
    "- `tool_call_arguments` must be valid JSON that strictly follows the tool\\'s Parameters Schema\\n"
    "- For multiple tool calls, chain them directly without separators or spaces\\n"
)
TEMPLATE_V31 = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% if not thinking is defined %}{% set thinking = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='', is_tool=false, is_last_user=false) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = ns.system_prompt + ('\\n\\n' if ns.system_prompt else '') + message['content'] %}"
    "{%- endif %}{%- endfor %}"
    "{%- if tools %}"
    "{% set ns.system_prompt = ns.system_prompt + '\\n\\n## Tools\\n" + V31_TOOLS_HEADER + "\\n'"
    " + (tools | map('tojson') | join('')) + '" + _V31_FORMAT + "' %}"
    "{%- endif %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- set content = message['content'] if message['content'] is string else '' %}"
    "{%- if message['role'] == 'user' %}"
    "{% set ns.is_tool = false %}{% set ns.is_last_user = true %}"
    "{{ '" + USER + "' + content }}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{%- if ns.is_last_user %}{{ '" + ASSISTANT + END_THINK + "' }}{% endif %}"
    "{% set ns.is_last_user = false %}{% set ns.is_tool = false %}"
    "{{ content + '" + TCS_BEGIN + "' }}"
    "{%- for tool in message['tool_calls'] %}"
    "{%- set args = tool['function']['arguments'] %}"
    "{{ '" + TC_BEGIN + "' + tool['function']['name'] + '" + TSEP + "'"
    " + (args if args is string else args | tojson) + '" + TC_END + "' }}"
    "{%- endfor %}"
    "{{ '" + TCS_END + EOS + "' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if ns.is_last_user %}{{ '" + ASSISTANT + "' }}"
    "{{ '" + THINK + "' if message['prefix'] and thinking else '" + END_THINK + "' }}{% endif %}"
    "{% set ns.is_last_user = false %}"
    "{%- if ns.is_tool %}{{ content + '" + EOS + "' }}{% set ns.is_tool = false %}"
    "{%- else %}{{ content.split('" + END_THINK + "', 1)[-1] + '" + EOS + "' }}{%- endif %}"
    "{%- elif message['role'] == 'tool' %}"
    "{% set ns.is_last_user = false %}{% set ns.is_tool = true %}"
    "{{ '" + TO_BEGIN + "' + content + '" + TO_END + "' }}"
    "{%- endif %}"
    "{%- endfor -%}"
    "{% if add_generation_prompt and ns.is_last_user and not ns.is_tool %}"
    "{{ '" + ASSISTANT + "' }}{{ '" + THINK + "' if thinking else '" + END_THINK + "' }}{% endif %}"
)


# ------------------------------------------------------------------------------------------
def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360, min_frequency=2, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [CORPUS] * 3 + [" ".join(TEXT.values())] * 3
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    phrases: list[str] = []
    for chunks in [*SCRIPTS.values(), *HYBRID_SCRIPTS.values()]:
        for c in chunks:
            if c not in MARKERS and c not in phrases:
                phrases.append(c)
    added = MARKERS + [TOOLS_HEADER, V31_TOOLS_HEADER, LONG_TRIGGER] + phrases
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    return tok


Rules = dict[int, list[tuple[dict, int]]]


class _RuleBook:
    """``{token: [(condition, next_token), ...]}`` built up by ``add`` and ``chain``."""

    def __init__(self, tok) -> None:
        self.tid = tok.token_to_id
        self.tok = tok
        self.rules: Rules = {}

    def add(self, a: str | int, b: str | int, cond: dict | None = None) -> None:
        a_id = a if isinstance(a, int) else self.tid(a)
        b_id = b if isinstance(b, int) else self.tid(b)
        assert a_id is not None and b_id is not None, (a, b)
        self.rules.setdefault(a_id, []).append((cond or {}, b_id))

    def chain(self, chunks: list[str], last: str) -> None:
        for a, b in zip(chunks, [*chunks[1:], last], strict=True):
            self.add(a, b)

    def checked(self) -> Rules:
        for a, lst in self.rules.items():
            if len(lst) > 1:
                assert all(c for c, _ in lst), f"token {a}: several rules, one unconditional"
        # a successor reached by a conditional rule may be reached by nothing else (AND-rules use a bias)
        targets: dict[int, int] = {}
        for lst in self.rules.values():
            for _, b in lst:
                targets[b] = targets.get(b, 0) + 1
        for lst in self.rules.values():
            for c, b in lst:
                if c:
                    assert targets[b] == 1, f"conditional successor {self.tok.id_to_token(b)!r} has other rules"
        return self.rules


def hybrid_rules(tok) -> Rules:
    """The V3.1-style model: ``<think>`` -> reasoning -> ``</think>``; ``</think>`` -> the answer,
    or the call when tools are offered; the end of a tool output -> the answer from it."""
    book, S = _RuleBook(tok), HYBRID_SCRIPTS
    book.add(THINK, S["reasoning"][0])
    book.chain(S["reasoning"], END_THINK)
    book.add(END_THINK, S["answer"][0], {"tools": False})
    book.add(END_THINK, S["tool_call"][0], {"tools": True})
    book.chain(S["answer"], EOS)
    book.chain(S["tool_call"], EOS)
    book.add(TO_END, S["result_answer"][0])
    book.chain(S["result_answer"], EOS)
    return book.checked()


def successor_rules(tok) -> tuple[Rules, int]:
    """The R1-style models' rules, and the ``\\n`` token that ends ``<think>\\n``."""
    nl = tok.encode(NL).ids
    assert len(nl) == 1, nl
    nl = nl[0]
    book = _RuleBook(tok)
    add, chain = book.add, book.chain
    S = SCRIPTS
    add(ASSISTANT, THINK)
    add(TOS_END, THINK)
    add(THINK, nl)
    add(nl, S["long"][0], {"long": True})
    add(nl, S["result_reasoning"][0], {"long": False, "result": True})
    add(nl, S["tools_reasoning"][0], {"long": False, "result": False, "tools": True})
    add(nl, S["plain_reasoning"][0], {"long": False, "result": False, "tools": False})
    chain(S["plain_reasoning"], END_THINK)
    chain(S["tools_reasoning"], END_THINK)
    chain(S["result_reasoning"], END_THINK)
    add(END_THINK, S["result_answer"][0], {"result": True})
    add(END_THINK, S["tools_answer"][0], {"result": False, "tools": True})
    add(END_THINK, S["plain_answer"][0], {"result": False, "tools": False})
    chain(S["plain_answer"], EOS)
    chain(S["tools_answer"], EOS)
    chain(S["result_answer"], EOS)
    chain(S["long"][:-1], S["long"][-1])
    add(S["long"][-1], S["long"][1])
    return book.checked(), nl


def build_weights(tok, rules, triggers: dict[str, str], hidden: int, heads: int, head_dim: int, layers: int,
                  inter: int):
    import torch

    V = tok.get_vocab_size(with_added_tokens=True)
    one, flag_dim, tok0 = 0, {f: 1 + i for i, f in enumerate(FLAGS)}, 8
    assert tok0 + V <= hidden, (V, hidden)
    s = math.sqrt(hidden / 2)  # every embedding has |e|^2 = 2, so RMSNorm scales each unit to s
    L = 3.0  # lm_head gain: margin = L * (final-norm scale) ~ 30
    eos = tok.token_to_id(EOS)
    z = lambda *shape: torch.zeros(*shape, dtype=torch.float32)  # noqa: E731

    emb = z(V, hidden)
    emb[:, one] = 1.0
    for t in range(V):
        emb[t, tok0 + t] = 1.0

    sd = {"model.embed_tokens.weight": emb, "model.norm.weight": torch.ones(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = torch.ones(hidden)
        sd[p + "post_attention_layernorm.weight"] = torch.ones(hidden)
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{n}.weight"] = z(hidden, hidden)
        sd[p + "mlp.gate_proj.weight"] = z(inter, hidden)
        sd[p + "mlp.up_proj.weight"] = z(inter, hidden)
        sd[p + "mlp.down_proj.weight"] = z(hidden, inter)

    # layer 0: one head per flag; q.k on rotary pair (head_dim/2 - 1, head_dim - 1), the slowest one
    q, k, v, o = (sd[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkvo")
    rot = head_dim // 2 - 1
    score = 30.0  # trigger score; everything else scores 0
    for h, f in enumerate(FLAGS):
        if f not in triggers:
            continue  # this model has no such flag: the head stays zero
        trig = tok.token_to_id(triggers[f])
        assert trig is not None, f
        base = h * head_dim
        q[base + rot, one] = 1.0
        k[base + rot, tok0 + trig] = score * math.sqrt(head_dim) / (s * s)
        v[base, tok0 + trig] = 1.0 / s
        o[flag_dim[f], base] = 1.0

    # lm_head: successor rules
    W = z(V, hidden)
    for a, lst in rules.items():
        for cond, b in lst:
            W[b, tok0 + a] += L
            need = [f for f, want in cond.items() if want]
            for f, want in cond.items():
                W[b, flag_dim[f]] += L if want else -2 * L
            W[b, one] -= L * len(need)
    for t in range(V):  # anything unscripted ends the answer
        if t not in rules:
            W[eos, tok0 + t] += L
    sd["lm_head.weight"] = W
    return sd


def write_model(out: Path, tok, sd, cfg: dict, template: str) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({
        "_from_model_config": True, "bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
        "do_sample": True, "temperature": 0.6, "top_p": 0.95}, indent=2))
    tok.save(str(out / "tokenizer.json"))
    added = {}
    for i in range(tok.get_vocab_size(with_added_tokens=True)):
        t = tok.id_to_token(i)
        if t in SPECIAL or t in MARKERS:
            added[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": t in SPECIAL}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "legacy": True, "model_max_length": cfg["max_position_embeddings"],
        "added_tokens_decoder": added,
        "chat_template": template,
    }, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2, ensure_ascii=False))
    (out / "README.md").write_text(
        "Tiny scripted DeepSeek-R1-style test model built by scripts/real_vllm/build_model.py. "
        "Not a language model: it says only what the script says.\n")


def build(out: Path) -> dict:
    import torch

    torch.manual_seed(0)
    tok = build_tokenizer()
    rules, nl = successor_rules(tok)
    V = tok.get_vocab_size(with_added_tokens=True)
    head_dim = 64
    hidden = max(512, math.ceil((V + 8) / head_dim) * head_dim)
    heads = hidden // head_dim
    layers, inter = 2, 256
    sd = build_weights(tok, rules, TRIGGERS, hidden, heads, head_dim, layers, inter)
    sd_hybrid = build_weights(tok, hybrid_rules(tok), HYBRID_TRIGGERS, hidden, heads, head_dim, layers, inter)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": V, "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads,
        "head_dim": head_dim, "hidden_act": "silu", "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": False, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": tok.token_to_id(BOS), "eos_token_id": tok.token_to_id(EOS),
        "pad_token_id": tok.token_to_id(PAD), "torch_dtype": "float32", "dtype": "float32",
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(tmp / "tiny-r1", tok, sd, cfg, TEMPLATE_R1)
    write_model(tmp / "tiny-r1-raw", tok, sd, cfg, TEMPLATE_RAW)
    write_model(tmp / "tiny-v31", tok, sd_hybrid, cfg, TEMPLATE_V31)
    (tmp / "script.json").write_text(json.dumps({
        "reasoning": REASONING, "answer": ANSWER, "tool_reasoning": TOOL_REASONING,
        "tool_name": "get_weather", "tool_arguments": TOOL_ARGUMENTS,
        "result_reasoning": RESULT_REASONING, "result_answer": RESULT_ANSWER,
        "long_trigger": LONG_TRIGGER, "vocab_size": V, "hidden_size": hidden,
        "hybrid": {"reasoning": HYBRID_REASONING, "answer": HYBRID_ANSWER, "tool_call": HYBRID_TOOL_CALL,
                   "result_answer": HYBRID_RESULT_ANSWER}}, indent=2))
    return {"tmp": tmp, "vocab": V, "hidden": hidden}


# ------------------------------------------------------------------------------------------
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS}}


def check(model_root: Path) -> None:
    """Greedy-decode each scenario with transformers and compare it with the script."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tool_turn = [{"role": "user", "content": "weather?"},
                 {"role": "assistant", "content": "", "tool_calls": [CALL]},
                 {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}]
    tool_turn_null = [tool_turn[0], {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]}, tool_turn[2]]
    call_text = (TCS_BEGIN + TC_BEGIN + "function" + TSEP + "get_weather\n```json\n" + TOOL_ARGUMENTS
                 + "\n```" + TC_END + TCS_END)
    for variant, prefix in (("tiny-r1", ""), ("tiny-r1-raw", THINK + "\n")):
        d = model_root / variant
        tokz = AutoTokenizer.from_pretrained(str(d))
        model = LlamaForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
        cases = [
            ([{"role": "user", "content": "hi"}], None,
             f"{prefix}{TEXT['plain_reasoning']}{END_THINK}{TEXT['plain_answer']}"),
            ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
              {"role": "assistant", "content": f"{THINK}\nx\n{END_THINK}\n\nHello"},
              {"role": "user", "content": "again"}], None,
             f"{prefix}{TEXT['plain_reasoning']}{END_THINK}{TEXT['plain_answer']}"),
            ([{"role": "user", "content": "weather in Paris?"}], [WEATHER_TOOL],
             f"{prefix}{TEXT['tools_reasoning']}{END_THINK}\n\n{call_text}"),
            (tool_turn, [WEATHER_TOOL], f"{THINK}\n{TEXT['result_reasoning']}{END_THINK}{TEXT['result_answer']}"),
            (tool_turn_null, None, f"{THINK}\n{TEXT['result_reasoning']}{END_THINK}{TEXT['result_answer']}"),
            ([{"role": "user", "content": "go " + LONG_TRIGGER}], None,
             f"{prefix}Lorem ipsum dolor sit amet, lorem ipsum dolor sit amet, lorem ipsum"),
        ]
        for messages, tools, want in cases:
            _check_one(model, tokz, variant, messages, tools, {}, want)

    # the hybrid model: the switch (chat_template_kwargs {"thinking": ...}, off when absent)
    d = model_root / "tiny-v31"
    tokz = AutoTokenizer.from_pretrained(str(d))
    model = LlamaForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    on, off = {"thinking": True}, {"thinking": False}
    thought = f"{HYBRID_REASONING}{END_THINK}"
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": f"x{END_THINK}Hello"}, {"role": "user", "content": "again"}]
    hi = [{"role": "user", "content": "hi"}]
    weather = [{"role": "user", "content": "weather in Paris?"}]
    cases = [
        (hi, None, on, ASSISTANT + THINK, thought + HYBRID_ANSWER),
        (hi, None, off, ASSISTANT + END_THINK, HYBRID_ANSWER),
        (hi, None, {}, ASSISTANT + END_THINK, HYBRID_ANSWER),
        (history, None, on, ASSISTANT + THINK, thought + HYBRID_ANSWER),
        (history, None, off, ASSISTANT + END_THINK, HYBRID_ANSWER),
        (weather, [WEATHER_TOOL], off, ASSISTANT + END_THINK, HYBRID_TOOL_CALL),
        (weather, [WEATHER_TOOL], on, ASSISTANT + THINK, thought + HYBRID_TOOL_CALL),
        (tool_turn, [WEATHER_TOOL], off, TO_END, HYBRID_RESULT_ANSWER),
        (tool_turn_null, None, on, TO_END, HYBRID_RESULT_ANSWER),
    ]
    for messages, tools, kwargs, ends, want in cases:
        text = _check_one(model, tokz, "tiny-v31", messages, tools, kwargs, want)
        if not text.endswith(ends):
            raise SystemExit(f"tiny-v31 {kwargs}: the prompt ends {text[-40:]!r}, not {ends!r}")


def _check_one(model, tokz, variant: str, messages: list, tools, kwargs: dict, want: str) -> str:
    """Greedy-decode one scenario; fail unless it says ``want`` with a wide logit margin."""
    import torch

    text = tokz.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False, **kwargs)
    ids = tokz(text, add_special_tokens=False, return_tensors="pt").input_ids
    n_new = len(tokz(want, add_special_tokens=False).input_ids) + 1
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n_new, do_sample=False, pad_token_id=0)
        logits = model(out).logits[0, ids.shape[1] - 1:-1]
    got = tokz.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    top2 = logits.topk(2, dim=-1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    if not got.startswith(want) or margin < 15:
        raise SystemExit(f"{variant} {kwargs}: scenario {messages[-1]['content']!r} produced {got!r} "
                         f"(want {want!r}); smallest logit margin {margin:.1f}\nprompt: {text!r}")
    print(f"ok {variant} {kwargs}: {got[:60]!r}… margin {margin:.1f}", file=sys.stderr)
    return text


def _reexec_in_vllm_venv() -> None:
    """Run under the vLLM venv's python when this interpreter lacks torch/tokenizers."""
    try:
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import realvllm

        python = realvllm.venv_python()
        if not python.exists() or Path(sys.executable).resolve() == python.resolve():
            raise SystemExit("build_model.py needs torch, tokenizers and safetensors: run "
                             "scripts/real_vllm/setup first (it installs them with vLLM)") from None
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def main() -> int:
    _reexec_in_vllm_venv()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for tiny-r1/ and tiny-r1-raw/")
    ap.add_argument("--check", action="store_true", help="greedy-decode every scenario with transformers")
    args = ap.parse_args()
    t0 = time.monotonic()
    out = args.out.resolve()
    info = build(out)
    if args.check:
        check(info["tmp"])
    shutil.rmtree(out, ignore_errors=True)
    info["tmp"].rename(out)
    print(f"built {out} (vocab {info['vocab']}, hidden {info['hidden']}) in {time.monotonic() - t0:.1f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
