"""FiberPO's Fig. 4 (token efficiency under a parameterised drift, §5.3) and ratio decoupling in FiberPO-Domain
(§6, App. E.7): declared here with their numerics and gpu checks.

Fig. 4 (spec ``spec/fiberpo.md`` §4.1, A15): one trajectory of ``T = 10`` tokens moves along
``r_i(t) = 1 + t Δ̂_i`` with ``sign(Δ̂_i) = sign(Â_i)``; FiberPO with ``ε = 0.04``, ``C⁺ = 0.12``, ``C⁻ = 0.05`` and
the rollback slope ``k = 32`` of ``g_agg`` decoupled from ``T`` "for illustration"; GRPO with "the same ε-clip".
The paper gives ``Δ̂`` only for tokens 5 (−0.118) and 7 (+0.231). Readings (most plausible, stated once here):

* the other eight ``Δ̂_i`` are ``expm1`` of the spec's read-off of panel (b) (``log r_i`` at ``t = 1``); the
  read-off agrees with the two given tokens to 0.003 in ``log r``, and every statement is re-checked on 100
  draws with each read-off moved by up to ±0.005 and the advantage magnitudes drawn in [0.5, 1.5];
* advantages ``Â_i = sign(Δ̂_i)`` (the caption fixes only the sign);
* GRPO's ε-clip is Remark C.5's ``clip(r, 1 ± ε)`` without the min (on ``t > 0`` the min changes nothing: ``r_i - 1``
  has the sign of ``Â_i``, so the min picks the clipped term exactly when the clip is active);
* a token keeps its *own-ratio gradient* when Eq. 20's local term (a) is on, ``|u_i| ≤ ε`` (FiberPO), or when its
  ratio is inside the clip band, ``|r_i - 1| ≤ ε`` (GRPO);
* the objective is Eq. 6 with ``|Tj| = 1``: ``Ĵ(t) = (1/T) Σ_i 𝒢_i Â_i``; the "no-reweighting baseline" of the
  text is the objective with ``w^base = 1``, ``(1/T) Σ_i r̃_i Â_i`` (the paper: "G-III, w^base = 1"), and
  ``Ĵ(θ_old) = (1/T) Σ_i Â_i`` is reported beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from fiberlab.gpu import fiberpo as GF
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.numerics import fiberpo as ref_fiberpo
from fiberlab.registry import Evidence, claim

#: Two float64 routes through the same handful of exp/log/clip operations on O(1) numbers: a few ulp; 1e-12 leaves
#: three orders of margin (relative to max(1, |value|)).
EXACT_TOL = 1e-12
#: verl's seq-mean-token-mean divides each row by T_τ + 1e-8: relative 1e-8/T_τ ≤ 1e-9 on the loss value.
LOSS_TOL = 1e-8
SEED = 20260309

# ---------------------------------------------------------------------------------------------------------------
# Fig. 4's setting
# ---------------------------------------------------------------------------------------------------------------

FIG4 = {"T": 10, "k": 32.0, "eps": 0.04, "C_pos": 0.12, "C_neg": 0.05}
#: spec §4.1: approximate read-off of panel (b), raw log r_i at t = 1, tokens 0…9.
FIG4_READOFF = (0.03, 0.07, -0.01, -0.11, -0.035, -0.125, 0.04, 0.21, -0.045, -0.065)
#: the two tokens the paper states (FiberPO Fig. 4 caption / text).
FIG4_GIVEN = {5: -0.118, 7: 0.231}
#: the drift path: 1 + tΔ̂_i > 0 needs t ∈ (-1/0.231, 1/0.118) = (-4.33, 8.47); grid step 1e-3 (transition times
#: are located to one step, and the events compared are ≥ 0.9 apart).
T_STEP = 1e-3
T_LO, T_HI = -4.3, 8.4
#: read-off uncertainty used for the robustness draws (half the read-off's 0.01 resolution) and advantage spread.
READOFF_JITTER = 0.005
N_DRAWS = 100


def fig4_grid() -> np.ndarray:
    return np.round(np.arange(round(T_LO / T_STEP), round(T_HI / T_STEP) + 1) * T_STEP, 6)


def fig4_delta_hat(readoff=FIG4_READOFF) -> np.ndarray:
    """Δ̂ of Fig. 4: ``expm1`` of the read-off ``log r_i(1)``, tokens 5 and 7 as the paper gives them."""
    d = np.expm1(np.asarray(readoff, dtype=float))
    for i, v in FIG4_GIVEN.items():
        d[i] = v
    return d


def fig4_curves(delta_hat=None, adv=None, ts=None, k=FIG4["k"]) -> dict[str, np.ndarray]:
    """float64 reference of every curve of Fig. 4 along ``r_i = 1 + tΔ̂_i`` (one row per ``t``)."""
    d = fig4_delta_hat() if delta_hat is None else np.asarray(delta_hat, dtype=float)
    A = np.sign(d) if adv is None else np.asarray(adv, dtype=float)
    ts = fig4_grid() if ts is None else np.asarray(ts, dtype=float)
    T, eps, Cp, Cn = d.size, FIG4["eps"], FIG4["C_pos"], FIG4["C_neg"]
    lr, ids = ref_fiberpo.parameterised_drift(ts, d)
    p = ref_fiberpo.fiberpo_parts(lr, ids, eps, Cp, Cn)
    log_G = ref_fiberpo.fiberpo_log_gated_ratio_slope(lr, ids, eps, Cp, Cn, k).reshape(-1, T)
    r = np.exp(lr).reshape(-1, T)
    sp, sn = p.log_s_pos.reshape(-1, T)[:, 0], p.log_s_neg.reshape(-1, T)[:, 0]
    return {"t": ts, "A": A, "log_r": lr.reshape(-1, T), "log_G": log_G,
            "J": (np.exp(log_G) * A).mean(1),                                    # Eq. 6, |Tj| = 1
            "J_w1": (np.exp(p.log_r_fiber.reshape(-1, T)) * A).mean(1),          # w^base = 1
            "J_grpo": (np.clip(r, 1 - eps, 1 + eps) * A).mean(1),                # Remark C.5
            "log_s_pos": sp, "log_s_neg": sn,
            "log_w": ref_fiberpo.g_agg(sp, Cp, k) - ref_fiberpo.g_agg(sn, Cn, k),
            "u": p.u.reshape(-1, T),
            "keep_fiberpo": np.abs(p.u.reshape(-1, T)) <= eps,                   # Eq. 20 term (a) on
            "keep_grpo": np.abs(r - 1) <= eps,
            "regime": ref_fiberpo.global_regime(sp, sn, Cp, Cn, k)}


def _fmt(x) -> str:
    return "never" if x is None else f"{x:.3f}"


def _first(ts, mask):
    """First ``t`` (in the order of ``ts``) where ``mask`` holds, else None."""
    i = np.flatnonzero(mask)
    return float(ts[i[0]]) if i.size else None


def fig4_features(c: dict[str, np.ndarray], k: float = FIG4["k"]) -> dict:
    """The events and shape of Fig. 4 on each side of ``t = 0`` (``+``: the typical update, Δ̂ with Â)."""
    Cp, Cn = FIG4["C_pos"], FIG4["C_neg"]
    out = {}
    for side, sgn in (("+", 1), ("-", -1)):
        sel = np.flatnonzero(c["t"] * sgn >= 0)[::sgn]                 # from t = 0 outwards
        t = c["t"][sel]
        kf, kg = c["keep_fiberpo"][sel], c["keep_grpo"][sel]
        J = c["J"][sel]
        sp, sn = c["log_s_pos"][sel], c["log_s_neg"][sel]
        f = {"eps_first": _first(t, ~kf.all(1)),                       # L-I → L-II (the first token clips)
             "eps_tokens": [_first(t, ~kf[:, i]) for i in range(kf.shape[1])],
             "grpo_first": _first(t, ~kg.all(1)),
             "grpo_tokens": [_first(t, ~kg[:, i]) for i in range(kg.shape[1])],
             "onset_neg": _first(t, sn > Cn), "onset_pos": _first(t, sp > Cp),
             "zero_neg": _first(t, sn >= (1 + 1 / k) * Cn), "zero_pos": _first(t, sp >= (1 + 1 / k) * Cp),
             "J0": float(J[0]), "J_end": float(J[-1]), "t_end": float(t[-1])}
        dJ = np.diff(J)
        i1 = int(np.argmax(dJ < 0)) if (dJ < 0).any() else len(J) - 1    # first local maximum
        f["t_first_max"], f["J_first_max"] = float(t[i1]), float(J[i1])
        ig = int(np.argmax(J))
        f["t_max"], f["J_max"] = float(t[ig]), float(J[ig])
        f["regime_first_max"] = ref_fiberpo.GLOBAL_REGIMES[int(c["regime"][sel][i1])]
        il = int(np.argmax(np.abs(c["log_w"][sel])))
        f["t_logw_max"], f["logw_max"], f["J_at_logw_max"] = float(t[il]), float(np.abs(c["log_w"][sel][il])), float(J[il])
        f["logw_at_first_max"] = float(abs(c["log_w"][sel][i1]))
        g3 = c["regime"][sel] == 4
        f["g3_from"] = _first(t, g3)
        f["g3_w1_err"] = float(np.max(np.abs(J - c["J_w1"][sel])[g3])) if g3.any() else np.inf
        f["g3_gap_to_J0"] = float(np.max(np.abs(J[g3] - J[0]))) if g3.any() else 0.0
        frac_f, frac_g = kf.mean(1), kg.mean(1)
        f["fewer_kept"] = float(np.max(frac_g - frac_f))               # > 0 where FiberPO keeps fewer
        only_grpo = kg & ~kf
        f["superset_violations"] = int(only_grpo.any(1).sum())
        if only_grpo.any():
            a, i = np.argwhere(only_grpo)[0]
            f["superset_example"] = {"token": int(i), "t": float(t[a]), "delta_hat_sign": int(np.sign(c["log_r"][sel][a, i])),
                                     "fiberpo_clips_from": f["eps_tokens"][i], "grpo_clips_from": f["grpo_tokens"][i]}
        drift = np.maximum(sp, sn) > FIG4["eps"]
        f["grpo_keep_when_drift"] = float(np.max(frac_g[drift])) if drift.any() else np.nan
        f["fiberpo_keep_when_drift_first"] = float(frac_f[drift][0]) if drift.any() else np.nan
        f["frac_f"], f["frac_g"], f["t"] = frac_f, frac_g, t
        out[side] = f
    return out


def _draws():
    """Base reconstruction, then N_DRAWS read-off / advantage-magnitude perturbations."""
    rng = np.random.default_rng(SEED)
    base = fig4_delta_hat()
    yield base, np.sign(base)
    for _ in range(N_DRAWS):
        d = fig4_delta_hat(np.asarray(FIG4_READOFF) + rng.uniform(-READOFF_JITTER, READOFF_JITTER, 10))
        yield d, np.sign(d) * rng.uniform(0.5, 1.5, 10)


# ---------------------------------------------------------------------------------------------------------------
# declarations
# ---------------------------------------------------------------------------------------------------------------

token_efficiency = claim(
    "fiberpo.token_efficiency", paper="FiberPO", source="FiberPO Fig. 4 and §5.3 (with §5.2's token-efficiency text)",
    status="conditional",
    statement="Along r_i = 1 + tΔ̂_i (T = 10, k = 32, ε = 0.04, C+ = 0.12, C- = 0.05): the ε-clip transition "
              "(L-I → L-II) comes before the C- and C+ rollback onsets; the total objective rises, peaks and returns "
              "to the no-reweighting baseline (non-monotone); FiberPO keeps a token's own-ratio gradient for at least "
              "as many tokens as GRPO's ε-clip as t grows.",
    condition="What the computation shows (the eight Δ̂ other than tokens 5, 7 read off the plot, Â = sign Δ̂): the "
              "three statements hold, also on 100 perturbed read-offs with random advantage magnitudes. The first "
              "token clips long before either onset (t ≈ 0.21 vs 1.27 and 4.1), but 5 of the 9 tokens that ever clip "
              "do so after the C- onset. Not as the text says: (1) the objective's first peak (t ≈ 1.26) sits at the "
              "C- rollback onset, where |log w^base| ≈ 0.007, not where |log w^base| is largest (C+ onset, t ≈ 4.1, "
              "|log w| = 0.12): there the objective is lower (this trajectory's Σ r̃Â < 0), and which peak is "
              "highest depends on the unpublished advantage magnitudes; (2) the baseline reached in G-III is the "
              "w^base = 1 objective (1/T)Σ r̃_iÂ_i, not Ĵ(θ_old) = (1/T)ΣÂ_i: the saturated fiber factors lean "
              "toward the advantage (r̃ ∈ [1, e^{2ε}] for Â > 0) and keep it 0.04–0.07 above; (3) FiberPO keeps "
              "more tokens in number but not a superset of GRPO's: a token that barely moves (token 2, Δ̂ ≈ -0.01) "
              "deviates from its channel's mean and loses its own-ratio gradient at t ≈ 1.35, GRPO's clip reaches "
              "it only at t ≈ 4.0.")

domain_decoupling = claim(
    "fiberpo_domain.decoupling", paper="FiberPO", source="FiberPO §6.1–6.2 (Def. 6.4, Eqs. 31–33), App. E.7",
    statement="With every level of FiberPO-Domain in pass-through, each level's factor of log w^Base is its "
              "sign-channel mean minus its parent's — log s_τ - log s_g (trajectory vs its group's trajectory-mean), "
              "log s_g - log s_D (group vs domain mean), log s_D — so a drift shared by all members of a parent "
              "cancels from the children's factors; with unclipped fiber residuals 𝒢_i = r_i and no token is "
              "coupled to another trajectory.")


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.token_efficiency
# ---------------------------------------------------------------------------------------------------------------


@token_efficiency.check("numerics", name="fig4_eps_clip_before_rollback")
def _fig4_order() -> Evidence:
    """First ε-clip transition vs the rollback onsets, each side of t = 0, base and 100 perturbed draws.
    max_error = the largest ratio t_ε / t_onset (both measured from t = 0): the claim is ratio < 1."""
    worst, at = 0.0, (0.0, 1.0)                  # largest t_ε/t_onset and its (|t_ε|, |t_onset|)
    base = None
    n = 0
    for d, A in _draws():
        f = fig4_features(fig4_curves(d, A))
        for side in "+-":
            s = f[side]
            onsets = [abs(x) for x in (s["onset_neg"], s["onset_pos"]) if x is not None]
            if s["eps_first"] is None or not onsets:
                return Evidence(False, np.inf, 1.0, n, detail=f"side {side}: a transition never happens: {s}")
            if abs(s["eps_first"]) / min(onsets) > worst:
                worst, at = abs(s["eps_first"]) / min(onsets), (abs(s["eps_first"]), min(onsets))
            n += 1
        base = base or f
    p, m = base["+"], base["-"]
    before = sum(x is not None and x < p["onset_neg"] for x in p["eps_tokens"])
    d = fig4_delta_hat()
    readoff_err = max(abs(np.log1p(d[i]) - FIG4_READOFF[i]) for i in FIG4_GIVEN)
    ev = Evidence.worst_of({"first ε-clip t_ε before the rollback onset (t_ε ≤ t_onset)": at,
                            "read-off of Δ̂ at tokens 5, 7": (readoff_err, 0.005)}, n,
                           detail=f"t > 0: first ε-clip (token {p['eps_tokens'].index(p['eps_first'])}) at t = "
                           f"{p['eps_first']:.3f}, C- rollback onset {p['onset_neg']:.3f} (zeroed {p['zero_neg']:.3f}), "
                           f"C+ onset {p['onset_pos']:.3f}; {before} of the 9 tokens that ever clip do so before the C- "
                           f"onset (token 0 never); GRPO's first clip t = {p['grpo_first']:.3f}. t < 0: first ε-clip "
                           f"{m['eps_first']:.3f}, onsets C- {m['onset_neg']:.3f}, C+ {m['onset_pos']:.3f}. Largest "
                           f"t_ε/t_onset over base + {N_DRAWS} draws (read-off ±{READOFF_JITTER}, |Â| ∈ [0.5, 1.5]): "
                           f"{worst:.3f} < 1. Read-off vs the given tokens 5, 7: |log(1+Δ̂) - read-off| ≤ {readoff_err:.4f}")
    ev.passed = ev.passed and worst < 1.0                # strictly before: the clip leads the onset
    return ev


@token_efficiency.check("numerics", name="fig4_objective_non_monotone")
def _fig4_shape() -> Evidence:
    """Ĵ(t) on t > 0: rises from Ĵ(θ_old), has an interior peak above its end value, equals the w^base = 1 objective
    exactly in G-III (max_error), which differs from Ĵ(θ_old); base reconstruction: where the peak and |log w| max lie."""
    err = 0.0
    shape_ok = True
    min_drop = np.inf
    gaps = []
    n = 0
    base = None
    for d, A in _draws():
        c = fig4_curves(d, A)
        s = fig4_features(c)["+"]
        rises = s["J_first_max"] > s["J0"] and s["t_first_max"] > 0
        drop = s["J_max"] - s["J_end"]
        shape_ok &= bool(rises and drop > 1e-3 and s["g3_from"] is not None)
        min_drop = min(min_drop, drop)
        err = max(err, s["g3_w1_err"])
        gaps.append(s["g3_gap_to_J0"])
        n += 1
        base = base or s
    b = base
    # base reconstruction: the first peak is at the C- rollback onset (to two grid steps), not at the |log w| maximum
    at_onset = abs(b["t_first_max"] - b["onset_neg"]) <= 2 * T_STEP
    not_at_logw = b["J_at_logw_max"] < b["J_first_max"] and b["logw_at_first_max"] < 0.1 * b["logw_max"]
    ok = shape_ok and err <= EXACT_TOL and min(gaps) > 0.01 and at_onset and not_at_logw
    return Evidence(passed=ok, max_error=err, tolerance=EXACT_TOL, cases=n,
                    detail=f"base: Ĵ(0) = {b['J0']:.4f} rises to a first peak {b['J_first_max']:.4f} at t = "
                           f"{b['t_first_max']:.3f} ({b['regime_first_max']}, C- onset {b['onset_neg']:.3f}, |log w| = "
                           f"{b['logw_at_first_max']:.4f}); at the |log w| maximum ({b['logw_max']:.3f}, t = "
                           f"{b['t_logw_max']:.3f}) Ĵ = {b['J_at_logw_max']:.4f}; G-III from t = {b['g3_from']:.3f}, Ĵ = "
                           f"w^base=1 objective within {err:.1e}, end Ĵ({b['t_end']:.1f}) = {b['J_end']:.4f} vs Ĵ(θ_old) "
                           f"{b['J0']:.4f}. {n} draws: rises then falls by ≥ {min_drop:.4f} after its peak; G-III gap to "
                           f"Ĵ(θ_old) {min(gaps):.3f}–{max(gaps):.3f} (baseline = w^base = 1, not Ĵ(θ_old))")


@token_efficiency.check("numerics", name="fig4_own_ratio_gradient_fraction")
def _fig4_fraction() -> Evidence:
    """Fraction of tokens with Eq. 20's term (a) on (|u_i| ≤ ε) vs GRPO's unclipped (|r_i - 1| ≤ ε), every t on
    both sides, base + draws; max_error = the largest excess of GRPO's fraction over FiberPO's (claim: ≤ 0).
    Also: the kept sets are not nested (counterexample), and GRPO keeps ≤ half the tokens once max log s± > ε."""
    worst = 0.0
    n = 0
    half = 0.0
    viol = []
    base = None
    for d, A in _draws():
        f = fig4_features(fig4_curves(d, A))
        for side in "+-":
            worst = max(worst, f[side]["fewer_kept"])
            half = max(half, f[side]["grpo_keep_when_drift"])
            viol.append(f[side]["superset_violations"])
            n += f[side]["t"].size
        base = base or f
    p = base["+"]
    ex = p.get("superset_example")
    ok = worst <= 0.0 and half <= 0.5 and min(viol) > 0 and ex is not None
    pick = {tt: (float(p["frac_f"][np.argmin(abs(p["t"] - tt))]), float(p["frac_g"][np.argmin(abs(p["t"] - tt))]))
            for tt in (0.5, 1.0, 2.0, 4.0)}
    return Evidence(passed=ok, max_error=max(worst, 0.0), tolerance=0.0, cases=n,
                    detail=f"{n} (draw, t) points: FiberPO's kept fraction ≥ GRPO's everywhere (largest excess of GRPO "
                           f"{worst:.2f}); base t > 0 (FiberPO, GRPO): " +
                           ", ".join(f"t={tt}: {a:.1f}/{b_:.1f}" for tt, (a, b_) in pick.items()) +
                           f"; once max log s± > ε GRPO keeps ≤ {half:.1f} of the tokens. Not nested: token "
                           f"{ex['token']} clipped by FiberPO from t = {ex['fiberpo_clips_from']:.3f}, by GRPO only from "
                           f"{ex['grpo_clips_from']:.3f} (every draw has such points, fewest {min(viol)})",
                    counterexample=ex)


def _gpu_fig4(k: float = FIG4["k"]):
    """Fig. 4 through the PyTorch objective (float64, CPU): one row per t. The registered gate has k = T_τ; the
    figure's k = 32 replaces log w^base by the gpu g_agg at slope 32 (the fiber part is the gate's own)."""
    d, ts = fig4_delta_hat(), fig4_grid()
    A = np.sign(d)
    eps, Cp, Cn = FIG4["eps"], FIG4["C_pos"], FIG4["C_neg"]
    lr_np, _ = ref_fiberpo.parameterised_drift(ts, d)
    lr = torch.from_numpy(lr_np.reshape(ts.size, d.size).copy()).requires_grad_(True)
    mask = torch.ones_like(lr)
    out = GF.fiberpo_gated_ratio(lr, mask, eps, Cp, Cn)
    log_G = (torch.log(out["G"]) - out["log_w"][:, None]
             + (GF.g_agg(out["ls_pos"], Cp, torch.tensor(k, dtype=lr.dtype))
                - GF.g_agg(out["ls_neg"], Cn, torch.tensor(k, dtype=lr.dtype)))[:, None])
    # Jacobian rows by autograd (rows are independent trajectories): jac[b, i, j] = ∂ log 𝒢_bi / ∂ log r_bj
    jac = torch.stack([torch.autograd.grad(log_G[:, i].sum(), lr, retain_graph=True)[0] for i in range(d.size)], 1)
    # Eq. 20's term (a) alone: ∂_i log 𝒢_i - ∂_j log 𝒢_i for another token j of the same sign (term (b) cancels)
    pos = (lr >= 0).detach().numpy()
    J_np = jac.detach().numpy()
    own = np.empty(pos.shape)
    for i in range(d.size):
        same = (pos == pos[:, [i]])
        same[:, i] = False
        j = np.argmax(same, 1)
        own[:, i] = J_np[:, i, i] - J_np[np.arange(ts.size), i, j]
    G = torch.exp(log_G).detach().numpy()
    # GRPO (Remark C.5): kept ⇔ the registered loss has a nonzero gradient in that token
    lp = lr.detach().clone().requires_grad_(True)
    adv = torch.from_numpy(np.broadcast_to(A, lp.shape).copy())
    # log_prob - old_log_prob = log r exactly; the gradient flows through log_prob
    shift = torch.clamp(lp.detach(), min=0.0)                 # log_prob = log r - max(log r, 0) ≤ 0
    loss, _ = get_policy_loss("grpo_rgf")(-shift, lp - shift, adv, mask, "seq-mean-token-mean",
                                          {"clip_ratio": eps, "rgf_min": False})
    (g_grpo,) = torch.autograd.grad(loss, lp)
    return {"t": ts, "A": A, "G": G, "own": own, "keep_grpo_grad": (g_grpo != 0).numpy(), "loss_grpo": float(loss.detach()),
            "lr": lr_np.reshape(ts.size, d.size), "out": out}


@token_efficiency.check("gpu", name="fig4_through_the_torch_objective")
def _fig4_gpu() -> Evidence:
    """The PyTorch gate (k = 32 via the gpu g_agg) = the reference on the whole grid; Eq. 20's term (a) recovered by
    autograd = the |u| ≤ ε indicator; GRPO's autograd gradient vanishes exactly where |r - 1| > ε; the registered
    losses reproduce the mean objectives; the features of Fig. 4 computed from the torch arrays equal the reference's."""
    g = _gpu_fig4()
    c = fig4_curves()
    err_G = float(np.max(np.abs(g["G"] / np.exp(c["log_G"]) - 1)))
    own = g["own"]
    err_own = float(np.max(np.abs(own - c["keep_fiberpo"])))          # term (a) is exactly 1 or 0
    grpo_match = bool(np.array_equal(g["keep_grpo_grad"], c["keep_grpo"]))
    loss_grpo_err = abs(g["loss_grpo"] + c["J_grpo"].mean()) / abs(c["J_grpo"].mean())
    # the registered fiberpo loss at k = T (Eq. 10 proper): value and fiber clip fraction vs the reference at k = T
    lr = torch.from_numpy(g["lr"])
    adv = torch.from_numpy(np.broadcast_to(g["A"], lr.shape).copy())
    cfg = {"fiberpo_eps": FIG4["eps"], "fiberpo_c_pos": FIG4["C_pos"], "fiberpo_c_neg": FIG4["C_neg"]}
    value, metrics = get_policy_loss("fiberpo")((-lr).clamp(max=0.0), lr.clamp(max=0.0), adv, torch.ones_like(lr),
                                                "seq-mean-token-mean", cfg)
    c10 = fig4_curves(k=FIG4["T"])
    loss_fp_err = abs(float(value) + c10["J"].mean()) / abs(c10["J"].mean())
    clip_err = abs(float(metrics["actor/pg_clipfrac"]) - float(np.mean(~c10["keep_fiberpo"])))
    # features from the torch arrays
    cg = dict(c)
    cg["J"] = (g["G"] * g["A"]).mean(1)
    cg["keep_fiberpo"] = own > 0.5
    cg["keep_grpo"] = g["keep_grpo_grad"]
    fg, fn = fig4_features(cg), fig4_features(c)
    same = all(fg[s][key] == fn[s][key] for s in "+-" for key in
               ("eps_first", "eps_tokens", "grpo_first", "t_first_max", "superset_violations", "fewer_kept"))
    # k = T (the objective as defined, no decoupled slope): the same ordering and fraction statements
    f10 = fig4_features(c10, k=FIG4["T"])
    k10 = all(abs(f10[s]["eps_first"]) < min(abs(f10[s]["onset_neg"]), abs(f10[s]["onset_pos"])) and f10[s]["fewer_kept"] <= 0
              for s in "+-")
    err = max(err_G, err_own)
    ok = err <= EXACT_TOL and grpo_match and same and loss_grpo_err <= LOSS_TOL and loss_fp_err <= LOSS_TOL \
        and clip_err <= EXACT_TOL and k10
    p = fg["+"]
    return Evidence(passed=ok, max_error=err, tolerance=EXACT_TOL, cases=int(g["t"].size),
                    detail=f"{g['t'].size} values of t: torch 𝒢 (k = 32) = reference within {err_G:.1e}; autograd term (a) "
                           f"= 𝕀[|u| ≤ ε] within {err_own:.1e}; GRPO gradient ≠ 0 ⇔ |r - 1| ≤ ε on every token: "
                           f"{grpo_match}; registered losses vs the mean objectives: grpo_rgf {loss_grpo_err:.1e}, fiberpo "
                           f"(k = T) {loss_fp_err:.1e}, its pg_clipfrac {clip_err:.1e}; features from torch = reference: "
                           f"{same} (first ε-clip t = {_fmt(p['eps_first'])}, first peak t = {_fmt(p['t_first_max'])}); with "
                           f"k = T = 10 the ε-clip still precedes both onsets and the fraction statement holds: {k10}")


# ---------------------------------------------------------------------------------------------------------------
# fiberpo_domain.decoupling
# ---------------------------------------------------------------------------------------------------------------

DOMAIN_EPS, DOMAIN_C_POS, DOMAIN_C_NEG = 0.03, 0.2, 0.12


def _hierarchy(rng, scale=0.01):
    """Ragged batch: 4–7 trajectories of 2–6 tokens, random prompt groups in 2 domains, log r ~ N(drift, scale)."""
    n_t = int(rng.integers(4, 8))
    lengths = rng.integers(2, 7, size=n_t)
    ids = np.repeat(np.arange(n_t), lengths)
    g_of_t = rng.integers(0, max(2, n_t // 2), size=n_t)
    d_of_g = rng.integers(0, 2, size=g_of_t.max() + 1)
    lr = rng.normal(0, scale, size=n_t)[ids] + rng.normal(0, scale, size=ids.size)
    return lr, ids, g_of_t[ids], d_of_g[g_of_t[ids]]


def level_deviations(log_r, traj_ids, group_ids, domain_ids):
    """Per token, per channel ±: (log s_D, log s_g - log s_D, log s_τ - log s_g), from the tokens directly: log s_τ
    is the channel mean over τ's tokens (Eq. 9), log s_g the mean of log s_τ over g's trajectories and log s_D over
    D's trajectories (Eq. 33: trajectory means, not token means)."""
    lr = np.asarray(log_r, dtype=float)
    out = {}
    for sgn in (+1, -1):
        part = np.maximum(sgn * lr, 0.0)
        s_t = {t: part[traj_ids == t].mean() for t in np.unique(traj_ids)}
        trajs_of = lambda ids, key: np.unique(traj_ids[ids == key])   # noqa: E731
        s_g = {g: np.mean([s_t[t] for t in trajs_of(group_ids, g)]) for g in np.unique(group_ids)}
        s_d = {d: np.mean([s_t[t] for t in trajs_of(domain_ids, d)]) for d in np.unique(domain_ids)}
        out[sgn] = np.array([[s_d[d], s_g[g] - s_d[d], s_t[t] - s_g[g]]
                             for t, g, d in zip(traj_ids, group_ids, domain_ids)]).T
    return out


def _level_factors(lr, ids, gid, did, C_pos=DOMAIN_C_POS, C_neg=DOMAIN_C_NEG):
    """Eq. 31's level factors g_agg(argument) per channel from the reference, and whether all levels pass."""
    p = ref_fiberpo.fiberpo_domain_parts(lr, ids, gid, did, DOMAIN_EPS, C_pos, C_neg)
    ti = p["traj_index"]                                                   # levels are per trajectory
    fac = {s: np.array([ref_fiberpo.g_agg(a, C, T)[ti] for a, C, T in p["levels"][s]]) for s in (+1, -1)}
    passing = all(np.all(ref_fiberpo.g_agg_regime(a, C, T) == ref_fiberpo.PASS) for s in (+1, -1) for a, C, T in p["levels"][s])
    return fac, passing, p


@domain_decoupling.check("numerics", name="level_factors_are_centred_means")
def _domain_decoupling_numerics() -> Evidence:
    """40 pass-through hierarchies: every level factor = the independently computed deviation from the parent
    mean; a drift shared by a group (domain) leaves the trajectory (and group) factors unchanged and moves the
    parent factors by the predicted amounts; 𝒢 = r on fully unclipped trajectories. Controls: the token-weighted
    group mean is not what cancels; a group level in rollback breaks the decomposition."""
    rng = np.random.default_rng(SEED + 11)
    err = {"factors": 0.0, "shift_g": 0.0, "shift_d": 0.0, "G": 0.0}
    n = n_tok = 0
    token_weighted_gap = 0.0
    while n < 40:
        lr, ids, gid, did = _hierarchy(rng)
        fac, passing, p = _level_factors(lr, ids, gid, did)
        if not passing:
            continue
        n += 1
        dev = level_deviations(lr, ids, gid, did)
        err["factors"] = max(err["factors"], *(float(np.max(np.abs(fac[s] - dev[s]))) for s in (+1, -1)))
        # token-weighted group means (a mutation of Eq. 33) differ when lengths differ
        for s in (+1, -1):
            part = np.maximum(s * lr, 0.0)
            tw = np.array([part[gid == g].mean() for g in gid])
            tm = dev[s][0] + dev[s][1]                                    # log s_g
            token_weighted_gap = max(token_weighted_gap, float(np.max(np.abs(tw - tm))))
        # a drift shared by group g: make g's tokens positive, add c to each (log s+_τ += c for τ ∈ g)
        g = gid[0]
        c = 0.004
        lr_g = np.where(gid == g, np.abs(lr) + 1e-3, lr)
        lr_g2 = np.where(gid == g, lr_g + c, lr_g)
        f1, ok1, _ = _level_factors(lr_g, ids, gid, did)
        f2, ok2, _ = _level_factors(lr_g2, ids, gid, did)
        if ok1 and ok2:
            D = did[0]
            nt = lambda mask: np.unique(ids[mask]).size                   # noqa: E731
            share = nt(gid == g) / nt(did == D)
            in_d = did == D
            exp_grp = np.where(gid == g, c * (1 - share), np.where(in_d, -c * share, 0.0))
            exp_dom = np.where(in_d, c * share, 0.0)
            err["shift_g"] = max(err["shift_g"], float(np.max(np.abs(f2[+1][2] - f1[+1][2]))),
                                 float(np.max(np.abs(f2[+1][1] - f1[+1][1] - exp_grp))),
                                 float(np.max(np.abs(f2[+1][0] - f1[+1][0] - exp_dom))),
                                 float(np.max(np.abs(f2[-1] - f1[-1]))))
        # a drift shared by domain D: trajectory and group factors unchanged, the domain factor moves by c
        D = did[0]
        lr_d = np.where(did == D, np.abs(lr) + 1e-3, lr)
        f1, ok1, _ = _level_factors(lr_d, ids, gid, did)
        f2, ok2, _ = _level_factors(np.where(did == D, lr_d + c, lr_d), ids, gid, did)
        if ok1 and ok2:
            err["shift_d"] = max(err["shift_d"], float(np.max(np.abs(f2[+1][1:] - f1[+1][1:]))),
                                 float(np.max(np.abs(f2[+1][0] - f1[+1][0] - np.where(did == D, c, 0.0)))))
        # fully unclipped trajectories: 𝒢 = r
        fp = ref_fiberpo.fiberpo_parts(lr, ids, DOMAIN_EPS, DOMAIN_C_POS, DOMAIN_C_NEG)
        unclipped = (np.abs(fp.u) <= DOMAIN_EPS) & (np.abs(fp.v) <= DOMAIN_EPS)
        full = np.array([unclipped[ids == t].all() for t in ids])
        G = ref_fiberpo.fiberpo_domain_gated_ratio(lr, ids, gid, did, DOMAIN_EPS, DOMAIN_C_POS, DOMAIN_C_NEG)
        if full.any():
            n_tok += int(full.sum())
            err["G"] = max(err["G"], float(np.max(np.abs(G[full] / np.exp(lr[full]) - 1))))
    # control: group level in rollback (fiberpo_domain.reductions' example) — the group factor is not s_g - s_D
    lr, ids, gid, did = _rollback_example()
    fac, passing, _ = _level_factors(lr, ids, gid, did, 0.2, 0.1)
    dev = level_deviations(lr, ids, gid, did)
    broken = float(np.max(np.abs(fac[+1][1] - dev[+1][1])))
    e = max(err.values())
    ok = e <= EXACT_TOL and n_tok > 50 and token_weighted_gap > 1e-4 and not passing and broken > 1e-2
    return Evidence(passed=ok, max_error=e, tolerance=EXACT_TOL, cases=n + n_tok,
                    detail=f"{n} pass-through hierarchies (4–7 trajectories, 2 domains): level factors = centred means "
                           f"within {err['factors']:.1e}; group-shared drift c = {c}: trajectory factors unchanged, group/"
                           f"domain factors move by c(1 - n_g/n_D), -c n_g/n_D, c n_g/n_D within {err['shift_g']:.1e}; "
                           f"domain-shared drift moves only the domain factor, by c, within {err['shift_d']:.1e}; "
                           f"𝒢 = r on {n_tok} tokens of unclipped trajectories within {err['G']:.1e}. Controls: the "
                           f"token-weighted group mean differs from Eq. 33's by up to {token_weighted_gap:.1e}; with the "
                           f"group level in rollback its factor misses s_g - s_D by {broken:.3f}")


def _rollback_example():
    """One domain, two groups; group 0 (trajectories 0, 1) drifts up by ≈ 0.3 per token, so its group argument 0.225
    lies in the rollback band (0.2, 0.233) with C+ = 0.2 (fiberpo_domain.reductions' example)."""
    lr = np.concatenate([[0.30, 0.28, 0.32, 0.31, 0.29, 0.30],
                         0.002 * np.array([1, -1, 0.5, -0.5, 1, 1, -1, 0.5, -1, 0.5, 1, -0.5])])
    ids = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7])
    return lr, ids, (ids >= 2).astype(int), np.zeros(ids.size, dtype=int)


def _padded(lr, ids):
    """Flat tokens → [B, L] rows (one per trajectory) with a mask."""
    labels = np.unique(ids)
    L = max(int(np.sum(ids == t)) for t in labels)
    out, mask = np.zeros((labels.size, L)), np.zeros((labels.size, L))
    for b, t in enumerate(labels):
        v = lr[ids == t]
        out[b, :v.size], mask[b, :v.size] = v, 1.0
    return out, mask


@domain_decoupling.check("gpu", name="torch_fiberpo_domain_pass_through")
def _domain_decoupling_gpu() -> Evidence:
    """The PyTorch fiberpo_domain gate on pass-through hierarchies: 𝒢 = reference; log w^Base = log s+_τ - log s-_τ
    (telescoped); autograd ∂ log 𝒢_i/∂ log r_j = 0 for j in another trajectory (the group/domain aggregates are in
    the graph but cancel) and = the FiberPO block inside; the registered loss is the unclipped surrogate
    -Σ rÂ/(|Tj|T_τ) when no token clips. Control: a group level in rollback couples trajectories."""
    rng = np.random.default_rng(SEED + 12)
    err_G = err_w = err_cross = err_block = err_loss = 0.0
    n = 0
    cfg = {"fiberpo_eps": DOMAIN_EPS, "fiberpo_c_pos": DOMAIN_C_POS, "fiberpo_c_neg": DOMAIN_C_NEG}
    while n < 12:
        lr, ids, gid, did = _hierarchy(rng)
        _, passing, _ = _level_factors(lr, ids, gid, did)
        if not passing:
            continue
        n += 1
        x, m = _padded(lr, ids)
        labels = np.unique(ids)
        g_row = np.array([gid[ids == t][0] for t in labels])
        d_row = np.array([did[ids == t][0] for t in labels])
        gseg, dseg = torch.from_numpy(g_row), torch.from_numpy(d_row)
        ng, nd = int(g_row.max()) + 1, int(d_row.max()) + 1
        mt = torch.from_numpy(m)

        def gate(z):
            return GF.fiberpo_domain_gated_ratio(z, mt, gseg, dseg, ng, nd, DOMAIN_EPS, (DOMAIN_C_POS,) * 3,
                                                 (DOMAIN_C_NEG,) * 3)

        xt = torch.from_numpy(x)
        out = gate(xt)
        ref = ref_fiberpo.fiberpo_domain_gated_ratio(lr, ids, gid, did, DOMAIN_EPS, DOMAIN_C_POS, DOMAIN_C_NEG)
        mb = m.astype(bool)
        order = np.concatenate([np.flatnonzero(ids == t) for t in labels])   # row-major token order
        err_G = max(err_G, float(np.max(np.abs(out["G"].numpy()[mb] / ref[order] - 1))))
        err_w = max(err_w, float((out["log_w"] - (out["ls_pos"] - out["ls_neg"])).abs().max()))
        jac = torch.autograd.functional.jacobian(lambda z: torch.log(gate(z)["G"]), xt).numpy()
        rows = np.repeat(np.arange(labels.size)[:, None], x.shape[1], 1)
        R = rows[mb]
        Jm = jac[mb][:, mb]                                                  # tokens × tokens
        err_cross = max(err_cross, float(np.max(np.abs(Jm[R[:, None] != R[None, :]]), initial=0.0)))
        Jfp = ref_fiberpo.jacobian_eq20(lr[order], ids[order], DOMAIN_EPS, DOMAIN_C_POS, DOMAIN_C_NEG)
        Jfp = Jfp * np.exp(lr[order])[None, :] / ref_fiberpo.fiberpo_gated_ratio(lr[order], ids[order], DOMAIN_EPS,
                                                                      DOMAIN_C_POS, DOMAIN_C_NEG)[:, None]
        err_block = max(err_block, float(np.max(np.abs(Jm - Jfp))))
        adv = np.repeat(rng.standard_normal((labels.size, 1)), x.shape[1], 1)
        fp = ref_fiberpo.fiberpo_parts(lr, ids, DOMAIN_EPS, DOMAIN_C_POS, DOMAIN_C_NEG)
        if np.all(np.abs(fp.u) <= DOMAIN_EPS) and np.all(np.abs(fp.v) <= DOMAIN_EPS):
            value, _ = get_policy_loss("fiberpo_domain")((-xt).clamp(max=0.0), xt.clamp(max=0.0), torch.from_numpy(adv),
                                                         mt, "seq-mean-token-mean", cfg, group_ids=gseg, domain_ids=dseg)
            T = m.sum(1, keepdims=True)
            surrogate = float(np.sum(np.exp(x) * adv * m / T) / labels.size)
            err_loss = max(err_loss, abs(float(value) + surrogate) / max(1.0, abs(surrogate)))
    # control: the group level in rollback — cross-trajectory entries appear
    lr, ids, gid, did = _rollback_example()
    x, m = _padded(lr, ids)
    g_row, d_row = np.array([0, 0, 1, 1, 1, 1, 1, 1]), np.zeros(8, dtype=int)
    mt = torch.from_numpy(m)
    jac = torch.autograd.functional.jacobian(
        lambda z: torch.log(GF.fiberpo_domain_gated_ratio(z, mt, torch.from_numpy(g_row), torch.from_numpy(d_row), 2, 1,
                                                          DOMAIN_EPS, (0.2,) * 3, (0.1,) * 3)["G"]),
        torch.from_numpy(x)).numpy()
    cross_rb = float(np.max(np.abs(jac[0, :, 2:, :])))
    e = max(err_G, err_w, err_cross, err_block)
    ok = e <= EXACT_TOL and err_loss <= LOSS_TOL and cross_rb > 1e-2
    return Evidence(passed=ok, max_error=e, tolerance=EXACT_TOL, cases=n + 1,
                    detail=f"{n} pass-through hierarchies through fiberlab.gpu.fiberpo: 𝒢 = reference within {err_G:.1e}; "
                           f"log w^Base = log s+_τ - log s-_τ within {err_w:.1e}; autograd cross-trajectory entries "
                           f"≤ {err_cross:.1e}, same-trajectory block = FiberPO's Eq. 20 within {err_block:.1e}; registered "
                           f"loss = -unclipped surrogate within {err_loss:.1e}. Control (group level in rollback): "
                           f"|∂ log 𝒢/∂ log r| from trajectory 0 to the others up to {cross_rb:.3f}")
