"""fiberlab's objectives through verl 0.9.1's real actor engine, on CPU (:mod:`fiberlab.gpu.verl_cpu`).

One spawned process (module fixture ``engine``, :func:`fiberlab.gpu.verl_cpu.run_isolated`) builds a random tiny
Qwen2 and, for each scenario below, a fresh verl actor worker (``ActorRolloutRefWorker(role="actor")``: FSDP2 on a
gloo group of one, AdamW) from the same weights, then runs ``compute_log_prob`` + ``update_actor`` on one batch of
4 prompts × 4 responses: 2 mini-batches × 2 epochs, micro-batches of 4 rows (one group), lr 1e-2, clip 0.1, so
every mini-batch after the first is off-policy and clips. The objective runs under verl's ``ppo_loss`` with a
recording wrapper; the tests here only read what came back. The process is separate because a verl worker is
process-global state (a default process group, verl's platform singleton, environment variables, transformers'
attention patches), which the rest of the suite must not inherit.

Checks, per objective: no error; for every mini-batch, verl's sum of micro-batch losses equals one direct call of
the objective on the whole mini-batch with the log-probabilities verl's model produced (``replay``), and so
do the per-token gradients; every gradient, the grad norm and the updated weights finite; the objective's metrics
among verl's. ``ppo`` against verl's own ``vanilla``: the same grad norms and losses, bit for bit. Also: what
verl hands the objective (``global_batch_info``, nothing else), how the id-needing objectives fail, verl's dynamic
batching regrouping rows across groups (LPO with contiguous groups refuses it) and verl's ``force_group_size``
keeping them, and bf16 mixed precision (log-probs arrive in bfloat16).

Tolerance: the micro-batched loss is the same sum split into partial sums over the same global counts
(``global_batch_info``), so float32 round-off only: ``LOSS_TOL`` = 8 ulps of 1 relative to ``1 + |loss|`` (the
summands are O(1); observed ≤ 1e-7). The per-token gradients depend only on each token, its row and its group,
with the same denominators, and are observed bitwise equal; compared with the same tolerance. A merged LPO group
moves the loss by ~1e-2 to 1e-1.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

pytestmark = [pytest.mark.verl, pytest.mark.slow]

#: verl, its runtime and the verl-actor extra: what the actor worker imports. `make test` installs them all, so under
#: CI a missing one is a broken install and fails; a bare `pytest` in an environment without verl skips.
_NEEDED = ("verl", "transformers", "tokenizers", "tensordict", "datasets", "peft", "accelerate", "fastapi", "uvicorn")
_MISSING = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
if _MISSING:
    if os.environ.get("CI"):
        raise ImportError(f"the verl engine tests need {_MISSING} (the verl-runtime and verl-actor extras)")
    pytest.skip(f"needs verl 0.9.1 and the verl-actor extra ({_MISSING} not installed; make test installs them)",
                allow_module_level=True)

LOSS_TOL = 8 * torch.finfo(torch.float32).eps
ROLLOUT_N = 4
CLIP = 0.1
#: (loss_mode, policy_loss settings, loss_agg_mode, extra cpu_actor arguments, update_meta)
SCENARIOS = {
    "ppo": ("ppo", {}, "token-mean", {}, None),
    "vanilla": ("vanilla", {}, "token-mean", {}, None),
    # δ small enough for a band about as tight as PPO's ±10% on the tiny model's p ≈ 1/64 tokens (TV: ±δ/p ≈ 6%,
    # KL: about ±(2δ/p)^½ ≈ 16%), so that the band clips from the second mini-batch on
    "bandpo_kl": ("bandpo", {"band_divergence": "kl", "band_delta": 2e-4}, "token-mean", {}, None),
    "bandpo_tv": ("bandpo", {"band_divergence": "tv", "band_delta": 1e-3}, "token-mean", {}, None),
    "lpo_fwd": ("lpo", {"lpo_divergence": "fwd", "lpo_group_size": ROLLOUT_N}, "seq-mean-token-sum", {}, None),
    "lpo_rev": ("lpo", {"lpo_divergence": "rev", "lpo_group_size": ROLLOUT_N}, "seq-mean-token-sum", {}, None),
    "lpo_pointwise": ("lpo_pointwise", {"lpo_group_size": ROLLOUT_N}, "seq-mean-token-sum", {}, None),
    "fiberpo": ("fiberpo", {}, "seq-mean-token-mean", {}, None),
    "grpo_rgf": ("grpo_rgf", {}, "seq-mean-token-mean", {}, None),
    "gspo": ("fiberlab_gspo", {}, "seq-mean-token-mean", {}, None),     # plain "gspo" is verl's own
    "fiberpo_domain": ("fiberpo_domain", {}, "seq-mean-token-mean", {}, None),
    "apc": ("apc", {}, "token-mean", {}, None),
    # verl's dynamic batching, 60 tokens per micro-batch: the first mini-batch (54 tokens) is one micro-batch, the
    # second (77 tokens) two micro-batches of 4 rows balanced by token load, not by group
    "lpo_dynamic_bsz": ("lpo", {"lpo_divergence": "fwd", "lpo_group_size": ROLLOUT_N}, "seq-mean-token-sum",
                        {"use_dynamic_bsz": True, "max_token_len": 60}, None),
    # the same batching under ppo (no groups): shows the regrouping, and that a token-level objective is exact there
    "ppo_dynamic_bsz": ("ppo", {}, "token-mean", {"use_dynamic_bsz": True, "max_token_len": 60}, None),
    "ppo_dynamic_bsz_forced_groups": ("ppo", {}, "token-mean", {"use_dynamic_bsz": True, "max_token_len": 60},
                                      {"force_group_size": ROLLOUT_N}),
    "lpo_bf16": ("lpo", {"lpo_divergence": "fwd", "lpo_group_size": ROLLOUT_N}, "seq-mean-token-sum",
                 {"mixed_precision": "bf16"}, None),
}
#: Objectives that clip (their clip fraction must be > 0 once off-policy); LPO's default token clip is "none".
CLIPPING = ("ppo", "vanilla", "bandpo_kl", "bandpo_tv", "fiberpo", "grpo_rgf", "gspo")
MATCHING = ("ppo", "vanilla", "bandpo_kl", "bandpo_tv", "lpo_fwd", "lpo_rev", "lpo_pointwise", "fiberpo", "grpo_rgf",
            "gspo", "ppo_dynamic_bsz", "ppo_dynamic_bsz_forced_groups", "lpo_bf16")


def _summary(vc, actor, step) -> dict:
    """Plain data (floats, lists, small tensors) from one actor step, for the parent process."""
    mini_of = {} if step.error else {id(c): i for i, calls in enumerate(step.mini_batches()) for c in calls}
    out = {"error": step.error, "metrics": {k: [float(x) for x in v] if isinstance(v, list) else v
                                            for k, v in step.metrics.items()},
           "calls": [{"rows": c.rows, "uids": c.uids, "batch_keys": c.batch_keys, "extra_keys": c.extra_keys,
                      "global_batch_info": c.global_batch_info, "loss_agg_mode": c.loss_agg_mode,
                      "log_prob_dtype": str(c.log_prob.dtype), "old_log_prob_dtype": str(c.old_log_prob.dtype),
                      "grad_finite": c.grad is not None and bool(torch.isfinite(c.grad).all()),
                      "mini_batch": mini_of.get(id(c))}
                     for c in step.calls],
           "mini_batch_size": step.mini_batch_size, "params_finite": vc.parameters_finite(actor),
           "old_log_probs": step.old_log_probs}
    if step.error is None:
        out["replays"] = [{"verl_loss": r.verl_loss, "direct_loss": r.direct_loss, "verl_grad": r.verl_grad,
                           "direct_grad": r.direct_grad, "row_order": r.row_order,
                           "max_abs_log_ratio": float(((r.log_prob.double() - r.old_log_prob.double())
                                                       * r.response_mask).abs().max()),
                           "tokens": int(r.response_mask.sum()), "direct_metric_keys": sorted(r.direct_metrics)}
                          for r in vc.replay(step, actor)]
    return out


def _run_scenarios(model_dir: str) -> dict:
    """In the spawned process: the tiny model, then every scenario on a fresh actor from the same weights."""
    import traceback

    from fiberlab.gpu import verl_cpu as vc

    vc.make_tiny_model(model_dir)
    results = {"reference_log_probs": vc.reference_log_probs(model_dir, vc.make_batch(num_prompts=4,
                                                                                      rollout_n=ROLLOUT_N, seed=1))}
    for name, (mode, pl, agg, kw, meta) in SCENARIOS.items():
        try:
            actor = vc.cpu_actor(mode, pl, model_dir=model_dir, rollout_n=ROLLOUT_N, ppo_mini_batch_size=2,
                                 micro_batch_size=ROLLOUT_N, ppo_epochs=2, lr=1e-2,
                                 actor_overrides={"loss_agg_mode": agg, "clip_ratio_low": CLIP,
                                                  "clip_ratio_high": CLIP}, **kw)
            batch = vc.make_batch(num_prompts=4, rollout_n=ROLLOUT_N, seed=1)
            results[name] = _summary(vc, actor, vc.actor_step(actor, batch, update_meta=meta, raise_errors=False))
        except Exception:                                  # noqa: BLE001  (reported by the tests that read it)
            results[name] = {"error": "harness: " + traceback.format_exc()}
    return results


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="module")
def engine(model_dir) -> dict:
    from fiberlab.gpu.verl_cpu import run_isolated

    return run_isolated(_run_scenarios, model_dir, timeout=300)


def _ok(engine: dict, name: str) -> dict:
    res = engine[name]
    assert res["error"] is None, f"{name}: {res['error']}"
    return res


def _assert_replays_match(res: dict, name: str) -> None:
    for i, r in enumerate(res["replays"]):
        diff = abs(r["verl_loss"] - r["direct_loss"])
        assert diff <= LOSS_TOL * (1 + abs(r["direct_loss"])), \
            f"{name} mini-batch {i}: verl {r['verl_loss']!r} vs direct {r['direct_loss']!r} (rows {r['row_order']})"
        scale = float(r["direct_grad"].abs().max())
        torch.testing.assert_close(r["verl_grad"], r["direct_grad"], rtol=LOSS_TOL, atol=LOSS_TOL * scale,
                                   msg=lambda m: f"{name} mini-batch {i} gradient: {m}")


def test_packed_log_probs_equal_each_sequence_alone(engine):
    """verl packs a micro-batch into one row (use_remove_padding) and the tiny model runs eager attention on CPU:
    the old log-probs must still be those of each sequence run alone (no attention across packed sequences)."""
    torch.testing.assert_close(_ok(engine, "ppo")["old_log_probs"], engine["reference_log_probs"],
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", MATCHING)
def test_micro_batched_loss_equals_one_call_on_the_mini_batch(engine, name):
    res = _ok(engine, name)
    assert len(res["replays"]) == 4                            # 2 mini-batches × 2 epochs
    _assert_replays_match(res, name)


@pytest.mark.parametrize("name", MATCHING)
def test_off_policy_finite_and_metrics_reported(engine, name):
    res = _ok(engine, name)
    replays, metrics = res["replays"], res["metrics"]
    assert replays[0]["max_abs_log_ratio"] < 1e-5, "the first mini-batch is on-policy (up to the packing's round-off)"
    assert all(r["max_abs_log_ratio"] > 1e-3 for r in replays[1:]), "every mini-batch after the first is off-policy"
    assert all(c["grad_finite"] for c in res["calls"])
    assert all(math.isfinite(g) for g in metrics["actor/grad_norm"])
    assert res["params_finite"]
    if name in CLIPPING:
        assert metrics["actor/pg_clipfrac"][0] == 0.0           # on-policy: nothing to clip
        assert all(f > 0 for f in metrics["actor/pg_clipfrac"][1:]), metrics["actor/pg_clipfrac"]
    # as RayPPOTrainer._update_actor renames them (rename_dict: "actor/" unless already there)
    missing = {k if k.startswith("actor/") else "actor/" + k for k in replays[0]["direct_metric_keys"]} - set(metrics)
    assert not missing, f"objective metrics missing from verl's: {sorted(missing)}"
    assert {c["loss_agg_mode"] for c in res["calls"]} == {SCENARIOS[name][2]}


def test_ppo_bitwise_equals_verl_vanilla_in_the_engine(engine):
    ppo, vanilla = _ok(engine, "ppo")["metrics"], _ok(engine, "vanilla")["metrics"]
    assert ppo["actor/grad_norm"] == vanilla["actor/grad_norm"]
    assert ppo["actor/loss"] == vanilla["actor/loss"]
    assert ppo["actor/pg_clipfrac"] == vanilla["actor/pg_clipfrac"]


def test_what_verl_hands_the_objective(engine):
    """verl's ppo_loss calls the objective with its seven keywords only; the group (``uid``) is in the
    micro-batch TensorDict but does not reach the objective; ``config.global_batch_info`` has the mini-batch's
    counts (rows, valid response tokens), the same for each of its micro-batches."""
    res = _ok(engine, "ppo")
    for c in res["calls"]:
        assert c["extra_keys"] == []
        assert "uid" in c["batch_keys"] and "data_source" in c["batch_keys"]
        assert c["uids"] == [f"prompt{int(r) // ROLLOUT_N}" for r in c["rows"]]
        info = c["global_batch_info"]
        assert set(info) == {"dp_size", "batch_num_tokens", "global_batch_size", "loss_scale_factor"}
        assert info["dp_size"] == 1 and info["global_batch_size"] == res["mini_batch_size"]
        assert info["batch_num_tokens"] == res["replays"][c["mini_batch"]]["tokens"]
        assert info["loss_scale_factor"] is None
        assert c["log_prob_dtype"] == c["old_log_prob_dtype"] == "torch.float32"


@pytest.mark.parametrize("name, missing", [("fiberpo_domain", "group_ids"), ("apc", "state_ids")])
def test_objectives_needing_ids_fail_loudly_in_verl(engine, name, missing):
    """verl's ppo_loss passes no ids: the objective refuses, naming them, instead of running without them."""
    err = engine[name]["error"]
    assert err is not None and err.startswith("ValueError") and f"{missing} is required" in err


def test_dynamic_batching_regroups_rows_across_groups(engine):
    """verl's rearrange_micro_batches balances token load: some micro-batch is not a union of whole groups of
    consecutive rows (why LPO's contiguous groups must refuse it, below), while ``force_group_size`` — which verl
    0.9.1 reads from the batch but never sets from config — keeps them whole."""
    def whole_groups(rows):
        return sorted(rows) == list(range(min(rows), min(rows) + len(rows))) and min(rows) % ROLLOUT_N == 0 \
            and len(rows) % ROLLOUT_N == 0

    mixed = _ok(engine, "ppo_dynamic_bsz")["replays"]
    assert any(not whole_groups(rows) for r in mixed for rows in r["row_order"])
    forced = _ok(engine, "ppo_dynamic_bsz_forced_groups")["replays"]
    assert all(whole_groups(rows[i:i + ROLLOUT_N]) for r in forced for rows in r["row_order"]
               for i in range(0, len(rows), ROLLOUT_N))


def test_lpo_refuses_groups_merged_by_dynamic_batching(engine):
    """With ``use_dynamic_bsz`` the micro-batch rows are no longer contiguous groups of ``lpo_group_size``: the
    objective reads the flag from verl's actor config and refuses at the first micro-batch, before any optimiser
    step (it used to merge two prompts' responses into one group: loss −0.0326 instead of −0.0508)."""
    res = engine["lpo_dynamic_bsz"]
    assert res["error"] is not None and res["error"].startswith("ValueError")
    assert "use_dynamic_bsz=True" in res["error"] and "lpo_group_size" in res["error"]
    assert res["calls"] == []                          # refused on the first call: no update happened


def test_bf16_mixed_precision_reaches_lpo_as_bfloat16(engine):
    """verl's default mixed precision (bf16 parameters, autocast): on this path (no flash-attn cross-entropy,
    ``logprobs_from_logits_v2``, CPU autocast) ``log_prob`` arrives in bfloat16 and ``old_log_prob`` in float32
    (the trainer casts it); the objective computes in float32 and still equals the direct call."""
    res = _ok(engine, "lpo_bf16")
    assert {c["log_prob_dtype"] for c in res["calls"]} == {"torch.bfloat16"}
    assert {c["old_log_prob_dtype"] for c in res["calls"]} == {"torch.float32"}


@pytest.mark.parametrize("loss_mode", ["fiberpo_domain", "apc", "fiberlab_apc"])
def test_verl_config_refuses_objectives_it_cannot_feed(loss_mode):
    """verl builds FiberlabPolicyLossConfig when the trainer starts: an objective needing ids is refused there,
    with the reason, not at the first micro-batch."""
    from fiberlab.gpu.verl import actor_config

    with pytest.raises(Exception, match="passes a policy loss no ids") as info:
        actor_config({"loss_mode": loss_mode, "fiberpo_eps": 0.03})
    cause = info.value
    while cause.__cause__ is not None:                 # hydra wraps the dataclass's own ValueError
        cause = cause.__cause__
    assert isinstance(cause, ValueError)


@pytest.mark.parametrize("key", ["use_dynamic_bsz", "shuffle"])
def test_lpo_contiguous_groups_refuse_regrouped_rows(key):
    """In-process, with verl's real actor config: contiguous groups under dynamic batching or shuffling would be
    silently wrong, so the objective refuses, naming the key; explicit group_ids are still accepted."""
    from fiberlab.gpu.losses import get_policy_loss
    from fiberlab.gpu.verl import actor_config

    cfg = actor_config({"loss_mode": "lpo", "lpo_group_size": 2}, **{key: True})
    old = torch.full((4, 3), -1.0)
    lp = old - torch.tensor([[0.1], [0.0], [0.2], [0.0]])
    with pytest.raises(ValueError, match=f"{key}=True"):
        get_policy_loss("lpo")(old, lp, torch.zeros(4, 3), torch.ones(4, 3), "seq-mean-token-sum", cfg)
    loss, _ = get_policy_loss("lpo")(old, lp, torch.zeros(4, 3), torch.ones(4, 3), "seq-mean-token-sum", cfg,
                                     group_ids=torch.tensor([0, 0, 1, 1]), rewards=torch.tensor([1.0, 0, 0, 1]))
    assert torch.isfinite(loss)


def test_verl_check_command(capsys):
    """``fiberlab verl-check`` runs one real actor step and reports the micro-batch sums matching (exit 0)."""
    from fiberlab import cli

    assert cli.main(["verl-check", "--loss-mode", "ppo"]) == 0
    out = capsys.readouterr().out
    assert "equals one call on each mini-batch" in out and "actor/pg_clipfrac" in out
