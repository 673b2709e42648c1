"""Text recipes: how a PTB-XL record becomes weighted texts to embed.

A recipe maps one record to a list of ``(text, weight)`` pairs; the record's text
embedding is the weight-normalised mean of the embeddings of those texts. Both the
paper's structured statements (several weighted texts) and the raw report (one text)
fit this single path, and a new recipe is one decorated function::

    @register_recipe("my_recipe")
    def my_recipe(record: Record, statements: pd.DataFrame) -> list[tuple[str, float]]:
        ...
"""

from __future__ import annotations

import ast
import json
import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

CATEGORY_COLUMN = "Statement Category"
DESCRIPTION_COLUMN = "SCP-ECG Statement Description"
# PTB-XL's SCP statements, shipped as package data of data_modules (also in a wheel).
STATEMENTS_CSV = Path(str(resources.files("data_modules") / "resources" / "scp_statements.csv"))


class RecipeError(ValueError):
    """A record cannot be turned into text (unknown code, no usable codes, bad input)."""


@dataclass(frozen=True)
class Record:
    """The fields a recipe may use. ``record_id`` only serves error messages."""

    record_id: Any
    scp_codes: dict[str, float]
    report: str


Recipe = Callable[[Record, pd.DataFrame], list[tuple[str, float]]]
RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str) -> Callable[[Recipe], Recipe]:
    """Decorator adding a recipe to :data:`RECIPES` under ``name``."""

    def deco(fn: Recipe) -> Recipe:
        if name in RECIPES and RECIPES[name] is not fn:
            raise ValueError(f"text recipe {name!r} is already registered")
        RECIPES[name] = fn
        return fn

    return deco


def get_recipe(name: str) -> Recipe:
    """Look a recipe up, listing the known ones when the name is wrong."""
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown text recipe {name!r}; known: {sorted(RECIPES)}") from None


def load_statements(path: str | Path | None = None) -> pd.DataFrame:
    """Read ``scp_statements.csv`` indexed by SCP code (default: the copy shipped here)."""
    df = pd.read_csv(path or STATEMENTS_CSV, index_col=0)
    missing = {CATEGORY_COLUMN, DESCRIPTION_COLUMN} - set(df.columns)
    if missing:
        raise ValueError(f"{path or STATEMENTS_CSV} lacks columns {sorted(missing)}")
    return df


def statement_texts(statements: pd.DataFrame) -> dict[str, str]:
    """SCP code -> ``"<Statement Category>: <SCP-ECG Statement Description>"``.

    Memoised per table object (tables are treated as read-only): a ``.loc`` lookup per code
    would dominate the run time at PTB-XL scale (~50,000 codes).
    """
    key = id(statements)
    hit = _TEXTS_MEMO.get(key)
    if hit is not None and hit[0]() is statements:
        return hit[1]
    cat = statements[CATEGORY_COLUMN].astype(str).str.strip()
    desc = statements[DESCRIPTION_COLUMN].astype(str).str.strip()
    texts = dict(zip(statements.index.astype(str), cat + ": " + desc))
    for dead in [k for k, (ref, _) in _TEXTS_MEMO.items() if ref() is None]:
        del _TEXTS_MEMO[dead]
    _TEXTS_MEMO[key] = (weakref.ref(statements), texts)
    return texts


_TEXTS_MEMO: dict[int, tuple[weakref.ref, dict[str, str]]] = {}


def statement_text(code: str, statements: pd.DataFrame) -> str:
    """``"<Statement Category>: <SCP-ECG Statement Description>"`` for one SCP code."""
    return statement_texts(statements)[code]


def parse_scp_codes(value: Mapping[str, float] | str, record_id: Any = None) -> dict[str, float]:
    """Accept a dict, the cache's JSON string, or PTB-XL's Python-literal string."""
    if isinstance(value, Mapping):
        raw = dict(value)
    elif isinstance(value, str):
        try:
            raw = json.loads(value)
        except json.JSONDecodeError:
            try:
                raw = ast.literal_eval(value)
            except (ValueError, SyntaxError) as err:
                raise RecipeError(f"record {record_id}: cannot parse scp_codes {value!r}") from err
    else:
        raise RecipeError(f"record {record_id}: scp_codes must be a dict or string, got {value!r}")
    if not isinstance(raw, dict):
        raise RecipeError(f"record {record_id}: scp_codes is not an object: {value!r}")
    out: dict[str, float] = {}
    for code, p in raw.items():
        try:
            lik = float(p)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"record {record_id}: likelihood of {code!r} is {p!r}") from err
        if not math.isfinite(lik) or lik < 0:
            raise RecipeError(f"record {record_id}: likelihood of {code!r} is {p!r}")
        out[str(code)] = lik
    return out


@register_recipe("scp_structured")
def scp_structured(record: Record, statements: pd.DataFrame) -> list[tuple[str, float]]:
    """The paper's recipe: one statement per SCP code, weighted by its likelihood.

    Codes with likelihood 0 are dropped. When no code has a positive likelihood (docs/method.md
    leaves this open) every code gets weight 1, i.e. an equal-weight mean, because a
    record's codes still describe it even when the cardiologist gave no likelihood. A
    record without any code is an error: there is nothing truthful to embed.
    """
    codes = record.scp_codes
    if not codes:
        raise RecipeError(f"record {record.record_id}: has no SCP codes to build statements from")
    texts = statement_texts(statements)
    unknown = [c for c in codes if c not in texts]
    if unknown:
        raise RecipeError(
            f"record {record.record_id}: unknown SCP code(s) {unknown} (not in scp_statements.csv)"
        )
    positive = {c: p for c, p in codes.items() if p > 0}
    weighted = positive if positive else {c: 1.0 for c in codes}
    return [(texts[c], float(p)) for c, p in weighted.items()]


@register_recipe("report_raw")
def report_raw(record: Record, statements: pd.DataFrame) -> list[tuple[str, float]]:
    """The raw-report ablation: the free-text report as written (German/English/Swedish).

    An empty report is embedded as the empty string (one shared "no report" vector) rather
    than failing, since PTB-XL contains a few of them.
    """
    report = record.report
    if report is None or (isinstance(report, float) and math.isnan(report)):
        report = ""
    return [(str(report).strip(), 1.0)]
