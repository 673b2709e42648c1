"""Regenerate the frozen reference fixtures of the survival numerics (tests/reference/*.json).

    PYTHONPATH=. python tests/reference/make_fixtures.py

Like torchsurv's tests against fixtures computed once with R's ``survival``/``survAUC``, the
expected values here come from the reference Python libraries (lifelines, scikit-survival,
torchsurv), computed once on small seeded data sets and written with their inputs, so that
tests/test_metrics.py and tests/test_cox_loss.py compare ecg-dan's functions to them without
importing those libraries. Nothing from ecg_dan is imported here: every expected value is a
reference library's output (or the textbook formula stated next to it, checked against the
library before it is written).

Each data set has a training sample (time, event, log-risk) and a test sample:

* ``ties``: integer times 1..10 (tied event times), risks rounded to 0.1 (tied risks);
* ``heavy_censoring``: continuous-ish times (0.1 grid), about 75% censored;
* ``no_ties``: all times distinct, all risks distinct, about 30% censored;
* ``tied_event_censor``: times 1..5, every time holds events *and* censorings.

The inputs are rounded before any reference value is computed, so the stored inputs are exactly
the computed ones. The training sample always ends with a censoring after the largest time of
both samples, so scikit-survival's censoring distribution is defined, and positive, at every
test time.

Expected values (``expected`` in the JSON):

* ``harrell_test``/``harrell_train``: ``lifelines.utils.concordance_index(time, -risk, event)``,
  with ``harrell_counts_test`` = lifelines' (concordant, tied, comparable) pair counts;
* ``uno``/``uno_tau``: ``sksurv.metrics.concordance_index_ipcw(train, test, risk, tau)[0]``
  with ``tau=None`` and ``tau=inputs.tau``;
* ``td_auc``/``td_auc_mean``: ``sksurv.metrics.cumulative_dynamic_auc`` at ``inputs.auc_times``;
* ``brier``/``ibs``: ``sksurv.metrics.brier_score`` / ``integrated_brier_score`` at
  ``inputs.brier_times`` for the survival matrix ``inputs.surv`` (rows: test samples), which is
  scikit-survival's Breslow survival ``exp(-H0(t) exp(risk))`` rounded to 6 decimals and then
  used as an input as is;
* ``km``: lifelines ``KaplanMeierFitter`` on the training sample at ``inputs.km_grid``;
  ``censoring_km``: scikit-survival ``CensoringDistributionEstimator`` at the same grid;
* ``breslow_times``/``breslow_cumhaz``: scikit-survival ``BreslowEstimator`` fitted with the
  training log-risk as the linear predictor, i.e.
  ``H0(t) = sum_{t_k <= t} d_k / sum_{j: t_j >= t_k} exp(eta_j)`` at the unique training times
  (the formula is evaluated here too and must agree to 1e-12);
* ``cox_nll_breslow``/``cox_nll_efron``: torchsurv's Cox negative partial log-likelihood
  (``neg_partial_log_likelihood(log_risk, event, time, ties_method, reduction="sum")``) on the
  training sample, divided by the number of events (ecg-dan's reduction), evaluated in float64
  (see ``_torchsurv_nll``); ``cox_nll_efron_lifelines``: minus lifelines' Efron partial
  log-likelihood at beta = 1 for the covariate ``log_risk``, over the number of events (must
  agree with torchsurv's Efron value to 1e-10 before anything is written).
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

import lifelines
import numpy as np
import pandas as pd
import sksurv
import torch
import torchsurv
from lifelines import KaplanMeierFitter
from lifelines.fitters.coxph_fitter import SemiParametricPHFitter
from lifelines.utils import concordance_index
from lifelines.utils.concordance import _concordance_summary_statistics
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.metrics import (
    brier_score,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv
from torchsurv.loss.cox import (
    _partial_likelihood_breslow,
    _partial_likelihood_cox,
    _partial_likelihood_efron,
    neg_partial_log_likelihood,
)

HERE = Path(__file__).resolve().parent
SIG = 13  # significant digits of the expected values (inputs are rounded more coarsely)


def _r(x: float) -> float:
    return float(f"{float(x):.{SIG}g}")


def _rl(a) -> list[float]:
    return [_r(v) for v in np.asarray(a, dtype=float).ravel()]


def _sample(rng: np.random.Generator, kind: str, n: int) -> tuple[np.ndarray, ...]:
    if kind == "ties":
        time = rng.integers(1, 11, n).astype(float)
        event = rng.random(n) < 0.6
        risk = np.round(rng.normal(size=n), 1)
    elif kind == "heavy_censoring":
        risk = np.round(rng.normal(size=n), 3)
        t_ev = rng.exponential(8.0 * np.exp(-risk))
        t_c = rng.exponential(2.5, n)
        time = np.maximum(np.round(np.minimum(t_ev, t_c), 1), 0.1)
        event = t_ev <= t_c
    elif kind == "no_ties":
        time = np.round(rng.permutation(np.arange(1, 3 * n + 1))[:n] * 0.5, 1)
        event = rng.random(n) < 0.7
        risk = np.round(rng.permutation(np.linspace(-2.0, 2.0, 4 * n))[:n], 4)
    elif kind == "tied_event_censor":
        time = np.repeat(np.arange(1.0, 6.0), -(-n // 5))[:n]
        event = np.tile([True, False], -(-n // 2))[:n]
        perm = rng.permutation(n)
        time, event = time[perm], event[perm]
        risk = np.round(rng.normal(size=n) - 0.2 * time, 2)
    else:
        raise ValueError(kind)
    return time, event, risk


def _torchsurv_nll(log_risk: np.ndarray, time: np.ndarray, event: np.ndarray
                   ) -> dict[str, float]:
    """torchsurv's Cox NLL (sum over events / number of events) in float64.

    ``neg_partial_log_likelihood`` casts its input to float32 (its value is good to ~1e-7
    only), so the fixture takes torchsurv's own partial-likelihood terms on float64 tensors,
    exactly as that function combines them (sorted by time; the tie method only when event
    times tie), and checks the public function against them to float32 precision.
    """
    lr, ev, tt = torch.tensor(log_risk), torch.tensor(event), torch.tensor(time)
    t_sorted, idx = torch.sort(tt)
    lr_s, ev_s = lr[idx], ev[idx]
    has_ties = len(torch.unique(t_sorted[ev_s])) != int(ev_s.sum())
    out = {}
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torchsurv's Breslow terms start from torch.zeros
    try:
        for ties in ("breslow", "efron"):
            if not has_ties:
                pll = _partial_likelihood_cox(lr_s, ev_s, False)
            elif ties == "efron":
                pll = _partial_likelihood_efron(lr_s, ev_s, t_sorted, False)
            else:
                pll = _partial_likelihood_breslow(lr_s, ev_s, t_sorted, False)
            assert pll.dtype == torch.float64
            out[ties] = -pll.sum().item() / event.sum()
    finally:
        torch.set_default_dtype(default)
    for ties in ("breslow", "efron"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchsurv warns about ties
            public = neg_partial_log_likelihood(lr, ev, tt, ties_method=ties, reduction="sum")
        assert abs(public.item() / event.sum() - out[ties]) < 1e-6 * abs(out[ties]), ties
    return out


def _dataset(name: str, seed: int, n_train: int = 24, n_test: int = 18) -> dict:
    rng = np.random.default_rng(seed)
    tr_t, tr_e, tr_r = _sample(rng, name, n_train)
    te_t, te_e, te_r = _sample(rng, name, n_test)
    if name == "no_ties":  # distinct across the two samples too
        te_t = te_t + 0.25
    # the last training sample: a censoring after the largest time of both samples
    tr_t[-1] = max(tr_t.max(), te_t.max()) + 1.0
    tr_e[-1] = False
    assert te_e.any() and tr_e.sum() >= 2

    q = np.quantile(te_t, [0.25, 0.5, 0.75])
    auc_times = np.unique(np.round(q, 1))
    bt = np.quantile(te_t, [0.2, 0.4, 0.6, 0.8])
    brier_times = np.unique(np.round(bt, 1))
    tau = float(np.round(np.quantile(te_t, 0.7), 1))
    km_grid = np.unique(np.r_[0.0, np.quantile(tr_t, [0.1, 0.3, 0.5, 0.7, 0.9]).round(2),
                              np.unique(tr_t)[::3], tr_t.max()])

    y_tr, y_te = Surv.from_arrays(tr_e, tr_t), Surv.from_arrays(te_e, te_t)

    breslow = BreslowEstimator().fit(tr_r, tr_e, tr_t)
    h_x, h_y = breslow.cum_baseline_hazard_.x, breslow.cum_baseline_hazard_.y
    # the textbook formula, to state what the fixture holds
    direct = np.cumsum([tr_e[tr_t == t].sum() / np.exp(tr_r[tr_t >= t]).sum() for t in h_x])
    np.testing.assert_allclose(h_y, direct, rtol=1e-12)
    surv = np.round(np.stack([fn(brier_times)
                              for fn in breslow.get_survival_function(te_r)]), 6)

    c_corr, c_tied, c_pairs = _concordance_summary_statistics(te_t, -te_r, te_e)

    cdist = CensoringDistributionEstimator().fit(y_tr)
    kmf = KaplanMeierFitter().fit(tr_t, tr_e)
    auc, auc_mean = cumulative_dynamic_auc(y_tr, y_te, te_r, auc_times)
    _, bs = brier_score(y_tr, y_te, surv, brier_times)

    nll = _torchsurv_nll(tr_r, tr_t, tr_e)
    order = np.argsort(tr_t, kind="stable")
    _, _, loglik = SemiParametricPHFitter()._get_efron_values_single(
        pd.DataFrame({"x": tr_r[order]}), pd.Series(tr_t[order]), pd.Series(tr_e[order]),
        pd.Series(np.ones(n_train)), None, np.array([1.0]))
    assert abs(-loglik / tr_e.sum() - nll["efron"]) < 1e-10, (loglik, nll)

    return {
        "name": name,
        "seed": seed,
        "inputs": {
            "train_time": tr_t.tolist(), "train_event": tr_e.astype(int).tolist(),
            "train_risk": tr_r.tolist(),
            "test_time": te_t.tolist(), "test_event": te_e.astype(int).tolist(),
            "test_risk": te_r.tolist(),
            "tau": tau, "auc_times": auc_times.tolist(), "brier_times": brier_times.tolist(),
            "km_grid": km_grid.tolist(), "surv": surv.tolist(),
        },
        "expected": {
            "harrell_test": _r(concordance_index(te_t, -te_r, te_e)),
            "harrell_train": _r(concordance_index(tr_t, -tr_r, tr_e)),
            "harrell_counts_test": [int(c_corr), int(c_tied), int(c_pairs)],
            "uno": _r(concordance_index_ipcw(y_tr, y_te, te_r)[0]),
            "uno_tau": _r(concordance_index_ipcw(y_tr, y_te, te_r, tau=tau)[0]),
            "td_auc": _rl(auc), "td_auc_mean": _r(auc_mean),
            "brier": _rl(bs), "ibs": _r(integrated_brier_score(y_tr, y_te, surv, brier_times)),
            "km": _rl(kmf.survival_function_at_times(km_grid).to_numpy()),
            "censoring_km": _rl(cdist.predict_proba(km_grid)),
            "breslow_times": h_x.tolist(), "breslow_cumhaz": _rl(h_y),
            "cox_nll_breslow": _r(nll["breslow"]), "cox_nll_efron": _r(nll["efron"]),
            "cox_nll_efron_lifelines": _r(-loglik / tr_e.sum()),
        },
    }


DATASETS = {"ties": 11, "heavy_censoring": 12, "no_ties": 13, "tied_event_censor": 14}


def main() -> None:
    versions = {"lifelines": lifelines.__version__, "scikit-survival": sksurv.__version__,
                "torchsurv": torchsurv.__version__, "numpy": np.__version__,
                "torch": torch.__version__, "pandas": pd.__version__,
                "python": platform.python_version()}
    for name, seed in DATASETS.items():
        doc = {"format": "ecg-dan-survival-reference", "version": 1,
               "generated_by": "tests/reference/make_fixtures.py", "libraries": versions,
               **_dataset(name, seed)}
        path = HERE / f"survival_{name}.json"
        path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{path.relative_to(HERE.parents[1])}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
