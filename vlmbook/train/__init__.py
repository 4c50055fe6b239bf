"""Chapter 6 — Training the guide: alignment, instruction tuning, preferences, inference-time and post-training.

The losses and algorithms take tensors (:mod:`.losses`, :mod:`.ppo`, :mod:`.consistency`,
:mod:`.quant`, :mod:`.sft`); :mod:`.policy` is the one adapter that gets those tensors from
Chapter 5's ``VisionLanguageModel``; :mod:`.distributed` runs SFT and DPO steps under
``accelerate launch``.
"""
from ..hub import ArtifactSpec, register_artifact
from .consistency import majority_vote, normalise_answer, self_consistency
from .losses import (IGNORE, distill_loss, dpo_loss, dpo_rewards, hidden_mse, pairwise_accuracy, reward_loss,
                     sequence_logprobs, sft_loss, token_logprobs)
from .ppo import (AdaptiveKLController, FixedKLController, ValueHead, citation_precision_of, gae,
                  group_relative_advantages, kl_penalty, masked_mean, ppo_policy_loss, ppo_value_loss, shaped_rewards,
                  shaped_score, whiten)
from .policy import Example, VLMPolicy, freeze
from .quant import Int8Linear, dequantize, linear_bytes, model_bytes, quantize_linear_layers, quantize_per_channel
from .reward import RewardModel
from .runner import fit_groups
from .sft import (ANSWER, THOUGHT, ChatTemplate, Curriculum, LoRAHandle, Turn, apply_lora, chain_of_thought, cot_text,
                  difficulty, freeze_all_but, load_lora, param_groups, trainable_fraction, vlm_lrs)

STUDENT_TINY = register_artifact(ArtifactSpec(
    "vlm-student-tiny", "1", "vlmbook.train.student:build_student_tiny", seed=0,
    description="half-width student of vlm-tiny (hidden 40, two layers, at most half the LM parameters), the "
                "teacher's frozen image side, distilled for 3,000 steps (alpha 0.5, T = 2, hidden-state MSE weight 1) "
                "with Chapter 5's recipe and curriculum on one thread"))

__all__ = [
    "STUDENT_TINY", "majority_vote", "normalise_answer", "self_consistency", "IGNORE", "distill_loss", "dpo_loss", "dpo_rewards",
    "Example", "VLMPolicy", "freeze", "RewardModel", "fit_groups", "hidden_mse", "pairwise_accuracy", "reward_loss", "sequence_logprobs", "sft_loss", "token_logprobs",
    "AdaptiveKLController", "FixedKLController", "ValueHead", "citation_precision_of", "gae",
    "group_relative_advantages", "kl_penalty", "masked_mean", "ppo_policy_loss", "ppo_value_loss", "shaped_rewards",
    "shaped_score", "whiten", "Int8Linear", "dequantize", "linear_bytes", "model_bytes", "quantize_linear_layers",
    "quantize_per_channel", "ANSWER", "THOUGHT", "ChatTemplate", "Curriculum", "LoRAHandle", "Turn", "apply_lora",
    "chain_of_thought", "cot_text", "difficulty", "freeze_all_but", "load_lora", "param_groups", "trainable_fraction", "vlm_lrs",
]
