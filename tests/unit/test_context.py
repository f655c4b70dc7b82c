"""The max_tokens a server's context-length refusal says would fit (the wordings servers use)."""

import pytest

from deepseek_engine.context import max_tokens_that_fit

# as real servers word it: vLLM 0.32 (this repository's real tier), vLLM 0.10, vLLM 0.6-0.8, SGLang
VLLM_032 = ("max_tokens=8192 cannot be greater than max_model_len=4096. Please request fewer output "
            "tokens. (parameter=max_tokens, value=8192)")
VLLM_010 = ("'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context "
            "length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778). None")
VLLM_08 = ("This model's maximum context length is 4096 tokens. However, you requested 8292 tokens (100 in "
           "the messages, 8192 in the completion). Please reduce the length of the messages or completion.")
SGLANG = ("Requested token count exceeds the model's maximum context length of 4096 tokens. You requested "
          "a total of 8292 tokens: 100 tokens from the input messages and 8192 tokens for the completion. "
          "Please reduce the number of tokens in the input messages or the completion to fit within the limit.")


@pytest.mark.parametrize("message,fit", [(VLLM_032, 4096), (VLLM_010, 4096 - 2778), (VLLM_08, 3996),
                                         (SGLANG, 3995)])
def test_each_wording_gives_what_fits(message, fit):
    assert max_tokens_that_fit(message, 8192) == fit
    # inside the plugin's typed error, as the client sees it
    assert max_tokens_that_fit(f"the server rejected the request (HTTP 400): {message} Shorten the "
                               "conversation or lower max_tokens.", 8192) == fit


@pytest.mark.parametrize("message", [
    # the prompt alone is too long: nothing fits, the error stands
    "This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049 input "
    "tokens, which exceeds this limit even without any output tokens.",
    "The input (5000 tokens) is longer than the model's context length (4096 tokens).",
    "This model's maximum context length is 4096 tokens. However, you requested 4200 tokens (4100 in the "
    "messages, 100 in the completion).",
    "Requested token count exceeds the model's maximum context length of 4096 tokens. You requested a total "
    "of 4196 tokens: 4095 tokens from the input messages and 101 tokens for the completion.",
    # not about the context at all
    "messages: Field required",
    "",
])
def test_no_fit_when_nothing_fits_or_not_a_context_refusal(message):
    assert max_tokens_that_fit(message, 8192) is None


def test_only_ever_lower_than_asked():
    assert max_tokens_that_fit(VLLM_032, 4096) is None  # the refusal was not about this request
    assert max_tokens_that_fit(VLLM_032, None) is None  # no max_tokens sent: nothing to lower
    assert max_tokens_that_fit(VLLM_032, 1) is None
