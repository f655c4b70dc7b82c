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


def test_each_vocabulary_is_its_own():
    import hashlib
    import lzma
    import re
    from pathlib import Path

    import pytest

    import deepseek_engine.tokens as tokens

    assert tokenizer("v3").get_vocab_size() == 128815 and tokenizer("v4").get_vocab_size() == 129280
    assert tokenizer("v4") is tokenizer("v4")  # loaded once
    dsml = "<｜DSML｜tool_calls>"
    assert count_text([dsml], "v3") == 9 and count_text([dsml], "v4") == 6  # DSML's marker: V4's own token
    notice = (Path(tokens.__file__).parent / "vocab" / "NOTICE.md").read_text()
    want = re.search(r"`([0-9a-f]{64})`", notice).group(1)
    assert hashlib.sha256(lzma.decompress(tokens._V4.read_bytes())).hexdigest() == want
    with pytest.raises(ValueError, match="v3 or v4"):
        tokenizer("v5")
