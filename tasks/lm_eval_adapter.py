"""Any `generate_until` task of lm-evaluation-harness as a tsbench task: `--task lm-eval:NAME`.

lm-eval builds each prompt (its few-shot context, description and system instruction) as the chat
messages it would hand a chat template (what `lm_eval --apply_chat_template` sends); tsbench's
runner renders them with the model's template, and its strategies sample and search. lm-eval's
`until` strings become the task's stop strings and `max_gen_toks` its token cap; one of its filter
pipelines extracts the answer from each sample, and its first metric (a 0/1 one such as
exact_match) grades it. The document each problem came from is its reference (JSON), so grading
and re-scoring need nothing but the run folder and lm-eval.

Options (`--task-arg`): include_path (a folder of task YAMLs, as `lm_eval --include_path`: with
`dataset_path: json` and `data_files` a task runs offline), num_fewshot, filter (a filter
pipeline's name; default the task's first), fewshot_as_multiturn, system_instruction. Few-shot
examples are drawn with lm-eval's default seed (1234), as `lm_eval run` draws them.

Not supported: tasks of other output types (loglikelihood, multiple_choice), tasks that prefill the
assistant turn (gen_prefix), and filters that read the document (the extractor sees the text only).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from tsbench.contracts import AnyProblem, Message, Problem, Verdict
from tsbench.errors import UserError
from tsbench.plugins import tasks

PREFIX = "lm-eval:"
FEWSHOT_SEED = 1234  # lm_eval's default --fewshot_random_seed
INSTALL = "pip install 'tsbench[lm-eval]' (or pip install lm-eval)"


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise UserError(
            f"task {PREFIX}NAME needs lm-evaluation-harness, which is not installed: {INSTALL}"
        ) from None
    return lm_eval


@lru_cache(maxsize=4)
def _manager(include_path: str | None, defaults: bool) -> Any:
    """lm-eval's task index (indexing its built-in tasks takes seconds, so it is kept)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=defaults)


def load_lm_eval_task(name: str, include_path: str | None = None) -> Any:
    """lm-eval's task object for NAME: from include_path alone when it holds NAME, else from
    lm-eval's own tasks too."""
    _lm_eval()
    managers = [(include_path, False), (include_path, True)] if include_path else [(None, True)]
    for path, defaults in managers:
        manager = _manager(path, defaults)
        if name in manager.all_tasks:
            break
    else:
        where = f" or in {include_path}" if include_path else ""
        raise UserError(
            f"task {PREFIX}{name}: lm-eval has no task '{name}'{where}; list them with `lm_eval ls tasks`, "
            "or pass --task-arg include_path=DIR holding its YAML"
        )
    loaded = manager.load([name])
    found = loaded["tasks"].get(name)
    if found is None or name in loaded["groups"]:
        raise UserError(f"task {PREFIX}{name} is an lm-eval group; name one of its tasks instead")
    if found.OUTPUT_TYPE != "generate_until":
        raise UserError(
            f"task {PREFIX}{name} is a {found.OUTPUT_TYPE} task; tsbench samples text, so only "
            "generate_until tasks run (e.g. gsm8k_cot_zeroshot)"
        )
    return found


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


class LmEvalTask:
    """An lm-evaluation-harness generate_until task (see the module docstring)."""

    def __init__(
        self,
        task_name: str,
        include_path: str | None = None,
        num_fewshot: int | str | None = None,
        filter: str | None = None,
        fewshot_as_multiturn: bool | str = False,
        system_instruction: str | None = None,
    ) -> None:
        lm_eval = _lm_eval()
        self.task_name, self.include_path = task_name, include_path
        self.name = PREFIX + task_name
        self.description = f"lm-evaluation-harness task {task_name} (lm-eval {lm_eval.__version__})"
        self.num_fewshot = None if num_fewshot in (None, "") else int(num_fewshot)
        self.fewshot_as_multiturn = _flag(fewshot_as_multiturn)
        self.system_instruction = system_instruction
        self.lm = load_lm_eval_task(task_name, include_path)
        kwargs = dict(self.lm.config.generation_kwargs or {})
        until = kwargs.get("until") or []
        self.stop = tuple(s for s in ([until] if isinstance(until, str) else until) if s)
        self.generation = {"max_tokens": int(kwargs.get("max_gen_toks", 256)), "stop": list(self.stop)}
        ensembles = {e.name: e for e in getattr(self.lm, "_filters", [])}
        self.filter = filter or next(iter(ensembles), "none")
        if ensembles and self.filter not in ensembles:
            raise UserError(
                f"task {self.name}: no filter '{filter}'; its filters are: {', '.join(ensembles)}"
            )
        self._filters = [f() for f in ensembles[self.filter].filters] if ensembles else []
        metrics = list(self.lm.config.metric_list or [{"metric": "exact_match"}])
        self.metric = str(metrics[0]["metric"])
        self._metric_options = {k: v for k, v in metrics[0].items() if k not in ("metric", "aggregation")}
        self.extractor = f"lm-eval {lm_eval.__version__} filter {self.filter}"
        self.grader = f"lm-eval {lm_eval.__version__} metric {self.metric}"
        self.data_sha256: str | None = None

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        """The first `limit` evaluation documents in lm-eval's order (data_dir is not read: lm-eval
        finds its data through the task YAML)."""
        if self.num_fewshot is not None:
            self.lm.set_config(key="num_fewshot", value=self.num_fewshot)
        docs = list(self.lm.eval_docs)
        docs = docs[:limit] if limit else docs
        # One draw sequence over the documents in order, as lm_eval's evaluator makes it.
        self.lm.set_fewshot_seed(seed=FEWSHOT_SEED)
        problems = []
        for index, doc in enumerate(docs):
            messages = self._messages_of(doc)
            problems.append(
                Problem(
                    id=f"{self.task_name}-{index:05d}",
                    question=messages[-1]["content"],
                    reference=json.dumps(doc, sort_keys=True, default=str),
                    metadata={"messages": messages},
                )
            )
        self.data_sha256 = hashlib.sha256(json.dumps([p.reference for p in problems]).encode()).hexdigest()
        return problems

    def _messages_of(self, doc: dict[str, Any]) -> list[Message]:
        if self.lm.doc_to_prefix(doc):
            raise UserError(
                f"task {self.name} prefills the assistant turn (gen_prefix), which tsbench prompts cannot carry"
            )
        captured: list[list[Message]] = []

        def capture(messages: list[Message], add_generation_prompt: bool = True) -> str:
            captured.append([{"role": m["role"], "content": m["content"]} for m in messages])
            return ""

        shots = self.lm.config.num_fewshot or 0
        self.lm.fewshot_context(
            doc,
            num_fewshot=shots,
            system_instruction=self.system_instruction,
            apply_chat_template=True,
            fewshot_as_multiturn=self.fewshot_as_multiturn,
            chat_template=capture,
            gen_prefix=None,
        )
        return captured[0]

    def messages(self, problem: AnyProblem) -> list[Message]:
        return [dict(m) for m in problem.metadata["messages"]]

    def extract(self, text: str) -> str | None:
        """lm-eval's filter pipeline on the text; its fallback ("[invalid]") is no answer."""
        answers: Any = [[text]]
        for step in self._filters:
            answers = step.apply(answers, [{}])
        answer = list(answers)[0]
        answer = answer[0] if isinstance(answer, list) and answer else answer
        if not isinstance(answer, str) or any(answer == getattr(f, "fallback", None) for f in self._filters):
            return None
        return answer

    def canonical(self, answer: str) -> str:
        """exact_match's own normal form (its regexes_to_ignore, ignore_case, ignore_punctuation),
        so that answers it grades alike vote together; the stripped answer for other metrics."""
        if self.metric != "exact_match":
            return answer.strip()
        text = answer
        for pattern in self._metric_options.get("regexes_to_ignore") or []:
            text = re.sub(pattern, "", text)
        if self._metric_options.get("ignore_case"):
            text = text.lower()
        if self._metric_options.get("ignore_punctuation"):
            text = text.translate(str.maketrans("", "", string.punctuation))
        return text.strip()

    def canonical_many(self, answers: Sequence[str]) -> list[str]:
        return [self.canonical(a) for a in answers]

    def verdict(self, answer: str | None, problem: Problem) -> Verdict:
        if answer is None:
            return Verdict(False, "no_answer")
        try:
            scored = self.lm.process_results(json.loads(problem.reference), [answer])
            return Verdict(float(scored[self.metric]) == 1.0)
        except Exception:  # lm-eval's metric failing on what the model wrote is a wrong answer
            return Verdict(False, "error")

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return self.verdict(answer, problem).correct


def lm_eval_factory(task_name: str) -> Any:
    """The task factory of `lm-eval:task_name` (what tsbench.plugins.tasks.get returns for it)."""

    def create(**options: Any) -> LmEvalTask:
        try:
            return LmEvalTask(task_name, **options)
        except TypeError as exc:
            raise UserError(
                f"task {PREFIX}{task_name}: {exc}; its options are include_path, num_fewshot, filter, "
                "fewshot_as_multiturn, system_instruction"
            ) from None

    return create


@tasks.register(
    PREFIX + "NAME", "any lm-evaluation-harness generate_until task, e.g. lm-eval:gsm8k_cot_zeroshot"
)
def _placeholder(**options: Any) -> LmEvalTask:
    raise UserError(f"name a task: --task {PREFIX}gsm8k_cot_zeroshot (any lm-eval generate_until task)")
