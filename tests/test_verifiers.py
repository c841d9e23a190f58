"""Verifiers: scores, spend and batching on test doubles; one real run per model-using verifier;
HF reward models on tiny random models built here (no download)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, Problem, RunnerInfo
from tsbench.errors import UserError
from tsbench.ledger import forward_flops
from tsbench.plugins import tasks, verifiers
from tsbench.verifiers.base import SLACK_TOKENS as JUDGE_SLACK
from tsbench.verifiers.base import SLACK_TOKENS as ROLLOUT_SLACK
from tsbench.verifiers.base import (
    OutcomeVerifier,
    ProcessVerifier,
    VerifierSpend,
    aggregate,
    score_paths,
    score_solutions,
)
from tsbench.verifiers.llm_judge import LLMJudge, p_yes
from tsbench.verifiers.oracle import Oracle
from tsbench.verifiers.rollout_value import RolloutValue, rollout_value
from tsbench.verifiers.rule_rewards import AccuracyReward, FormatReward
from tsbench.verifiers.self_certainty import SelfCertainty, mean_logprob, self_certainty

PARAMETERS = 500
TASK = tasks.get("arith")(levels="1")
PROBLEM = Problem("q", "What is 7 * 9?", "63")
RIGHT = "7 * 9 = 63.\n\nAnswer: 63"
WRONG = "7 * 9 = 64.\n\nAnswer: 64"


class ScriptedRunner:
    """TEST DOUBLE for Runner: no model. `reply(request, sample index)` gives each completion;
    every prompt counts 100 tokens, of which the engine computed 40 where it reused a cached
    prefix (continuations)."""

    def __init__(self, reply: Callable[[GenerationRequest, int], Completion]) -> None:
        self.reply = reply
        self.calls: list[list[GenerationRequest]] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("scripted", PARAMETERS, "script", "0", "none")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        return [
            GenerationResult([self.reply(r, i) for i in range(r.n)], 100, 40 if r.continuation else 100, 0.0)
            for r in requests
        ]

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 100

    def close(self) -> None:
        pass


class CharRunner(ScriptedRunner):
    """TEST DOUBLE for Runner: ScriptedRunner with one prompt token per character, so that a bound's
    slack is exact: 10 + the characters of the messages and continuation."""

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 10 + sum(len(content) for _, content in request.messages) + len(request.continuation)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = super().generate(requests)
        for request, result in zip(requests, results, strict=True):
            result.prompt_tokens = self.count_prompt_tokens(request)
        return results


def judge_reply(request: GenerationRequest, index: int) -> Completion:
    """Says Yes (p = 0.8 over the spellings) when the text under judgement holds 63, else No."""
    question = request.messages[-1][1]
    judged = question.split("Last step:")[-1] if "Last step:" in question else question.split("Solution:")[-1]
    if "63" in judged:
        top = {" Yes": math.log(0.6), "yes": math.log(0.2), "No": math.log(0.2), "The": math.log(0.1)}
    else:
        top = {"No": math.log(0.7), " no": math.log(0.2), "Yes": math.log(0.1)}
    return Completion(next(iter(top)), 1, "length", 0, [max(top.values())], [top])


# -- pure functions ------------------------------------------------------------------------------


def test_p_yes_normalises_over_the_spellings_of_yes_and_no() -> None:
    top = {
        " Yes": math.log(0.3),
        "yes": math.log(0.1),
        "YES.": math.log(0.1),
        " No": math.log(0.25),
        "I": -0.5,
    }
    assert p_yes(top) == pytest.approx(0.5 / 0.75)
    assert p_yes({"The": -0.1}) == 0.5  # neither word: the judge said nothing
    assert p_yes({}) == 0.5


def test_aggregates() -> None:
    assert aggregate([0.5, 0.2, 0.9], "last") == 0.9
    assert aggregate([0.5, 0.2, 0.9], "min") == 0.2
    assert aggregate([0.5, 0.2, 0.9], "prod") == pytest.approx(0.09)
    assert aggregate([], "min") == 0.0
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate([0.1], "max")


def test_self_certainty_is_exp_mean_logprob_and_free() -> None:
    assert self_certainty(0.0) == 1.0
    assert self_certainty(math.log(0.25)) == pytest.approx(0.25)
    assert mean_logprob([-1.0, -3.0]) == -2.0 and mean_logprob([]) is None
    scored = SelfCertainty().score(PROBLEM, TASK, ["a", "b", "c"], mean_logprobs=[-0.1, -2.0, None])
    assert scored.scores == pytest.approx([math.exp(-0.1), math.exp(-2.0), 0.0])
    assert scored.spend == VerifierSpend(0.0, 0.0)
    with pytest.raises(ValueError, match="mean logprob"):
        SelfCertainty().score(PROBLEM, TASK, ["a"])


def test_oracle_outcome_and_process() -> None:
    oracle = Oracle()
    assert oracle.oracle
    assert oracle.score(PROBLEM, TASK, [RIGHT, WRONG]).scores == [1.0, 0.0]
    # Process: a prefix scores 1 once the answer extracted so far is right.
    steps = [["Multiply 7 by 9.", "That gives 63.", "Answer: 63"], ["7 * 9 = 64.", "Answer: 64"]]
    assert [s.scores for s in oracle.score_steps(PROBLEM, TASK, steps)] == [[0.0, 1.0, 1.0], [0.0, 0.0]]


def test_rule_rewards() -> None:
    fmt, acc = FormatReward(), AccuracyReward()
    solutions = [RIGHT, WRONG, "It is 63", "so \\boxed{63}", "**Answer:** 63.", "The answer is 63"]
    assert fmt.score(PROBLEM, TASK, solutions).scores == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert acc.score(PROBLEM, TASK, solutions).scores == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert acc.oracle and not fmt.oracle


def test_rollout_value_counts() -> None:
    assert rollout_value(["5", "5", "6", None]) == 0.5
    assert rollout_value([None, None]) == 0.0
    assert rollout_value(["5", "6", "6"], correct=[True, False, False]) == pytest.approx(1 / 3)


# -- llm-judge and rollout-value on test doubles ----------------------------------------------------


def test_llm_judge_outcome_is_one_batched_call_with_honest_spend() -> None:
    runner = ScriptedRunner(judge_reply)
    scored = LLMJudge(runner).score(PROBLEM, TASK, [RIGHT, WRONG, RIGHT])
    assert scored.scores == pytest.approx([0.8, 0.1 / 1.0, 0.8])
    assert len(runner.calls) == 1 and len(runner.calls[0]) == 3
    request = runner.calls[0][0]
    assert (request.max_tokens, request.temperature, request.logprobs) == (1, 0.0, 20)
    assert "Is this solution correct? Answer Yes or No." in request.messages[-1][1]
    assert scored.spend == VerifierSpend(3 * 101, forward_flops(PARAMETERS, 3 * 101))


def test_llm_judge_process_asks_each_step_once_per_problem() -> None:
    runner = ScriptedRunner(judge_reply)
    judge = LLMJudge(runner, process_prompt="Q: {question} | before: {previous} | Last step: {step}")
    first = judge.score_steps(PROBLEM, TASK, [["7 * 9 is 63", "Answer: 64"], ["7 * 9 is 63"]])
    assert first[0].scores == pytest.approx([0.8, 0.1]) and first[1].scores == pytest.approx([0.8])
    questions = [r.messages[-1][1] for r in runner.calls[0]]
    assert questions == [
        "Q: What is 7 * 9? | before: (none) | Last step: 7 * 9 is 63",
        "Q: What is 7 * 9? | before: 7 * 9 is 63 | Last step: Answer: 64",
    ]  # the shared first step asked once
    assert [s.spend.tokens for s in first] == [2 * 101, 0]
    # Extending a path pays for the new step only.
    again = judge.score_steps(PROBLEM, TASK, [["7 * 9 is 63", "Answer: 63"]])
    assert again[0].scores == pytest.approx([0.8, 0.8]) and again[0].spend.tokens == 101
    assert len(runner.calls[1]) == 1
    # A new search starts afresh (strategies call reset) and pays for every step again.
    judge.reset()
    assert judge.score_steps(PROBLEM, TASK, [["7 * 9 is 63", "Answer: 63"]])[0].spend.tokens == 2 * 101


def test_rollout_value_sends_the_prefix_as_continuation_and_counts_rollouts() -> None:
    # Rollouts from any prefix: two reach 63, one 64, one nothing.
    texts = ["so 63", "Answer: 63", "64", "hmm"]

    def reply(request: GenerationRequest, index: int) -> Completion:
        return Completion(texts[index], 3, "stop", request.seed_for(index))

    runner = ScriptedRunner(reply)
    majority = RolloutValue(runner, rollouts=4, max_tokens=32, seed=7)
    scored = majority.score_steps(PROBLEM, TASK, [["Let us multiply.", "7 times 9"]])[0]
    # Answers come from prefix + rollout: "hmm" has none after the first step and 9 after the
    # second. Either way 63 is the majority, reached by 2 of 4.
    assert scored.scores == [0.5, 0.5]
    requests = runner.calls[0]
    assert [r.continuation for r in requests] == ["Let us multiply.\n\n", "Let us multiply.\n\n7 times 9\n\n"]
    assert all(r.n == 4 and r.seeds == (7, 8, 9, 10) and r.max_tokens == 32 and not r.stop for r in requests)
    # Canonical: each prompt counted in full (100), though the engine's cache computed only 40.
    assert scored.spend == VerifierSpend(2 * (100 + 4 * 3), forward_flops(PARAMETERS, 2 * (100 + 4 * 3)))
    oracle = RolloutValue(ScriptedRunner(reply), rollouts=4, oracle=True)
    assert oracle.oracle and oracle.score_steps(PROBLEM, TASK, [["7 times 9"]])[0].scores == [0.5]


def test_every_builtin_verifier_is_registered_and_built_by_its_factory() -> None:
    runner = ScriptedRunner(judge_reply)
    shapes = {
        "llm-judge": (True, True),
        "rollout-value": (False, True),
        "oracle": (True, True),
        "self-certainty": (True, True),
        "format-reward": (True, False),
        "accuracy-reward": (True, False),
    }
    for name, (outcome, process) in shapes.items():
        verifier = verifiers.get(name)(runner)
        assert isinstance(verifier, OutcomeVerifier) == outcome, name
        assert isinstance(verifier, ProcessVerifier) == process, name
    assert "hf-reward" in verifiers.names()
    assert verifiers.get("rollout-value")(runner, rollouts="2", oracle="true").oracle
    with pytest.raises(UserError, match="unknown option"):
        verifiers.get("llm-judge")(runner, judge="x")
    with pytest.raises(UserError, match="needs model="):
        verifiers.get("hf-reward")(runner)


def test_shape_helpers_route_logprobs_and_refuse_the_wrong_shape() -> None:
    certain = score_solutions(SelfCertainty(), PROBLEM, TASK, ["a", "b"], mean_logprobs=[0.0, None])
    assert certain.scores == [1.0, 0.0]
    judged = score_solutions(LLMJudge(ScriptedRunner(judge_reply)), PROBLEM, TASK, [RIGHT], [-1.0])
    assert judged.scores == pytest.approx([0.8])
    with pytest.raises(ValueError, match="scores steps only"):
        score_solutions(RolloutValue(ScriptedRunner(judge_reply)), PROBLEM, TASK, [RIGHT])
    with pytest.raises(ValueError, match="needs a process verifier"):
        score_paths(FormatReward(), PROBLEM, TASK, [["step"]])


# -- cost bounds: what scoring a path will cost at most, before its last step is written --------------


def test_llm_judge_bound_is_each_unasked_question_plus_the_step_to_come() -> None:
    judge = LLMJudge(CharRunner(judge_reply))
    parent = ["7 * 9 is 63"]
    # Nothing asked yet: the parent's question and, for each of two children, the child's.
    before = judge.cost_bound(PROBLEM, TASK, [[*parent, ""], [*parent, ""]], extra_tokens=12)
    spent = judge.score_steps(PROBLEM, TASK, [parent])[0].spend
    after = judge.cost_bound(PROBLEM, TASK, [[*parent, ""], [*parent, ""]], extra_tokens=12)
    assert before.tokens == after.tokens + spent.tokens
    assert after.flops == forward_flops(PARAMETERS, after.tokens)
    one = judge.cost_bound(PROBLEM, TASK, [[*parent, ""]], extra_tokens=12)
    for k in (1, 6, 12):
        real = judge.score_steps(PROBLEM, TASK, [[*parent, "x" * k]])[0].spend
        # Exact with one token per character: the bound is k + (12 - k) + the slack above it.
        assert real.tokens + (12 - k) + JUDGE_SLACK == one.tokens
    assert judge.cost_bound(PROBLEM, TASK, [parent], extra_tokens=0) == VerifierSpend()  # remembered


def test_rollout_value_bound_is_each_unrolled_prefix_plus_its_rollouts_at_their_cap() -> None:
    value = RolloutValue(CharRunner(lambda r, i: Completion("so 63", 3, "eos", 0)), rollouts=4, max_tokens=8)
    parent = ["Let us multiply."]
    value.score_steps(PROBLEM, TASK, [parent])
    bound = value.cost_bound(PROBLEM, TASK, [[*parent, ""]], extra_tokens=10)
    for k in (1, 10):
        real = value.score_steps(PROBLEM, TASK, [[*parent, "y" * k]])[0].spend
        assert real.tokens + (10 - k) + ROLLOUT_SLACK + 4 * (8 - 3) == bound.tokens
        assert real.flops <= bound.flops


def test_oracle_bound_is_zero() -> None:
    assert Oracle().cost_bound(PROBLEM, TASK, [["a", ""]], extra_tokens=100) == VerifierSpend()


def test_verifiers_that_cannot_count_prompts_say_so() -> None:
    class NoCount(ScriptedRunner):
        count_prompt_tokens = None  # type: ignore[assignment]

    with pytest.raises(UserError, match="cannot bound"):
        LLMJudge(NoCount(judge_reply)).cost_bound(PROBLEM, TASK, [[""]], 5)


# -- the real model ------------------------------------------------------------------------------

ARITH_MESSAGES = tuple((m["role"], m["content"]) for m in TASK.messages(PROBLEM))


@pytest.mark.slow
def test_llm_judge_on_the_embedded_model(llamacpp_runner: Any) -> None:
    judge = verifiers.get("llm-judge")(llamacpp_runner)
    scored = judge.score(PROBLEM, TASK, [RIGHT, WRONG])
    assert all(0.0 <= s <= 1.0 for s in scored.scores) and scored.scores[0] != scored.scores[1]
    prompts = [
        len(llamacpp_runner.prompt_tokens(GenerationRequest((("system", judge.system), ("user", q)))))
        for q in (judge.outcome_prompt.format(question=PROBLEM.question, solution=s) for s in (RIGHT, WRONG))
    ]
    parameters = llamacpp_runner.info().parameters
    assert scored.spend == VerifierSpend(sum(prompts) + 2, forward_flops(parameters, sum(prompts) + 2))
    steps = judge.score_steps(PROBLEM, TASK, [RIGHT.split("\n\n")])
    assert len(steps[0].scores) == 2 and steps[0].spend.tokens > 0


@pytest.mark.slow
def test_llm_judge_bound_holds_on_the_embedded_model(llamacpp_runner: Any) -> None:
    judge = verifiers.get("llm-judge")(llamacpp_runner)
    parent = ["Multiply 7 by 9."]
    judge.score_steps(PROBLEM, TASK, [parent])
    steps = ["63", " 7 * 9 = 63.", "So the answer is 63.\n", "**63**!", "7*9=63, so\n\nAnswer: 63"]
    lengths = [len(llamacpp_runner.model.tokenize(s.encode(), add_bos=False, special=False)) for s in steps]
    bound = judge.cost_bound(PROBLEM, TASK, [[*parent, ""]], extra_tokens=max(lengths))
    for step in steps:
        real = judge.score_steps(PROBLEM, TASK, [[*parent, step]])[0].spend
        assert real.tokens <= bound.tokens and real.flops <= bound.flops, step
    assert bound.tokens - max(lengths) - JUDGE_SLACK > 0


@pytest.mark.slow
def test_rollout_value_on_the_embedded_model(llamacpp_runner: Any) -> None:
    value = verifiers.get("rollout-value")(llamacpp_runner, rollouts=2, max_tokens=12)
    scored = value.score_steps(PROBLEM, TASK, [["7 * 9 = 63."]])[0]
    assert scored.scores[0] in (0.0, 0.5, 1.0)
    # Prompt (computed once for both rollouts) + up to 2 x 12 generated tokens.
    prompt = len(
        llamacpp_runner.prompt_tokens(GenerationRequest(ARITH_MESSAGES, continuation="7 * 9 = 63.\n\n"))
    )
    assert prompt < scored.spend.tokens <= prompt + 24


@pytest.mark.slow
def test_self_certainty_on_the_embedded_model(llamacpp_runner: Any) -> None:
    request = GenerationRequest(ARITH_MESSAGES, n=2, temperature=1.0, max_tokens=8, seeds=(1, 2), logprobs=0)
    completions = llamacpp_runner.generate([request])[0].completions
    means = [mean_logprob(c.logprobs) for c in completions]
    scored = verifiers.get("self-certainty")(llamacpp_runner).score(
        PROBLEM, TASK, [c.text for c in completions], mean_logprobs=means
    )
    assert scored.scores == pytest.approx([math.exp(m) for m in means if m is not None])
    assert all(0.0 < s <= 1.0 for s in scored.scores) and scored.spend == VerifierSpend()


# -- HuggingFace reward models, on tiny random models of each architecture -------------------------

SPECIALS = [
    "[UNK]",
    "[PAD]",
    "<s>",
    "</s>",
    "<extra_0>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
]
WORDS = [
    "+",
    "-",
    "ки",
    "what",
    "is",
    "7",
    "*",
    "9",
    "?",
    "=",
    "63",
    "64",
    "answer",
    ":",
    "so",
    "please",
    "reason",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random Llama reward models of each kind, with a word-level tokenizer, saved to disk."""
    torch = pytest.importorskip("torch", reason="hf-reward needs torch (pip install torch)")
    transformers = pytest.importorskip("transformers", reason="hf-reward needs transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIALS)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    shape = {
        "vocab_size": len(vocab),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 256,
        "pad_token_id": 1,
    }
    builds = {
        "orm": lambda: transformers.LlamaForSequenceClassification(
            transformers.LlamaConfig(**shape, num_labels=1)
        ),
        "causal": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)),
        "head": lambda: transformers.LlamaForTokenClassification(
            transformers.LlamaConfig(**shape, num_labels=2)
        ),
    }
    folders = {}
    for name, build in builds.items():
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(name)
        build().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


def manual_logits(folder: Path, kind: str, ids: list[int]) -> Any:
    import torch
    import transformers

    loader = {
        "orm": transformers.AutoModelForSequenceClassification,
        "causal": transformers.AutoModelForCausalLM,
        "head": transformers.AutoModelForTokenClassification,
    }[kind]
    with torch.inference_mode():
        return loader.from_pretrained(folder)(input_ids=torch.tensor([ids])).logits[0].float()


QUESTION = "what is 7 * 9 ?"
STEPS = ["7 * 9 = 63", "so answer : 63"]
SOLVE = Problem("h", QUESTION, "63")


def test_hf_orm_scores_a_chat_through_a_sigmoid(tiny_models: dict[str, Path]) -> None:
    from tsbench.verifiers.hf_reward import HFReward

    orm = verifiers.get("hf-reward")(None, model=str(tiny_models["orm"]))
    assert isinstance(orm, HFReward) and orm.kind == "orm"  # from the architecture
    scored = orm.score(SOLVE, TASK, ["7 * 9 = 63", "7 * 9 = 64"])
    chat = orm.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "7 * 9 = 63"}],
        tokenize=False,
    )
    ids = orm.tokenizer(chat, add_special_tokens=False)["input_ids"]
    logit = float(manual_logits(tiny_models["orm"], "orm", ids)[0])
    assert scored.scores[0] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)
    assert scored.spend.tokens == 2 * len(ids)
    assert scored.spend.flops == forward_flops(orm.parameters, 2 * len(ids))
    # As a process scorer an ORM scores each prefix.
    assert len(orm.score_steps(SOLVE, TASK, [STEPS])[0].scores) == 2


def test_hf_step_tag_prm_reads_plus_minus_at_each_tag(tiny_models: dict[str, Path]) -> None:
    prm = verifiers.get("hf-reward")(None, model=str(tiny_models["causal"]), kind="step-tag", step_tag="ки")
    scored = prm.score_steps(SOLVE, TASK, [STEPS])[0]
    # Math-Shepherd's input: "question step1 ки\nstep2 ки"; P(+) over {+, -} at each ки.
    ids = prm.tokenizer(f"{QUESTION} 7 * 9 = 63 ки\nso answer : 63 ки")["input_ids"]
    tag, plus, minus = (prm.tokenizer.convert_tokens_to_ids(t) for t in ("ки", "+", "-"))
    logits = manual_logits(tiny_models["causal"], "causal", ids)
    at = [i for i, t in enumerate(ids) if t == tag]
    expected = [float(logits[i, [plus, minus]].softmax(-1)[0]) for i in at]
    assert scored.scores == pytest.approx(expected, abs=1e-5) and len(at) == 2
    assert scored.spend.tokens == len(ids)
    # Causal: a step's score does not depend on the steps after it.
    changed = prm.score_steps(SOLVE, TASK, [[STEPS[0], "so answer : 64"]])[0]
    assert changed.scores[0] == pytest.approx(scored.scores[0], abs=1e-6)
    # Outcome form: the aggregate (min by default) of the step scores.
    outcome = prm.score(SOLVE, TASK, ["\n\n".join(STEPS)])
    assert outcome.scores[0] == pytest.approx(min(expected), abs=1e-5)


def test_hf_chat_turns_prm_reads_the_position_that_predicts_each_plus(tiny_models: dict[str, Path]) -> None:
    prm = verifiers.get("hf-reward")(None, model=str(tiny_models["causal"]), kind="chat-turns")
    scored = prm.score_steps(SOLVE, TASK, [STEPS])[0]
    # RLHFlow's chat: user step, assistant "+", ...; the token before each "+" predicts it.
    chat = f"<|user|> {QUESTION} 7 * 9 = 63 <|end|> <|assistant|> + <|end|> <|user|> so answer : 63 <|end|> <|assistant|> + <|end|> "
    ids = prm.tokenizer(chat, add_special_tokens=False)["input_ids"]
    plus, minus = prm.tokenizer.convert_tokens_to_ids(["+", "-"])
    before_plus = [i - 1 for i, t in enumerate(ids) if t == plus]
    logits = manual_logits(tiny_models["causal"], "causal", ids)
    expected = [float(logits[i, [plus, minus]].softmax(-1)[0]) for i in before_plus]
    assert scored.scores == pytest.approx(expected, abs=1e-5)
    assert scored.spend.tokens == len(ids)


def test_hf_token_head_prm_reads_label_one_at_each_separator(tiny_models: dict[str, Path]) -> None:
    prm = verifiers.get("hf-reward")(None, model=str(tiny_models["head"]), system="please reason")
    assert prm.kind == "token-head" and prm.step_tag == "<extra_0>"  # from the architecture
    scored = prm.score_steps(SOLVE, TASK, [STEPS])[0]
    # Qwen2.5-Math-PRM's input: system, user, assistant "step1<extra_0>step2<extra_0>".
    chat = (
        f"<|system|> please reason <|end|> <|user|> {QUESTION} <|end|> "
        "<|assistant|> 7 * 9 = 63<extra_0>so answer : 63<extra_0> <|end|> "
    )
    ids = prm.tokenizer(chat, add_special_tokens=False)["input_ids"]
    separator = prm.tokenizer.convert_tokens_to_ids("<extra_0>")
    logits = manual_logits(tiny_models["head"], "head", ids)
    expected = [float(logits[i].softmax(-1)[1]) for i, t in enumerate(ids) if t == separator]
    assert scored.scores == pytest.approx(expected, abs=1e-5) and len(expected) == 2
    assert scored.spend == VerifierSpend(len(ids), forward_flops(prm.parameters, len(ids)))


@pytest.mark.parametrize(
    ("folder", "options"),
    [
        ("orm", {}),
        ("causal", {"kind": "step-tag", "step_tag": "ки"}),
        ("causal", {"kind": "chat-turns"}),
        ("head", {"system": "please reason"}),
    ],
    ids=["orm", "step-tag", "chat-turns", "token-head"],
)
def test_hf_reward_bound_covers_a_last_step_of_up_to_extra_tokens(
    tiny_models: dict[str, Path], folder: str, options: dict[str, str]
) -> None:
    from tsbench.verifiers.base import SLACK_TOKENS

    model = verifiers.get("hf-reward")(None, model=str(tiny_models[folder]), **options)
    bound = model.cost_bound(SOLVE, TASK, [[STEPS[0], ""]], extra_tokens=4)
    for step in ("63", "7 * 9", "so answer : 63"):  # 1, 3 and 4 tokens of the word-level tokenizer
        real = model.score_steps(SOLVE, TASK, [[STEPS[0], step]])[0].spend
        assert real.tokens <= bound.tokens - SLACK_TOKENS and real.flops <= bound.flops, step
    assert bound.flops == forward_flops(model.parameters, bound.tokens)
