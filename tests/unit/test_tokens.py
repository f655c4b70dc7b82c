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
