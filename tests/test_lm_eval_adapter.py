"""`--task lm-eval:NAME`: lm-eval builds the prompts, its `until` stops every request, its filters
extract and its metric grades; every tsbench strategy runs on it; greedy through the `hf` runner
agrees with `lm_eval` itself (the slow test, on the 10-problem include-path fixture).

Offline throughout: the fixture task reads local JSONL (`dataset_path: json`), as lm-eval's
`--include_path` does. Skipped where lm-eval is not installed (pip install 'tsbench[lm-eval]').
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tsbench import plugins
from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.errors import UserError
from tsbench.generation import generate_all
from tsbench.records import ARMS, RunFolder
from tsbench.rescoring import arms_record, rescore
from tsbench.run import build_verifiers, prepare
from tsbench.spec import build_spec
from tsbench.stats import wilson_interval

ROOT = Path(__file__).parent.parent
INCLUDE = "tasks/fixtures/lm_eval"  # its data_files are relative to the repository root
NAME = "gsm8k_cot_zeroshot_tiny"
UNTIL = ("Q:", "</s>", "<|im_end|>")


def test_without_lm_eval_the_task_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'tsbench\[lm-eval\]'"):
        plugins.tasks.get(f"lm-eval:{NAME}")(include_path=INCLUDE)


lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install 'tsbench[lm-eval]'")


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    yield


def adapter(**options: object) -> object:
    return plugins.tasks.get(f"lm-eval:{NAME}")(include_path=INCLUDE, **options)


def test_lm_eval_builds_the_prompt_and_its_until_is_the_stop() -> None:
    task = adapter()
    problems = task.load(None, 0, None)  # type: ignore[attr-defined]
    assert len(problems) == 10 and problems[0].id == f"{NAME}-00000"
    docs = list(task.lm.eval_docs)  # type: ignore[attr-defined]
    for problem, doc in zip(problems, docs, strict=True):
        assert task.messages(problem.public()) == [{"role": "user", "content": task.lm.doc_to_text(doc)}]  # type: ignore[attr-defined]
        assert "####" not in task.messages(problem.public())[0]["content"]  # type: ignore[attr-defined]
    assert task.stop == UNTIL and task.generation["max_tokens"] == 256  # type: ignore[attr-defined]
    # Few-shot context comes from lm-eval too: two solved examples before the question.
    shots = adapter(num_fewshot="2").load(1, 0, None)[0]  # type: ignore[attr-defined]
    assert shots.question.count("Q: ") == 3 and shots.question.count("#### ") == 2


def test_lm_eval_filters_extract_and_its_metric_grades() -> None:
    strict, flexible = adapter(), adapter(filter="flexible-extract")
    problem = strict.load(1, 0, None)[0]  # type: ignore[attr-defined]  # Janet's ducks: 18
    text = "She sells 16 - 3 - 4 = 9 eggs for $2 each, 9 * 2 = 18. The answer is 18."
    assert strict.extract(text) == "18" and flexible.extract("so 9 * 2 = $18.") == "$18."  # type: ignore[attr-defined]
    assert strict.extract("It makes 18 dollars.") is None  # lm-eval's "[invalid]" is no answer  # type: ignore[attr-defined]
    assert strict.grade("18", problem) and flexible.grade("$18.", problem)  # type: ignore[attr-defined]
    assert not strict.grade("17", problem)  # type: ignore[attr-defined]
    # exact_match's own normal form: answers it grades alike vote together.
    assert flexible.canonical("$1,800.") == flexible.canonical("1800")  # type: ignore[attr-defined]
    with pytest.raises(UserError, match="no filter 'nope'; its filters are: strict-match, flexible-extract"):
        adapter(filter="nope")


def test_other_output_types_and_unknown_names_are_one_clear_line(tmp_path: Path) -> None:
    text = (ROOT / INCLUDE / f"{NAME}.yaml").read_text()
    (tmp_path / "mc.yaml").write_text(
        text.replace(f"task: {NAME}", "task: tiny_mc")
        .replace("output_type: generate_until", "output_type: multiple_choice\ndoc_to_choice: ['1', '2']")
        .replace("tasks/fixtures", str(ROOT / "tasks" / "fixtures"))
    )
    with pytest.raises(UserError, match="tiny_mc is a multiple_choice task; .* only generate_until"):
        plugins.tasks.get("lm-eval:tiny_mc")(include_path=str(tmp_path))
    with pytest.raises(UserError, match="lm-eval has no task 'no_such_task'"):
        plugins.tasks.get("lm-eval:no_such_task")(include_path=INCLUDE)


class EchoRunner:
    """TEST DOUBLE for Runner (no model): each sample reasons one step, then states an answer that
    depends on its seed, ended at lm-eval's first `until` string as an engine would."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("echo", 1000, "echo", "0", "none")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 20 + len(request.continuation) // 4

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        results = []
        for request in requests:
            completions = []
            for i in range(request.n):
                seed = request.seed_for(i)
                if "\n\n" in request.stop and not request.continuation:
                    completions.append(
                        Completion("Eggs left: 9.", 5, "stop", seed, [-0.2] * 5, stop_string="\n\n")
                    )
                else:
                    answer = 18 if request.temperature == 0 or seed % 2 else 17
                    text = f"So ${answer}. The answer is {answer}."
                    completions.append(Completion(text, 8, "stop", seed, [-0.1] * 8, stop_string=UNTIL[0]))
            results.append(GenerationResult(completions, 20, 20, 0.0))
        return results

    def close(self) -> None:
        pass


def test_every_strategy_runs_on_an_lm_eval_task_and_re_scores(tmp_path: Path) -> None:
    strategies = (
        "greedy,majority,pass@k,best-of-n,weighted-best-of-n,beam-search,dvts,mcts,particle-filtering"
    )
    spec = build_spec(
        {"task": f"lm-eval:{NAME}", "task_options": {"include_path": INCLUDE}, "limit": 3, "budgets": "2,4",
         "strategies": strategies, "verifiers": "oracle,self-certainty",
         "strategy_options": {"beam-search": {"beam_width": 2}, "dvts": {"beam_width": 2}}},
        "test",
    )  # fmt: skip
    prepared = prepare(spec)
    runner = EchoRunner()
    verifiers = build_verifiers(prepared, runner)
    folder = RunFolder.open(tmp_path / "run", prepared.spec.to_yaml(), {"test": 1})
    folder.write_json(ARMS, arms_record(prepared.arms, verifiers))
    assert generate_all(prepared, runner, 1000, verifiers, folder) == 3
    assert all(set(UNTIL) <= set(r.stop) for r in runner.requests)
    metrics, _ = rescore(folder)  # resolves the task again from the folder's spec, as `tsbench report` does
    rows = {row["strategy"].split("/")[0].removesuffix(" (oracle)") for row in metrics["rows"]}
    assert rows == set(strategies.split(","))
    assert all(row["problems"] == 3 for row in metrics["rows"])
    grades = [json.loads(line) for line in (tmp_path / "run" / "grades.jsonl").read_text().splitlines()]
    greedy = [g for g in grades if g.get("pool") == "greedy"]
    assert greedy and all(g["answer"] == "18" for g in greedy)
    # Only the first problem's reference is 18; the metric, not a copy of the answer, decides.
    assert [g["correct"] for g in greedy] == [True, False, False]


# -- agreement with lm_eval itself -------------------------------------------------------------------


def agreement(limit: int, include_path: str, task_name: str) -> dict[str, object]:
    """Greedy through the adapter on the hf runner vs lm_eval's own hf model, same model folder:
    per problem, both filters' extracted answers; both accuracies (first filter)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from tsbench.runners.embedded import embedded_gguf
    from tsbench.runners.hf import HFRunner
    from tsbench.runners.hf_loading import cached_gguf

    from tsbench.provenance import file_sha256

    HFRunner(model=None, device="cpu", threads=1).close()  # writes the embedded model's HF folder once
    folder = cached_gguf(file_sha256(str(embedded_gguf())))
    assert folder is not None
    task = plugins.tasks.get(f"lm-eval:{task_name}")(include_path=include_path)
    problems = task.load(limit, 0, None)
    runner = HFRunner(model=str(folder), device="cpu", threads=1)
    try:
        requests = [
            GenerationRequest(tuple((m["role"], m["content"]) for m in task.messages(p.public())), 1, 0.0, 1.0,
                              task.generation["max_tokens"], task.stop, (0,))
            for p in problems
        ]  # fmt: skip
        texts = [r.completions[0].text for r in runner.generate(requests)]
    finally:
        runner.close()
    other = _with_other_filter(task)
    ours = [{task.filter: task.extract(t), other.filter: other.extract(t)} for t in texts]
    results = simple_evaluate(
        model="hf",
        model_args=f"pretrained={folder},dtype=float32",
        tasks=[task_name],
        task_manager=TaskManager(include_path=include_path, include_defaults=False),
        apply_chat_template=True,
        limit=limit,
        batch_size=limit,
        device="cpu",
        log_samples=True,
    )
    theirs: dict[int, dict[str, str | None]] = {}
    for sample in results["samples"][task_name]:
        answer = sample["filtered_resps"][0]
        theirs.setdefault(sample["doc_id"], {})[sample["filter"]] = None if answer == "[invalid]" else answer
    same = sum(ours[i] == theirs[i] for i in range(len(problems)))
    ours_correct = sum(task.grade(a[task.filter], p) for a, p in zip(ours, problems, strict=True))
    their_accuracy = results["results"][task_name][f"exact_match,{task.filter}"]
    return {"n": len(problems), "same": same, "ours": ours_correct / len(problems), "theirs": their_accuracy}


def _with_other_filter(task: Any) -> Any:
    other = [n for n in ("flexible-extract", "strict-match") if n != task.filter][0]
    return plugins.tasks.get(task.name)(include_path=task.include_path, filter=other)


@pytest.mark.slow
def test_greedy_through_the_adapter_agrees_with_lm_eval_on_the_hf_runner() -> None:
    found = agreement(10, INCLUDE, NAME)
    n = int(found["n"])  # type: ignore[call-overload]
    assert found["same"] >= math.ceil(0.95 * n), found  # type: ignore[operator]
    low, high = wilson_interval(float(found["theirs"]), n)  # type: ignore[arg-type]
    assert low <= float(found["ours"]) <= high, found  # type: ignore[arg-type]
