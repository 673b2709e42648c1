"""The two survival objectives of finetuning (ecg_dan/losses/objectives.py): the logistic
hazard against pycox on hand-made numbers, head and output shapes, the cut points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_dan.losses.cox import cox_ph_loss
from ecg_dan.losses.objectives import (
    CoxObjective,
    LogisticHazardObjective,
    fit_cuts,
    make_objective,
)

CUTS = [0.0, 2.0, 4.0, 6.0, 8.0]
PHI = torch.tensor([[-2.0, -1.0, 0.5, 1.0, -0.3],
                    [0.1, 0.2, -0.4, 2.0, 1.5],
                    [-1.5, -0.5, -0.2, 0.3, 0.8],
                    [0.7, -0.9, 1.2, -1.1, 0.0]])
# event at 1 -> right cut 2 (idx 1); censored at 3 -> left cut 2 (idx 1); censored beyond the
# last cut -> censored there (idx 4); event exactly on cut 4 -> idx 2.
BATCH = {"time": torch.tensor([1.0, 3.0, 8.5, 4.0]), "event": torch.tensor([1, 0, 0, 1])}
IDX, EV = [1, 1, 4, 2], [1.0, 0.0, 0.0, 1.0]


def test_logistic_hazard_loss_matches_pycox_on_a_hand_made_batch():
    from pycox.models.loss import nll_logistic_hazard
    from pycox.preprocessing.label_transforms import LabTransDiscreteTime

    obj = LogisticHazardObjective(CUTS)
    idx, ev = obj.discretize(BATCH["time"], BATCH["event"])
    assert idx.tolist() == IDX and ev.tolist() == EV
    pidx, pev = LabTransDiscreteTime(np.array(CUTS)).transform(BATCH["time"].double().numpy(),
                                                                BATCH["event"].double().numpy())
    assert pidx.tolist() == IDX and pev.tolist() == EV
    loss = obj.loss(PHI, BATCH)
    want = nll_logistic_hazard(PHI, torch.tensor(IDX), torch.tensor(EV))
    assert torch.allclose(loss, want, atol=0, rtol=1e-6)
    # and by hand: -sum_{k<idx} log(1-h_k) - log(h_idx or 1-h_idx)
    h = torch.sigmoid(PHI.double())
    by_hand = torch.stack([
        -torch.log1p(-h[i, :k]).sum() - (torch.log(h[i, k]) if e else torch.log1p(-h[i, k]))
        for i, (k, e) in enumerate(zip(IDX, EV))]).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_survival_and_risk_of_the_logistic_hazard():
    from pycox.models import LogisticHazard

    obj = LogisticHazardObjective(CUTS)
    surv = obj.survival(PHI)
    identity = torch.nn.Linear(5, 5, bias=False)  # the "network" returns PHI itself
    with torch.no_grad():
        identity.weight.copy_(torch.eye(5))
    pycox_surv = LogisticHazard(identity, duration_index=np.array(CUTS)) \
        .predict_surv(PHI, epsilon=0.0)
    assert torch.allclose(surv, pycox_surv, atol=1e-6)
    assert surv.shape == (4, 5) and (surv.diff(dim=1) <= 0).all()
    assert ((surv > 0) & (surv < 1)).all()
    rmst = (surv[:, :-1] * torch.tensor(np.diff(CUTS) / 8.0, dtype=torch.float32)).sum(1)
    assert torch.allclose(obj.risk(PHI), -rmst)
    # a uniformly higher hazard is a higher risk
    assert (obj.risk(PHI + 1.0) > obj.risk(PHI)).all()


@pytest.mark.parametrize("name", ["cox", "logistic_hazard"])
def test_head_and_output_shapes(name):
    obj = make_objective(name, ties="efron", cuts=CUTS)
    head = obj.head(16)
    out = head(torch.randn(8, 16))
    k = 1 if name == "cox" else len(CUTS)
    assert out.shape == (8, k) and obj.risk(out).shape == (8,)
    batch = {"time": torch.arange(1.0, 9.0), "event": torch.tensor([1, 0] * 4)}
    loss = obj.loss(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    if name == "cox":
        assert obj.cuts is None
        assert torch.equal(loss, cox_ph_loss(out.squeeze(-1), batch["time"], batch["event"]))
        with pytest.raises(NotImplementedError, match="Breslow"):
            obj.survival(out)
    else:
        assert obj.survival(out).shape == (8, len(CUTS))


def test_fit_cuts_and_refusals():
    cuts = fit_cuts(np.array([3.0, 10.0, 7.5, 1.0], dtype=np.float32), [1, 0, 1, 0], 5)
    assert cuts == [0.0, 2.5, 5.0, 7.5, 10.0] and all(type(c) is float for c in cuts)
    with pytest.raises(ValueError, match=">= 2"):
        fit_cuts([1.0, 2.0], [1, 0], 1)
    with pytest.raises(ValueError, match="needs the time cuts"):
        make_objective("logistic_hazard")
    with pytest.raises(ValueError, match="strictly increasing"):
        LogisticHazardObjective([0.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="unknown survival objective"):
        make_objective("deephit", cuts=CUTS)
    assert isinstance(make_objective("cox"), CoxObjective)


def test_baseline_hazards_reproduce_kaplan_meier_of_the_discretised_times():
    """prod_{j<=k} (1 - h_j) of the starting hazards is lifelines' Kaplan-Meier survival of
    the same rows after pycox's discretisation; a head whose last layer has zero weights
    predicts exactly that curve for every ECG."""
    from lifelines import KaplanMeierFitter

    from ecg_dan.losses.objectives import baseline_hazards

    rng = np.random.default_rng(0)
    time = rng.uniform(0.1, 9.0, 300)
    event = rng.random(300) < 0.4
    cuts = fit_cuts(time, event, 6)
    h = np.array(baseline_hazards(cuts, time, event, floor=0.0))
    obj = LogisticHazardObjective(cuts)
    idx, ev = obj.discretize(torch.tensor(time), torch.tensor(event.astype(float)))
    km = KaplanMeierFitter().fit(np.asarray(cuts)[idx.numpy()], ev.numpy())
    want = km.survival_function_at_times(cuts).to_numpy()
    assert np.allclose(np.cumprod(1 - h), want, atol=1e-12)

    floored = baseline_hazards(cuts, time, event)  # default floor keeps logits finite
    head_obj = LogisticHazardObjective(cuts, init_hazards=floored)
    head = head_obj.head(16)
    with torch.no_grad():
        head[-1].weight.zero_()
    head.eval()
    surv = head_obj.survival(head(torch.randn(4, 16)))
    assert torch.allclose(surv, torch.tensor(np.cumprod(1 - np.array(floored)),
                                             dtype=torch.float32).expand(4, -1), atol=1e-6)
    with pytest.raises(ValueError, match="init_hazards"):
        LogisticHazardObjective(cuts, init_hazards=[0.5] * (len(cuts) - 1))
