"""Verifiers: score whole solutions (outcome) or their steps (process); each registers itself.

Every module registers a factory `create(runner, **options) -> verifier` in
tsbench.plugins.verifiers; `runner` is the policy runner, which the model-using verifiers
(llm-judge, rollout-value) use unless given another. hf-reward imports torch only when built.
"""

from . import hf_reward, llm_judge, oracle, public_tests, rollout_value, rule_rewards, self_certainty

__all__ = [
    "hf_reward",
    "llm_judge",
    "oracle",
    "public_tests",
    "rollout_value",
    "rule_rewards",
    "self_certainty",
]
