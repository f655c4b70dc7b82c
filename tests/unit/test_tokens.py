"""Offline counts of long texts: encoded in pieces (bounded memory), counted as if whole."""

from deepseek_engine.tokens import count_text, pieces, tokenizer

TEXT = ("def f(x):\n    return x * 2  # 双倍\n" + "DeepSeek-R1 思考后回答。 The answer is 42.\n\n") * 3000


def test_pieces_are_bounded_and_lose_nothing():
    parts = pieces(TEXT, 1000)
    assert "".join(parts) == TEXT and max(map(len, parts)) <= 1000 and len(parts) > 100
    assert pieces("y" * 2500, 1000) == ["y" * 1000, "y" * 1000, "y" * 500]


def test_a_long_text_counts_as_if_encoded_whole():
    whole = len(tokenizer().encode(TEXT, add_special_tokens=False).ids)
    assert count_text([TEXT]) == whole
    assert count_text(["", TEXT, ""]) == whole and count_text([]) == 0


def test_reasoning_sent_back_counts_once():
    """V3.2/V4 turns carry their reasoning under two names (reasoning_content, reasoning): the
    server reads it once, so it costs its tokens once."""
    from deepseek_engine.tokens import count_messages

    plain = [{"role": "assistant", "content": "ok"}]
    with_reasoning = [{"role": "assistant", "content": "ok", "reasoning_content": "I think so",
                       "reasoning": "I think so"}]
    assert count_messages(with_reasoning) == count_messages(plain) + count_text(["I think so"])
