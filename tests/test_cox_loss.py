"""Cox partial-likelihood loss: values against a direct O(n^2) formula, frozen torchsurv /
lifelines reference values (tests/reference, no import of those libraries) and live torchsurv
(skipped where it is absent), gradients, the no-event case, input validation, and (in a
subprocess) the 2-rank DDP equivalence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_dan.losses import cox_ph_loss

REFERENCE = sorted((Path(__file__).parent / "reference").glob("survival_*.json"))


def _reference_nll(log_risk: np.ndarray, time: np.ndarray, event: np.ndarray, ties: str) -> float:
    """Textbook formula with explicit loops: for each distinct event time t_k with tie set H_k
    (d_k events) and risk set R_k = {j: t_j >= t_k},
    Breslow: sum_{i in H_k} eta_i - d_k log sum_{R_k} e^eta
    Efron:   sum_{i in H_k} eta_i - sum_{l<d_k} log(sum_{R_k} e^eta - l/d_k sum_{H_k} e^eta)."""
    total = 0.0
    for tk in sorted(set(time[event.astype(bool)].tolist())):
        tie_set = [i for i in range(len(time)) if time[i] == tk and event[i]]
        risk_set = [j for j in range(len(time)) if time[j] >= tk]
        d = len(tie_set)
        s = sum(math.exp(log_risk[j]) for j in risk_set)
        t_sum = sum(math.exp(log_risk[i]) for i in tie_set)
        total += sum(log_risk[i] for i in tie_set)
        for l in range(d):
            total -= math.log(s - (l / d) * t_sum) if ties == "efron" else math.log(s)
    return -total / event.sum()


def _live_torchsurv():
    """torchsurv's loss for the live comparisons; they skip where torchsurv is not installed."""
    return pytest.importorskip("torchsurv.loss.cox").neg_partial_log_likelihood


def _data(n: int, seed: int, n_times: int = 8, p_event: float = 0.5):
    rng = np.random.default_rng(seed)
    log_risk = rng.normal(size=n)
    time = rng.integers(1, n_times + 1, size=n).astype(float)  # many ties
    event = (rng.random(n) < p_event).astype(float)
    event[0] = 1.0
    return log_risk, time, event


@pytest.mark.parametrize("ties", ["breslow", "efron"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_formula_with_ties_and_censoring(ties: str, seed: int) -> None:
    lr, t, e = _data(40, seed)
    got = cox_ph_loss(torch.tensor(lr), torch.tensor(t), torch.tensor(e), ties=ties)
    assert got.item() == pytest.approx(_reference_nll(lr, t, e, ties), rel=1e-12, abs=1e-12)


def test_efron_differs_from_breslow_when_event_times_tie() -> None:
    lr, t, e = _data(40, 0, n_times=3, p_event=0.9)
    args = (torch.tensor(lr), torch.tensor(t), torch.tensor(e))
    assert cox_ph_loss(*args, ties="efron").item() < cox_ph_loss(*args, ties="breslow").item()


def test_reference_fixtures_are_present() -> None:
    assert len(REFERENCE) == 4, "run: PYTHONPATH=. python tests/reference/make_fixtures.py"


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_reference_values_of_torchsurv_and_lifelines(path: Path, ties: str) -> None:
    """torchsurv's NLL (sum over events / number of events) and, for Efron, minus lifelines'
    partial log-likelihood, computed once by tests/reference/make_fixtures.py."""
    doc = json.loads(path.read_text())
    inp, exp = doc["inputs"], doc["expected"]
    lr, t, e = (torch.tensor(inp[k], dtype=torch.float64)
                for k in ("train_risk", "train_time", "train_event"))
    got = cox_ph_loss(lr, t, e, ties=ties).item()
    assert got == pytest.approx(exp[f"cox_nll_{ties}"], rel=1e-11)
    if ties == "efron":
        assert got == pytest.approx(exp["cox_nll_efron_lifelines"], rel=1e-11)
    # the fixture is also an independent check of the loop formula used by the other tests
    assert _reference_nll(lr.numpy(), t.numpy(), e.numpy(), ties) == pytest.approx(
        exp[f"cox_nll_{ties}"], rel=1e-11)


@pytest.mark.filterwarnings("ignore:Ties in `time` detected")
@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_matches_torchsurv_sum_over_events(ties: str) -> None:
    neg_partial_log_likelihood = _live_torchsurv()
    # torchsurv's reduction="mean" divides by the number of *distinct* event times when times
    # tie, so compare the sum divided by the number of events. torchsurv computes in float32.
    lr, t, e = _data(64, 3)
    lr_t, t_t, e_t = torch.tensor(lr), torch.tensor(t), torch.tensor(e).bool()
    ref = neg_partial_log_likelihood(lr_t, e_t, t_t, ties_method=ties, reduction="sum") / e.sum()
    got = cox_ph_loss(lr_t, t_t, e_t, ties=ties)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_matches_torchsurv_mean_without_ties() -> None:
    neg_partial_log_likelihood = _live_torchsurv()
    rng = np.random.default_rng(4)
    n = 50
    lr = torch.tensor(rng.normal(size=n))
    t = torch.tensor(rng.permutation(n) + 1.0)
    e = torch.tensor(rng.random(n) < 0.5)
    ref = neg_partial_log_likelihood(lr, e, t, reduction="mean")
    assert cox_ph_loss(lr, t, e).item() == pytest.approx(ref.item(), rel=1e-5)


def test_breslow_equals_efron_without_ties() -> None:
    rng = np.random.default_rng(5)
    n = 30
    lr = torch.tensor(rng.normal(size=n))
    t = torch.tensor(rng.permutation(n) + 1.0)
    e = torch.tensor((rng.random(n) < 0.6).astype(float))
    b = cox_ph_loss(lr, t, e, ties="breslow")
    f = cox_ph_loss(lr, t, e, ties="efron")
    assert b.item() == pytest.approx(f.item(), rel=1e-13)
    assert b.item() == pytest.approx(_reference_nll(lr.numpy(), t.numpy(), e.numpy(), "breslow"))


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_gradcheck_float64(ties: str) -> None:
    lr, t, e = _data(20, 6, n_times=5, p_event=0.7)
    log_risk = torch.tensor(lr, requires_grad=True)
    time, event = torch.tensor(t), torch.tensor(e)
    assert torch.autograd.gradcheck(
        lambda x: cox_ph_loss(x, time, event, ties=ties), (log_risk,), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_shift_invariant_and_stable_for_large_log_risk(ties: str) -> None:
    # exp(800) overflows float64; a log-sum-exp implementation must give the same value as for
    # the unshifted scores (the partial likelihood is invariant to adding a constant).
    lr, t, e = _data(30, 7)
    shifted = cox_ph_loss(torch.tensor(lr + 800.0), torch.tensor(t), torch.tensor(e), ties=ties)
    assert torch.isfinite(shifted)
    assert shifted.item() == pytest.approx(_reference_nll(lr, t, e, ties), rel=1e-9)


def test_extreme_spread_within_tied_events_has_finite_gradient() -> None:
    # one tied event far below the rest of its risk set (exp underflows to 0 relative to it)
    log_risk = torch.tensor([0.0, -900.0, 1.0, 2.0, -1.0], dtype=torch.float64, requires_grad=True)
    time = torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    event = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    loss = cox_ph_loss(log_risk, time, event, ties="efron")
    loss.backward()
    assert torch.isfinite(log_risk.grad).all()
    ref = _reference_nll(log_risk.detach().numpy(), time.numpy(), event.numpy(), "efron")
    assert loss.item() == pytest.approx(ref, rel=1e-12)


def test_order_invariant_and_accepts_column_vectors() -> None:
    lr, t, e = _data(25, 8)
    perm = np.random.default_rng(0).permutation(25)
    b = cox_ph_loss(
        torch.tensor(lr[perm])[:, None], torch.tensor(t[perm])[:, None], torch.tensor(e[perm])
    )
    assert b.item() == pytest.approx(_reference_nll(lr, t, e, "efron"), rel=1e-12)


def test_float32_matches_float64_reference() -> None:
    lr, t, e = _data(200, 9)
    got = cox_ph_loss(torch.tensor(lr, dtype=torch.float32), torch.tensor(t), torch.tensor(e))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_reference_nll(lr, t, e, "efron"), rel=1e-5)


def test_half_precision_input_is_computed_in_float32() -> None:
    lr, t, e = _data(200, 12)
    x = torch.tensor(lr, dtype=torch.bfloat16, requires_grad=True)
    loss = cox_ph_loss(x, torch.tensor(t), torch.tensor(e))
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    ref = _reference_nll(x.detach().double().numpy(), t, e, "efron")
    assert loss.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_no_event_batch_is_attached_zero(ties: str) -> None:
    log_risk = torch.randn(16, dtype=torch.float64, requires_grad=True)
    loss = cox_ph_loss(log_risk, torch.arange(1.0, 17.0), torch.zeros(16), ties=ties)
    assert loss.item() == 0.0
    assert torch.isfinite(loss)
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(log_risk.grad, torch.zeros(16, dtype=torch.float64))


def test_input_validation() -> None:
    lr = torch.zeros(4)
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    e = torch.tensor([1.0, 0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="same length"):
        cox_ph_loss(lr[:3], t, e)
    with pytest.raises(ValueError, match="shape"):
        cox_ph_loss(torch.zeros(4, 2), t, e)
    # value checks: the shared validator's words
    # (data_modules.protocol.survival_arrays.check_survival)
    with pytest.raises(ValueError, match=r"^cox_ph_loss: risk has 1 non-finite value"):
        cox_ph_loss(torch.tensor([0.0, float("nan"), 0.0, 0.0]), t, e)
    with pytest.raises(ValueError, match=r"risk has 1 non-finite"):
        cox_ph_loss(torch.tensor([0.0, 0.0, float("-inf"), 0.0]), t, e)
    with pytest.raises(ValueError, match=r"time has 1 non-finite value\(s\) \(at positions \[1\]"):
        cox_ph_loss(lr, torch.tensor([1.0, float("nan"), 3.0, 4.0]), e)
    with pytest.raises(ValueError, match=r"time has 1 non-finite value\(s\) \(at positions \[3\]"):
        cox_ph_loss(lr, torch.tensor([1.0, 2.0, 3.0, float("inf")]), e)
    with pytest.raises(ValueError, match=r"time must be strictly positive \(at positions \[0\]\)"):
        cox_ph_loss(lr, torch.tensor([0.0, 2.0, 3.0, 4.0]), e)
    with pytest.raises(ValueError, match=r"time must be strictly positive"):
        cox_ph_loss(lr, torch.tensor([1, -2, 3, 4]), e)  # integer times are accepted
    with pytest.raises(ValueError, match=r"event must hold only 0/1, found \[2.0\]"):
        cox_ph_loss(lr, t, torch.tensor([2.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"event must hold only 0/1, found \[nan\]"):
        cox_ph_loss(lr, t, torch.tensor([float("nan"), 0.0, 1.0, 0.0]))
    # bool and integer events, integer times: valid
    ref = _reference_nll(np.zeros(4), t.numpy(), e.numpy(), "efron")
    assert cox_ph_loss(lr, t.long(), e.bool()).item() == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="ties"):
        cox_ph_loss(lr, t, e, ties="exact")  # type: ignore[arg-type]


def test_gather_is_identity_without_distributed() -> None:
    # both paths against the independent loop formula (not against each other)
    lr, t, e = _data(20, 11)
    args = (torch.tensor(lr), torch.tensor(t), torch.tensor(e))
    ref = _reference_nll(lr, t, e, "efron")
    assert cox_ph_loss(*args, gather=True).item() == pytest.approx(ref, rel=1e-12)
    assert cox_ph_loss(*args, gather=False).item() == pytest.approx(ref, rel=1e-12)


def test_two_process_ddp_matches_single_process(ddp_checks) -> None:
    assert "ddp_cox: all checks passed" in ddp_checks.passed("ddp_cox")
