r"""verl 0.9.1's real actor on CPU: fiberlab's objectives through a real verl training step.

:mod:`fiberlab.gpu.verl` puts the objectives into verl's ``POLICY_LOSS_REGISTRY``; this module runs them where
verl runs them. :func:`cpu_actor` builds verl's own ``ActorRolloutRefWorker(role="actor")`` (``init_model`` →
``TrainingWorker`` → ``FSDPEngineWithLMHead``: FSDP2 over a gloo group of one process, AdamW, verl's LR
scheduler) on a random tiny Qwen2 (:func:`make_tiny_model`), and :func:`actor_step` calls it the way verl's
``RayPPOTrainer`` does (``_compute_old_log_prob``, then ``_update_actor``): ``compute_log_prob`` →
``update_actor`` → ``train_mini_batch`` (mini-batches × epochs) → ``train_batch`` → ``forward_backward_batch``
(micro-batches) → ``verl.workers.utils.losses.ppo_loss`` → ``get_policy_loss_fn(loss_mode)`` → the objective,
then per-micro-batch backward, gradient clipping and the optimiser step. Nothing of that path is replaced; on a
2-core CPU an update of a 16-row batch takes a fraction of a second after ~5 s of imports.

The shims, each for the verl function that needs it on a machine without an accelerator:

* :class:`CpuPlatform`, installed with ``verl.plugin.platform.platform_manager.set_platform``: verl resolves its
  device through ``get_platform()``, whose auto-detection falls back to ``"nvidia"`` when no accelerator is found,
  so ``verl.utils.device.get_device_id()`` (``torch.cuda.current_device()``) fails ("Torch not compiled with
  CUDA enabled") in ``forward_step`` and ``forward_backward_batch``. The CPU platform names the device
  ``"cpu"``: ``get_device_id()`` returns ``"cpu"`` (``tensor.to("cpu")``, ``init_device_mesh("cpu", ...)``), and
  its :class:`CpuDeviceModule` answers what verl calls on ``get_torch_device()`` (``empty_cache``,
  ``synchronize``, ``max_memory_allocated`` in ``TrainingWorker._postprocess_output``, ``mem_get_info`` in
  ``log_gpu_memory_usage``, ``manual_seed``, ...).
* ``FSDPEngineWithLMHead`` registered for device ``"cpu"`` and backend ``"fsdp2"`` in verl's ``EngineRegistry``:
  ``EngineRegistry.get_engine_cls`` looks the engine up by ``(model_type, backend, device)``, and verl registers
  it for ``"cuda"`` and ``"npu"`` only (the environment override ``VERL_ENGINE_DEVICE=cuda`` would do the same,
  for every engine lookup of the process). Only FSDP2: FSDP1 (``strategy=fsdp``) wraps with
  ``sync_module_states=True``, which torch refuses for a module on CPU ("The module has CPU parameters or buffers
  when `sync_module_states=True`").
* A gloo process group of one, initialised before verl's ``initialize_global_process_group_ray`` (called by
  ``TrainingWorker.__init__``), which initialises nothing when a group exists; otherwise it builds the backend
  string ``"cpu:gloo,{device}:{backend}"`` = ``"cpu:gloo,cpu:gloo"``, which torch refuses ("Duplicate device
  type cpu"). The group uses an in-memory ``HashStore`` (no port is bound); the
  variables ``verl.single_controller.base.Worker.__init__`` reads (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``) are set when absent (a free port for ``MASTER_PORT``). World size 1 only:
  :func:`setup_process` refuses an initialised group or a ``WORLD_SIZE`` of any other size.
* Configuration, in verl's trainer YAML (``_generated_ppo_trainer.yaml``, ``actor_rollout_ref`` section), as a
  user would override it: ``actor.strategy=fsdp2``; ``model.override_config.attn_implementation=eager`` (verl's
  ``HFModelConfig`` defaults to ``flash_attention_2``; with verl's ``use_remove_padding`` a micro-batch is one
  packed row, and transformers keeps its sequences apart from the restarting ``position_ids``: the log-probs
  equal each sequence run alone, :func:`reference_log_probs`);
  ``actor.fsdp_config.use_torch_compile=False`` (verl would ``torch.compile`` its entropy function, whose
  compilation would cost more than the tiny model's whole step); mixed precision fp32 for
  exact comparisons (``mixed_precision="fp32"``: no autocast in ``forward_step``) or verl's default bf16.

Recording. With ``record=True`` (the default) the worker's ``loss_mode`` is ``fiberlab_record_<name>``, a
wrapper registered in verl's registry that calls the objective ``<name>`` unchanged and records, per micro-batch,
exactly what verl passed to it (``old_log_prob``, ``log_prob``, ``advantages``, ``response_mask``,
``rollout_is_weights``, ``loss_agg_mode``, a copy of ``config.global_batch_info``), what it returned, and
:math:`\partial L/\partial\log\pi` (a hook on ``log_prob``); a wrapper around the worker's ``ppo_loss`` adds the
rows of the batch the micro-batch holds (a ``fiberlab_row`` column travels with the batch) and the keys of the
micro-batch ``TensorDict`` (with its ``uid`` column, which verl does not pass on). :func:`replay` then calls the
objective once on each whole mini-batch, in the batch's row order, with the recorded log-probabilities, and sets
its loss and gradient beside verl's micro-batched ones: the check that an objective survives verl's
micro-batching.

Everything here is process-global (platform, process group, environment, transformers' attention patches that
verl applies when it builds the model): run it in a process of its own, e.g. through :func:`run_isolated`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import socket
import tempfile
import traceback
import warnings
from types import ModuleType
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from verl.plugin.platform import platform_manager
from verl.plugin.platform.platform_base import PlatformBase
from verl.trainer.ppo import core_algos
from verl.workers.config.actor import PolicyLossConfig

from fiberlab.gpu import verl as fverl

#: Prefix of the recording aliases in verl's registry (``fiberlab_record_ppo`` records ``ppo``).
RECORD_PREFIX = "fiberlab_record_"
#: The column added to the batch so that each micro-batch names the rows it holds.
ROW_KEY = "fiberlab_row"
MIXED_PRECISION = {
    "fp32": {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
    # verl's default (FSDPEngine._build_fsdp_module with mixed_precision=None), spelled out
    "bf16": {"param_dtype": "bf16", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
}
#: Tokens of the tiny tokenizer that are not words: Qwen2's pad (``<|endoftext|>``), chat and end-of-turn tokens.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


# --------------------------------------------------------------------------------------------------------------
# The CPU platform
# --------------------------------------------------------------------------------------------------------------

class CpuDeviceModule(ModuleType):
    """``torch.cpu`` plus the ``torch.cuda``-style calls verl makes on ``get_torch_device()``: memory statistics
    (0: the CPU has no allocator statistics; ``TrainingWorker._postprocess_output`` reports them), ``mem_get_info``
    (free and total host memory, for ``log_gpu_memory_usage``), RNG state and seeding (the CPU generator),
    ``empty_cache``/``ipc_collect`` (nothing to release)."""

    def __init__(self) -> None:
        super().__init__("fiberlab_cpu_device")

    def __getattr__(self, name: str) -> Any:        # Stream, Event, current_stream, stream, ... from torch.cpu
        return getattr(torch.cpu, name)

    def is_available(self) -> bool:
        return True

    def current_device(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device: Any) -> None:
        pass

    def synchronize(self, device: Any = None) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def ipc_collect(self) -> None:
        pass

    def memory_allocated(self, device: Any = None) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        pass

    def get_device_name(self, device: Any = None) -> str:
        return "cpu"

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)


class CpuPlatform(PlatformBase):
    """verl's platform interface (``verl.plugin.platform.platform_base.PlatformBase``) for the host CPU: device
    ``"cpu"``, collectives over gloo, no profiler, no IPC, no CUDA runtime."""

    _module = CpuDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return self._module

    def is_available(self) -> bool:
        return True

    def current_device(self) -> str:          # verl annotates int; "cpu" is what .to() and device meshes need
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: Optional[int] = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_process() -> None:
    """Make this process a verl worker of world size 1 on CPU (idempotent; see the module docstring).

    Installs :class:`CpuPlatform`, registers verl's FSDP engine for device ``"cpu"``, sets the worker's
    environment variables where absent, initialises a gloo process group of one, and registers fiberlab's
    objectives (:func:`fiberlab.gpu.verl.register`). Raises ``RuntimeError`` for any other world size.
    """
    ws = os.environ.get("WORLD_SIZE")
    if ws is not None and ws != "1":
        raise RuntimeError(f"fiberlab.gpu.verl_cpu runs verl's actor in one process (world size 1); "
                           f"WORLD_SIZE={ws!r} is set")
    if dist.is_initialized() and dist.get_world_size() != 1:
        raise RuntimeError(f"fiberlab.gpu.verl_cpu runs verl's actor in one process (world size 1); a process group "
                           f"of world size {dist.get_world_size()} is already initialised")
    # read directly: get_platform() would first auto-detect (and log its fall-back to "nvidia")
    if not isinstance(platform_manager._current_platform, CpuPlatform):
        platform_manager.set_platform(CpuPlatform())

    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    try:
        EngineRegistry.get_engine_cls("language_model", "fsdp2")
    except ValueError:                         # "No engine registered for device='cpu' ..."
        EngineRegistry.register(model_type="language_model", backend="fsdp2", device="cpu")(FSDPEngineWithLMHead)

    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    fverl.register()


# --------------------------------------------------------------------------------------------------------------
# A tiny model and batches
# --------------------------------------------------------------------------------------------------------------

def make_tiny_model(folder: str, *, vocab: int = 64, hidden: int = 32, layers: int = 2, heads: int = 2,
                    kv_heads: int = 1, intermediate: int = 64, max_positions: int = 256, seed: int = 0) -> str:
    """Write a random Qwen2 causal LM and a word-level tokenizer to ``folder`` (created); return ``folder``.

    Built from a config, nothing downloaded. The tokenizer (a ``PreTrainedTokenizerFast`` over a ``tokenizers``
    WordLevel model) has Qwen2's special tokens (:data:`SPECIAL_TOKENS`: pad ``<|endoftext|>`` = 0,
    ``<|im_start|>`` = 1, eos ``<|im_end|>`` = 2) and the words ``t3`` ... ``t{vocab-1}`` = their ids; verl's
    ``HFModelConfig`` loads both from the folder. The weights depend only on ``seed`` and the sizes.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if vocab <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab}")
    os.makedirs(folder, exist_ok=True)
    words = list(SPECIAL_TOKENS) + [f"t{i}" for i in range(len(SPECIAL_TOKENS), vocab)]
    ids = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordLevel(ids, unk_token=SPECIAL_TOKENS[0]))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=SPECIAL_TOKENS[0], unk_token=SPECIAL_TOKENS[0],
                                  eos_token=SPECIAL_TOKENS[2])
    tok.save_pretrained(folder)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=False,
                      pad_token_id=ids[SPECIAL_TOKENS[0]], eos_token_id=ids[SPECIAL_TOKENS[2]], bos_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    return folder


def make_batch(*, num_prompts: int = 4, rollout_n: int = 4, prompt_length: tuple[int, int] = (2, 6),
               response_length: tuple[int, int] = (1, 8), vocab: int = 64, seed: int = 0,
               norm_adv_by_std: bool = True) -> Any:
    """A verl ``DataProto`` as ``RayPPOTrainer`` hands it to ``_compute_old_log_prob`` and ``_update_actor``.

    ``num_prompts`` prompts, each with ``rollout_n`` responses on consecutive rows (the layout of verl's
    ``repeat(interleave=True)``), prompts left-padded to ``prompt_length[1]`` tokens and responses right-padded to
    ``response_length[1]``, lengths drawn uniformly from the given inclusive ranges (a group shares its prompt).
    Tensors: ``prompts``, ``responses``, ``input_ids``, ``attention_mask``, ``position_ids``, ``response_mask``,
    ``token_level_rewards`` (a uniform score on the last response token) and ``advantages`` from verl's own
    ``compute_grpo_outcome_advantage`` over ``uid`` (per sequence, constant along the response). Non-tensors:
    ``uid`` (the group) and ``data_source``. Meta: ``temperature`` = 1.
    """
    from verl import DataProto

    g = torch.Generator().manual_seed(seed)
    b, p_max, r_max = num_prompts * rollout_n, prompt_length[1], response_length[1]
    lo = len(SPECIAL_TOKENS)
    prompts = torch.zeros(b, p_max, dtype=torch.long)
    responses = torch.zeros(b, r_max, dtype=torch.long)
    p_mask = torch.zeros(b, p_max, dtype=torch.long)
    r_mask = torch.zeros(b, r_max, dtype=torch.long)
    for q in range(num_prompts):
        plen = int(torch.randint(prompt_length[0], p_max + 1, (1,), generator=g))
        prompt = torch.randint(lo, vocab, (plen,), generator=g)
        for k in range(rollout_n):
            i = q * rollout_n + k
            prompts[i, p_max - plen:] = prompt
            p_mask[i, p_max - plen:] = 1
            rlen = int(torch.randint(response_length[0], r_max + 1, (1,), generator=g))
            responses[i, :rlen] = torch.randint(lo, vocab, (rlen,), generator=g)
            r_mask[i, :rlen] = 1
    attention_mask = torch.cat([p_mask, r_mask], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
    last = r_mask.sum(-1) - 1
    rewards = torch.zeros(b, r_max)
    rewards[torch.arange(b), last] = torch.rand(b, generator=g)
    uid = np.array([f"prompt{i // rollout_n}" for i in range(b)], dtype=object)
    adv, _ = core_algos.compute_grpo_outcome_advantage(rewards, r_mask, uid, norm_adv_by_std_in_grpo=norm_adv_by_std)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], dim=1),
                 "attention_mask": attention_mask, "position_ids": position_ids, "response_mask": r_mask,
                 "token_level_rewards": rewards, "advantages": adv.float()},
        non_tensors={"uid": uid, "data_source": np.array(["fiberlab_toy"] * b, dtype=object)},
        meta_info={"temperature": 1.0})


def reference_log_probs(model_dir: str, batch: Any) -> torch.Tensor:
    """``[B, R]`` log-probabilities of each response under the model in ``model_dir``, from a plain transformers
    forward of each sequence alone (eager attention, float32, no padding, no verl): what verl's packed
    ``compute_log_prob`` must reproduce (0 on padding)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    ids, attn, r_mask = batch.batch["input_ids"], batch.batch["attention_mask"], batch.batch["response_mask"]
    out = torch.zeros(r_mask.shape, dtype=torch.float32)
    with torch.no_grad():
        for i in range(ids.shape[0]):
            seq = ids[i][attn[i].bool()][None]
            lp = torch.log_softmax(model(seq).logits[0, :-1].float(), dim=-1).gather(1, seq[0, 1:, None])[:, 0]
            n = int(r_mask[i].sum())
            out[i, :n] = lp[-n:]
    return out


# --------------------------------------------------------------------------------------------------------------
# Recording what verl passes to the objective
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LossCall:
    """One micro-batch as the objective saw it (all tensors detached copies, on CPU)."""

    old_log_prob: torch.Tensor
    log_prob: torch.Tensor                     # as it arrived (its dtype is the model's output dtype)
    advantages: torch.Tensor
    response_mask: torch.Tensor
    rollout_is_weights: Optional[torch.Tensor]
    loss_agg_mode: str
    global_batch_info: dict[str, Any]          # config.global_batch_info when the objective was called
    extra_keys: list[str]                      # keyword arguments beyond verl's seven (none from ppo_loss)
    loss: Optional[torch.Tensor] = None        # the objective's loss (0-d, its dtype)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    grad: Optional[torch.Tensor] = None        # ∂(micro-batch loss)/∂log_prob, from a hook on log_prob
    rows: Optional[torch.Tensor] = None        # rows of the batch given to actor_step
    batch_keys: list[str] = dataclasses.field(default_factory=list)   # keys of verl's micro-batch TensorDict
    uids: Optional[list[str]] = None           # the micro-batch's ``uid`` column (in the TensorDict, not passed on)
    total_loss: Optional[float] = None         # what ppo_loss returned (objective + entropy/KL terms)


_SINKS: list[list[LossCall]] = []           # the innermost actor_step collecting calls (one thread)


class RecordingPolicyLoss:
    """A verl policy loss that calls the registered objective ``name`` and records the call (:class:`LossCall`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                 config=None, rollout_is_weights=None, **extra):
        fn = core_algos.get_policy_loss_fn(self.name)
        info = getattr(config, "global_batch_info", None)
        call = LossCall(old_log_prob.detach().cpu().clone(), log_prob.detach().cpu().clone(),
                        advantages.detach().cpu().clone(), response_mask.detach().cpu().clone(),
                        None if rollout_is_weights is None else rollout_is_weights.detach().cpu().clone(),
                        loss_agg_mode, dict(info) if info is not None else {}, sorted(extra))
        if log_prob.requires_grad:
            log_prob.register_hook(lambda g: setattr(call, "grad", g.detach().cpu().clone()))
        loss, metrics = fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode=loss_agg_mode,
                           config=config, rollout_is_weights=rollout_is_weights, **extra)
        call.loss, call.metrics = loss.detach().cpu().clone(), dict(metrics)
        if _SINKS:
            _SINKS[-1].append(call)
        return loss, metrics


def record_alias(name: str) -> str:
    """Register (once) the recording wrapper of objective ``name`` in verl's registry; return its loss_mode."""
    core_algos.get_policy_loss_fn(name)
    alias = RECORD_PREFIX + name
    current = core_algos.POLICY_LOSS_REGISTRY.get(alias)
    if not (isinstance(current, RecordingPolicyLoss) and current.name == name):
        core_algos.POLICY_LOSS_REGISTRY[alias] = RecordingPolicyLoss(name)
    return alias


def _recording_verl_loss(inner: Callable, *, model_output, data, dp_group=None):
    """Around the worker's ``ppo_loss``: tag the call the objective just recorded with the micro-batch's rows."""
    from verl.utils import tensordict_utils as tu

    n_before = len(_SINKS[-1]) if _SINKS else 0
    loss, metrics = inner(model_output=model_output, data=data, dp_group=dp_group)
    if _SINKS and len(_SINKS[-1]) > n_before:
        call = _SINKS[-1][-1]
        call.rows = data[ROW_KEY].detach().cpu().clone() if ROW_KEY in data.keys() else None
        call.batch_keys = sorted(str(k) for k in data.keys())
        call.uids = list(tu.get(data, "uid")) if "uid" in data.keys() else None
        call.total_loss = float(loss.detach())
    return loss, metrics


# --------------------------------------------------------------------------------------------------------------
# The actor
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CpuActor:
    """verl's actor worker on CPU (:func:`cpu_actor`) with what :func:`actor_step` needs to drive it."""

    worker: Any                    # verl.workers.engine_workers.ActorRolloutRefWorker, role "actor", initialised
    config: Any                    # the omegaconf actor_rollout_ref section it was built from
    loss_mode: str                 # the objective (what is recorded runs under RECORD_PREFIX + loss_mode)
    record: bool

    @property
    def actor_config(self) -> Any:
        """The ``ActorConfig`` verl's ``ppo_loss`` passes to the objective as ``config``."""
        loss_fn = self.worker.loss_fn
        return loss_fn.keywords["config"]


def _verl_trainer_config() -> Any:
    import verl
    from omegaconf import OmegaConf

    path = os.path.join(os.path.dirname(verl.__file__), "trainer", "config", "_generated_ppo_trainer.yaml")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, False)
    return cfg


def _set_cpu_engine(ar: Any, model_dir: str, mixed_precision: str) -> None:
    """The model and engine settings that run on CPU: FSDP2, eager attention, no torch.compile, no gradient
    checkpointing, the chosen mixed precision."""
    ar.model.path = os.path.abspath(model_dir)
    ar.model.override_config = {"attn_implementation": "eager"}
    ar.model.enable_gradient_checkpointing = False
    ar.actor.strategy = "fsdp2"
    ar.actor.use_torch_compile = False
    ar.actor.fsdp_config.use_torch_compile = False
    ar.actor.fsdp_config.mixed_precision = dict(MIXED_PRECISION[mixed_precision])


def _set_policy_loss(actor: Any, loss_mode: str, policy_loss_config: dict[str, Any] | None, record: bool) -> None:
    """``actor.policy_loss``: fiberlab's keys select :class:`~fiberlab.gpu.verl.FiberlabPolicyLossConfig` (as in a
    verl run); the loss mode is checked against verl's registry and, when ``record``, replaced by its recording
    alias (module docstring)."""
    pl = dict(policy_loss_config or {})
    if "loss_mode" in pl:
        raise ValueError("give the objective as loss_mode=..., not in policy_loss_config")
    own = {f.name for f in dataclasses.fields(fverl.FiberlabPolicyLossConfig)} - \
          {f.name for f in dataclasses.fields(PolicyLossConfig)}
    if own & set(pl):
        actor.policy_loss["_target_"] = f"{fverl.__name__}.FiberlabPolicyLossConfig"
    for k, v in pl.items():
        actor.policy_loss[k] = v
    core_algos.get_policy_loss_fn(loss_mode)              # an unknown objective fails here, listing the known
    actor.policy_loss.loss_mode = record_alias(loss_mode) if record else loss_mode


def cpu_actor(loss_mode: str, policy_loss_config: dict[str, Any] | None = None, *, model_dir: str,
              actor_overrides: dict[str, Any] | None = None, mixed_precision: str = "fp32", rollout_n: int = 4,
              ppo_mini_batch_size: int = 2, micro_batch_size: int = 4, ppo_epochs: int = 1, lr: float = 1e-3,
              use_dynamic_bsz: bool = False, max_token_len: int | None = None, record: bool = True,
              seed: int = 42) -> CpuActor:
    """verl 0.9.1's ``ActorRolloutRefWorker(role="actor")`` on CPU, ``init_model()`` done, for ``loss_mode``.

    The config is verl's trainer YAML with: ``actor.policy_loss.loss_mode=loss_mode`` (recorded, see the
    module docstring) and ``policy_loss_config`` (fiberlab's keys go in
    :class:`~fiberlab.gpu.verl.FiberlabPolicyLossConfig`, as in a verl run); ``rollout.n=rollout_n``;
    ``actor.ppo_mini_batch_size`` in prompts (verl multiplies by ``rollout.n``),
    ``actor.ppo_micro_batch_size_per_gpu`` and ``rollout.log_prob_micro_batch_size_per_gpu`` =
    ``micro_batch_size`` rows; ``actor.ppo_epochs``;
    ``actor.optim.lr``; ``use_dynamic_bsz`` with ``max_token_len`` tokens per micro-batch (actor and log-prob);
    FSDP2, eager attention, no torch.compile, no gradient checkpointing, ``mixed_precision`` ``"fp32"`` or
    ``"bf16"`` (verl's default); then ``actor_overrides``, a nested dict merged into ``actor_rollout_ref.actor``
    (e.g. ``{"loss_agg_mode": "seq-mean-token-sum", "clip_ratio_low": 0.1}``). ``seed`` seeds torch before
    the model is built. Calls :func:`setup_process` first.
    """
    from omegaconf import OmegaConf

    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {sorted(MIXED_PRECISION)}, got {mixed_precision!r}")
    if use_dynamic_bsz and max_token_len is None:
        raise ValueError("use_dynamic_bsz=True needs max_token_len (tokens per micro-batch)")
    setup_process()
    from verl.workers.engine_workers import ActorRolloutRefWorker

    full = _verl_trainer_config()
    ar = full.actor_rollout_ref
    _set_cpu_engine(ar, model_dir, mixed_precision)
    ar.rollout.n = rollout_n
    ar.rollout.log_prob_micro_batch_size_per_gpu = micro_batch_size
    ar.rollout.log_prob_use_dynamic_bsz = use_dynamic_bsz
    actor = ar.actor
    actor.ppo_mini_batch_size = ppo_mini_batch_size
    actor.ppo_micro_batch_size_per_gpu = micro_batch_size
    actor.ppo_epochs = ppo_epochs
    actor.use_dynamic_bsz = use_dynamic_bsz
    if max_token_len is not None:
        actor.ppo_max_token_len_per_gpu = max_token_len
        ar.rollout.log_prob_max_token_len_per_gpu = max_token_len
    actor.optim.lr = lr
    _set_policy_loss(actor, loss_mode, policy_loss_config, record)
    if actor_overrides:
        ar.actor = OmegaConf.merge(actor, OmegaConf.create(actor_overrides))
    if ar.actor.strategy != "fsdp2":
        raise ValueError(f"only strategy='fsdp2' runs on CPU (FSDP1 syncs module states from an accelerator), "
                         f"got {ar.actor.strategy!r}")

    torch.manual_seed(seed)
    worker = ActorRolloutRefWorker(config=ar, role="actor")
    worker.init_model()
    if record:
        worker.set_loss_fn(functools.partial(_recording_verl_loss, worker.loss_fn))
    return CpuActor(worker=worker, config=ar, loss_mode=loss_mode, record=record)


@dataclasses.dataclass
class StepResult:
    """What :func:`actor_step` returns."""

    metrics: dict[str, Any]                    # update_actor's metrics, renamed as RayPPOTrainer._update_actor does
    old_log_probs: torch.Tensor                # [B, R] from compute_log_prob (float32, as the trainer casts it)
    calls: list[LossCall]                      # one per micro-batch, in execution order (empty if not recording)
    mini_batch_size: int                       # rows per mini-batch
    epochs: int
    error: Optional[str] = None                # set when update_actor raised (type: message)

    def mini_batches(self) -> list[list[LossCall]]:
        """The calls grouped by mini-batch: consecutive calls until they hold ``mini_batch_size`` rows."""
        groups, current, n = [], [], 0
        for call in self.calls:
            current.append(call)
            n += call.log_prob.shape[0]
            if n == self.mini_batch_size:
                groups.append(current)
                current, n = [], 0
            elif n > self.mini_batch_size:
                raise RuntimeError(f"micro-batches overrun a mini-batch of {self.mini_batch_size} rows")
        if current:
            raise RuntimeError(f"the last {n} recorded rows do not fill a mini-batch of {self.mini_batch_size}")
        return groups


def actor_step(actor: CpuActor, batch: Any, *, update_meta: dict[str, Any] | None = None,
               raise_errors: bool = True) -> StepResult:
    """One actor update as ``RayPPOTrainer`` does it: ``compute_log_prob`` then ``update_actor``.

    ``batch`` is a ``DataProto`` (:func:`make_batch`); when it has no ``old_log_probs`` they are computed with
    ``compute_log_prob`` (entropy on, as ``_compute_old_log_prob``) and stored in it as float32. The update gets
    the trainer's non-tensor settings (``global_batch_size`` = ``mini_batch_size`` = ``ppo_mini_batch_size ×
    rollout.n``, ``epochs``, ``seed``, ``shuffle``, ``calculate_entropy``, ``compute_loss``), then
    ``update_meta`` (e.g. ``{"force_group_size": 4}``, read by ``prepare_micro_batches``). A
    :data:`ROW_KEY` column (the row index) is added to the update's ``TensorDict``. With ``raise_errors=False`` an
    exception of ``update_actor`` is returned in ``StepResult.error`` with the calls made before it.
    """
    from verl.utils import tensordict_utils as tu
    from verl.utils.py_functional import rename_dict
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

    cfg = actor.config
    worker = actor.worker
    batch.meta_info.setdefault("temperature", float(cfg.rollout.temperature))
    if "old_log_probs" not in batch.batch.keys():
        batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
        td = left_right_2_no_padding(batch.to_tensordict())
        tu.assign_non_tensor(td, calculate_entropy=True, calculate_sum_pi_squared=False, compute_loss=False)
        out = worker.compute_log_prob(td)
        batch.batch["old_log_probs"] = no_padding_2_padding(tu.get(out, "log_probs"), td).float()
        batch.meta_info.pop("global_token_num")
    rows = batch.batch["old_log_probs"].shape[0]
    td = left_right_2_no_padding(batch.to_tensordict())
    td[ROW_KEY] = torch.arange(rows)
    mini = int(cfg.actor.ppo_mini_batch_size) * int(cfg.rollout.n)
    epochs = int(cfg.actor.ppo_epochs)
    tu.assign_non_tensor(td, calculate_entropy=bool(cfg.actor.calculate_entropy or cfg.actor.entropy_coeff != 0),
                         distillation_use_topk=False, distillation_only=False, global_batch_size=mini,
                         mini_batch_size=mini, epochs=epochs, seed=int(cfg.actor.data_loader_seed),
                         dataloader_kwargs={"shuffle": bool(cfg.actor.shuffle)}, compute_loss=True)
    if update_meta:
        tu.assign_non_tensor(td, **update_meta)
    calls: list[LossCall] = []
    _SINKS.append(calls)
    error = None
    try:
        out = worker.update_actor(td)
        metrics = rename_dict(tu.get(out, "metrics"), "actor/")
        metrics["perf/mfu/actor"] = metrics.pop("actor/mfu", None)
    except Exception as exc:                       # noqa: BLE001  (returned to the caller when asked)
        if raise_errors:
            raise
        error, metrics = f"{type(exc).__name__}: {exc}", {}
    finally:
        _SINKS.pop()
    return StepResult(metrics=metrics, old_log_probs=batch.batch["old_log_probs"].clone(), calls=calls,
                      mini_batch_size=mini, epochs=epochs, error=error)


def parameters_finite(actor: CpuActor) -> bool:
    """Whether every parameter of the actor's model (FSDP2 ``DTensor`` shards, gathered) is finite."""
    from torch.distributed.tensor import DTensor

    for p in actor.worker.actor.engine.module.parameters():
        t = p.full_tensor() if isinstance(p, DTensor) else p
        if not bool(torch.isfinite(t).all()):
            return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Replaying a mini-batch in one call
# --------------------------------------------------------------------------------------------------------------

def _without_global_info(config: Any) -> Any:
    """A shallow copy of verl's ``ActorConfig`` with an empty ``global_batch_info``: the objective then aggregates
    over what it is given, as it does when called on a whole mini-batch outside verl (an ``ActorConfig`` still,
    which verl's own losses assert)."""
    clone = copy.copy(config)
    object.__setattr__(clone, "global_batch_info", {})
    return clone


@dataclasses.dataclass
class MiniBatchReplay:
    """One mini-batch: verl's micro-batched loss and gradient beside one direct call on the whole mini-batch."""

    rows: torch.Tensor              # the batch rows, ascending (the direct call's row order)
    row_order: list[list[int]]      # the rows of each micro-batch, in verl's order
    verl_loss: float                # Σ over micro-batches of the objective's loss (float64 sum)
    direct_loss: float
    verl_grad: torch.Tensor         # ∂/∂log_prob, micro-batch gradients put back in row order
    direct_grad: torch.Tensor
    log_prob: torch.Tensor          # the log-probabilities verl's model produced, row order
    old_log_prob: torch.Tensor
    response_mask: torch.Tensor
    direct_metrics: dict[str, Any]
    verl_metrics: list[dict[str, Any]]
    global_batch_info: list[dict[str, Any]]


def _cat_padded(tensors: list[torch.Tensor], value: float = 0) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in tensors])


def replay(step: StepResult, actor: CpuActor, *, loss_mode: str | None = None) -> list[MiniBatchReplay]:
    """For every mini-batch of ``step``: the objective called once on the whole mini-batch, rows in batch order,
    with the log-probabilities verl's model produced, its config without ``global_batch_info``; beside verl's
    sum of micro-batch losses and its per-micro-batch gradients. ``loss_mode`` defaults to the actor's.

    With ``shuffle`` off (verl's default) a mini-batch is a range of consecutive rows, so for LPO with
    ``lpo_group_size`` the direct call sees the true groups; with ``actor.shuffle=True`` the rows of a group land
    in different mini-batches and neither side sees the true groups."""
    name = loss_mode or actor.loss_mode
    fn = core_algos.get_policy_loss_fn(name)
    config = _without_global_info(actor.actor_config)
    out = []
    for calls in step.mini_batches():
        if any(c.rows is None for c in calls):
            raise RuntimeError("replay needs the rows of every micro-batch (record=True)")
        rows = torch.cat([c.rows for c in calls])
        order = torch.argsort(rows)
        pick = lambda ts: _cat_padded(ts)[order]  # noqa: E731
        old = pick([c.old_log_prob for c in calls])
        lp = pick([c.log_prob for c in calls]).requires_grad_()
        adv = pick([c.advantages for c in calls])
        mask = pick([c.response_mask for c in calls])
        weights = None if calls[0].rollout_is_weights is None else pick([c.rollout_is_weights for c in calls])
        modes = {c.loss_agg_mode for c in calls}
        if len(modes) != 1:
            raise RuntimeError(f"micro-batches of one mini-batch saw different loss_agg_mode: {modes}")
        loss, metrics = fn(old, lp, adv, mask, loss_agg_mode=modes.pop(), config=config, rollout_is_weights=weights)
        (grad,) = torch.autograd.grad(loss, lp)
        verl_grad = pick([c.grad if c.grad is not None else torch.full_like(c.log_prob, float("nan"))
                          for c in calls])
        out.append(MiniBatchReplay(
            rows=rows[order], row_order=[c.rows.tolist() for c in calls],
            verl_loss=float(torch.stack([c.loss.double() for c in calls]).sum()), direct_loss=float(loss.detach()),
            verl_grad=verl_grad, direct_grad=grad.detach(), log_prob=lp.detach(), old_log_prob=old, response_mask=mask,
            direct_metrics=dict(metrics),
            verl_metrics=[c.metrics for c in calls], global_batch_info=[c.global_batch_info for c in calls]))
    return out


# --------------------------------------------------------------------------------------------------------------
# A process of its own
# --------------------------------------------------------------------------------------------------------------

def _child(fn: Callable, args: tuple, kwargs: dict, path: str) -> None:
    try:
        result = ("ok", fn(*args, **kwargs))
    except BaseException:                      # noqa: BLE001  (sent to the parent, which raises)
        result = ("error", traceback.format_exc())
    torch.save(result, path)


def run_isolated(fn: Callable, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh spawned process; its result (saved with ``torch.save``) is returned.

    For everything that makes a process a verl worker (:func:`setup_process`): the caller's process keeps no
    process group, platform or environment change. ``fn`` must be importable by name (a module-level
    function). An exception in the child is raised here as ``RuntimeError`` with the child's traceback.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "result.pt")
        proc = ctx.Process(target=_child, args=(fn, args, kwargs, path))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise RuntimeError(f"{getattr(fn, '__name__', fn)} did not finish within {timeout} s")
        if not os.path.exists(path):
            raise RuntimeError(f"{getattr(fn, '__name__', fn)} exited with code {proc.exitcode} and no result")
        status, value = torch.load(path, weights_only=False)
    if status == "error":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed in its process:\n{value}")
    return value


# --------------------------------------------------------------------------------------------------------------
# One check of a verl config (`fiberlab verl-check`)
# --------------------------------------------------------------------------------------------------------------

#: The micro-batched loss is the mini-batch's sum split into partial sums over the same global counts: float32
#: round-off only, 8 ulps of 1 relative to 1 + |loss| (the summands are O(1); observed ≤ 1e-7).
CHECK_LOSS_TOL = 8 * torch.finfo(torch.float32).eps


def check(loss_mode: str, policy_loss: dict[str, Any] | None = None, *, loss_agg_mode: str = "token-mean",
          mixed_precision: str = "fp32", rollout_n: int = 4, num_prompts: int = 4, epochs: int = 2,
          lr: float = 1e-2, clip_ratio: float = 0.1, max_token_len: int | None = None, seed: int = 1) -> dict:
    """One real verl actor step for ``loss_mode`` with ``policy_loss`` settings, on a random tiny Qwen2, and the
    comparison of every mini-batch's micro-batched loss with one direct call (:func:`replay`).

    ``num_prompts`` × ``rollout_n`` responses, 2 mini-batches × ``epochs`` epochs, micro-batches of ``rollout_n``
    rows (or verl's dynamic batching at ``max_token_len`` tokens), AdamW at ``lr``, verl's clip range
    ``clip_ratio`` (so that mini-batches after the first are off-policy and clip). Returns plain data: ``error``
    (verl's or the objective's refusal, one line) or, per mini-batch, verl's and the direct loss, whether they
    match within :data:`CHECK_LOSS_TOL`, whether every gradient was finite, and verl's metrics (``actor/*``).
    Run it in a process of its own (:func:`run_isolated`): it makes the process a verl worker.
    """
    out: dict[str, Any] = {"loss_mode": loss_mode, "error": None, "mini_batches": [], "metrics": {}}
    with tempfile.TemporaryDirectory() as model_dir:
        make_tiny_model(model_dir)
        try:
            actor = cpu_actor(loss_mode, policy_loss or {}, model_dir=model_dir, rollout_n=rollout_n,
                              ppo_mini_batch_size=max(1, num_prompts // 2), micro_batch_size=rollout_n,
                              ppo_epochs=epochs, lr=lr, mixed_precision=mixed_precision,
                              use_dynamic_bsz=max_token_len is not None, max_token_len=max_token_len,
                              actor_overrides={"loss_agg_mode": loss_agg_mode, "clip_ratio_low": clip_ratio,
                                               "clip_ratio_high": clip_ratio})
        except Exception as exc:                   # noqa: BLE001  (a refused config is the check's answer)
            cause = exc
            while cause.__cause__ is not None:      # hydra wraps the config's own ValueError
                cause = cause.__cause__
            out["error"] = " ".join(f"{type(cause).__name__}: {cause}".split())
            return out
        step = actor_step(actor, make_batch(num_prompts=num_prompts, rollout_n=rollout_n, seed=seed),
                          raise_errors=False)
        if step.error is not None:
            out["error"] = " ".join(step.error.split())
            return out
        out["metrics"] = {k: v for k, v in step.metrics.items() if k.startswith("actor/")}
        out["params_finite"] = parameters_finite(actor)
        for r in replay(step, actor):
            out["mini_batches"].append({
                "verl_loss": r.verl_loss, "direct_loss": r.direct_loss,
                "match": abs(r.verl_loss - r.direct_loss) <= CHECK_LOSS_TOL * (1 + abs(r.direct_loss)),
                "grad_finite": bool(torch.isfinite(r.verl_grad).all()),
                "micro_batches": len(r.row_order), "log_prob_dtype": str(r.log_prob.dtype)})
    return out
