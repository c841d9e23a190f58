"""tsbench.thinking: splitting reasoning-model output into its thinking and its answer."""

from __future__ import annotations

import random
import time

import pytest

from tsbench.thinking import DEFAULT_TAGS, ThinkTags, Thought, answer_part, open_depth, split_thinking


def test_no_tags_is_all_answer() -> None:
    assert split_thinking("The answer is 4.") == Thought("", "The answer is 4.", "none")
    assert split_thinking("") == Thought("", "", "none")
    assert answer_part("Answer: 12") == "Answer: 12"


def test_closed_thinking_splits_at_the_close() -> None:
    thought = split_thinking("<think>7 * 8 = 54? no, 56</think>\nAnswer: 56")
    assert thought == Thought("7 * 8 = 54? no, 56", "\nAnswer: 56", "closed")


def test_text_before_the_open_tag_is_neither_thinking_nor_answer() -> None:
    assert split_thinking("Sure. <think>hmm</think>42") == Thought("hmm", "42", "closed")


def test_nested_opens_count_depth() -> None:
    text = "<think>the tags look like <think>x</think>, fine</think>Answer: 3"
    assert split_thinking(text) == Thought("the tags look like <think>x</think>, fine", "Answer: 3", "closed")


def test_unclosed_thinking_has_no_answer() -> None:
    assert split_thinking("<think>Answer: 9, or maybe") == Thought("Answer: 9, or maybe", "", "unclosed")
    assert answer_part("<think>Answer: 9") == ""
    # Still open after a nested close.
    assert split_thinking("<think>a<think>b</think>Answer: 5").state == "unclosed"


def test_prompt_opened_thinking_ends_at_the_first_unmatched_close() -> None:
    # Qwen3's template puts <think> in the prompt: the output starts inside the thinking.
    assert split_thinking("Answer: 9? no.</think>Answer: 8") == Thought(
        "Answer: 9? no.", "Answer: 8", "closed"
    )
    # A quoted pair inside it is matched, so the thinking ends at the close that matches nothing.
    text = "I write <think>x</think> here</think>Answer: 1"
    assert split_thinking(text) == Thought("I write <think>x</think> here", "Answer: 1", "closed")


def test_an_unmatched_close_anywhere_wins_over_an_earlier_pair() -> None:
    # Read as prompt-opened: a wrong pick then loses an answer rather than grading thinking.
    assert split_thinking("<think>a</think>b</think>c") == Thought("<think>a</think>b", "c", "closed")


def test_custom_tags() -> None:
    tags = ThinkTags("<reasoning>", "</reasoning>")
    text = "<reasoning>Answer: 1 <think>not ours</think></reasoning>Answer: 2"
    assert split_thinking(text, tags) == Thought("Answer: 1 <think>not ours</think>", "Answer: 2", "closed")
    assert answer_part(text, tags) == "Answer: 2"
    assert split_thinking(text).answer == "</reasoning>Answer: 2"  # default tags read it otherwise


def test_overlapping_tags_take_the_longer_at_one_place() -> None:
    tags = ThinkTags("[", "[/]")
    assert split_thinking("[a[/]b", tags) == Thought("a", "b", "closed")


@pytest.mark.parametrize(("open_", "close"), [("", "</think>"), ("<think>", ""), ("<t>", "<t>")])
def test_tags_must_be_two_different_non_empty_strings(open_: str, close: str) -> None:
    with pytest.raises(ValueError, match="two different non-empty strings"):
        ThinkTags(open_, close)


def test_open_depth_counts_what_is_still_open() -> None:
    assert open_depth("plain") == 0
    assert open_depth("<think>a<think>b</think>") == 1
    assert open_depth("</think></think><think>") == 1  # closes matching nothing are ignored


def test_unicode_and_lookalike_fragments() -> None:
    text = "<thínk>ünïcødé 🤔 <think 数学</think>答案: 42"
    assert split_thinking(text) == Thought("<thínk>ünïcødé 🤔 <think 数学", "答案: 42", "closed")


FRAGMENTS = [
    "<think>",
    "</think>",
    "<think",
    "think>",
    "</",
    "<",
    ">",
    "/",
    "Answer: 3",
    " ",
    "é",
    "🤔",
    "\n",
    "x",
]


def _is_subsequence(part: str, text: str) -> bool:
    remaining = iter(text)
    return all(ch in remaining for ch in part)


def _well_formed(text: str, tags: ThinkTags) -> bool:
    """One open tag, then one close tag, and no other tag text."""
    return (
        text.count(tags.open) == 1
        and text.count(tags.close) == 1
        and text.find(tags.open) < text.find(tags.close)
    )


def test_fuzz_invariants_over_random_tag_fragments() -> None:
    rng = random.Random(0)
    tags = DEFAULT_TAGS
    states = set()
    for _ in range(3000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 30)))
        thought = split_thinking(text, tags)
        states.add(thought.state)
        # The answer is a suffix of the text, the thinking lies before it: both are sub-sequences.
        assert text.endswith(thought.answer)
        head = text[: len(text) - len(thought.answer)]
        assert thought.thinking in head
        assert _is_subsequence(thought.thinking + thought.answer, text)
        assert thought.answer == answer_part(text, tags)
        if thought.state == "none":
            assert tags.open not in text and tags.close not in text and thought.answer == text
        if thought.state == "unclosed":
            assert thought.answer == "" and tags.open in text
            assert text.endswith(tags.open + thought.thinking)
        if thought.state == "closed":
            assert head.endswith(thought.thinking + tags.close)
        if _well_formed(text, tags):
            assert thought.state == "closed"
            assert tags.open not in thought.answer and tags.close not in thought.answer
            assert tags.open not in thought.thinking and tags.close not in thought.thinking
    assert states == {"none", "closed", "unclosed"}  # the fragments reach every case


def test_huge_hostile_text_is_split_in_linear_time() -> None:
    # 2.4M characters of nested opens and a stray close at the very end: one pass over the tags.
    text = "<think>" * 200_000 + "a" * 1_000_000 + "</think>" * 5 + "!</think>tail"
    started = time.perf_counter()
    thought = split_thinking(text)
    elapsed = time.perf_counter() - started
    assert thought.state == "unclosed"  # 200,000 opens, 6 closes: it never closes
    assert answer_part("x" * 1_000_000 + "</think>" + "y") == "y"
    assert elapsed < 5.0, f"took {elapsed:.2f} s: not linear"
