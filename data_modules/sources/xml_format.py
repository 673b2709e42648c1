"""Which ECG XML format a file is, told by its root element (read without parsing the rest):
GE CardioSoft ``CardiologyXML`` (UK Biobank) or GE MUSE ``RestingECG`` (hospital exports);
and the field readers both formats' parsers share."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from data_modules.errors import RecordSkip
from data_modules.limits import check_file_size

XML_FORMATS = {"CardiologyXML": "cardiosoft", "RestingECG": "muse"}  # root element -> format


def xml_format(path: str | os.PathLike, rel: str) -> str:
    """``cardiosoft`` or ``muse`` by the root element of ``path`` (only the first element is
    read); :class:`RecordSkip` naming ``rel`` and the root element for any other XML, or a
    file that is not well-formed XML; :class:`data_modules.limits.LimitExceeded` for one
    over the XML size limit (checked before anything is parsed)."""
    check_file_size(path, "XML_MB", rel)
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            tag = el.tag.rpartition("}")[2]  # without a namespace
            break
        else:
            raise RecordSkip(f"unusable XML: {rel}: no root element")
    except ET.ParseError as e:
        raise RecordSkip(f"unusable XML: {rel}: not well-formed XML ({e})") from None
    except OSError as e:
        raise RecordSkip(f"unusable XML: {rel}: cannot read ({e})") from None
    if tag not in XML_FORMATS:
        raise RecordSkip(f"unknown XML format: {rel}: root element <{tag}> is neither "
                         "CardioSoft <CardiologyXML> nor GE MUSE <RestingECG>")
    return XML_FORMATS[tag]


def parse_xml(path: str | os.PathLike) -> ET.Element:
    """The root of the XML file ``path`` after the size limit (:mod:`data_modules.limits`;
    :class:`LimitExceeded` beyond it, before parsing). Entity expansion is bounded by expat
    itself (its billion-laughs protection, expat >= 2.4); ElementTree never fetches
    external entities."""
    check_file_size(path, "XML_MB", Path(path).name)
    return ET.parse(path).getroot()


def xml_text(el: ET.Element, path: str) -> str | None:
    """The stripped text of ``el/path``; None when the element is absent or empty."""
    t = el.findtext(path)
    return (t.strip() or None) if t is not None else None


def xml_number(el: ET.Element, path: str, file: str | Path, error: type[Exception],
               required: bool = True, prefix: str = "") -> float:
    """The finite float of ``el/path`` (NaN when absent or empty, unless ``required``);
    ``error`` naming the file and ``prefix + path`` when missing, malformed or non-finite."""
    t = xml_text(el, path)
    if t is None:
        if required:
            raise error(f"{file}: {prefix}{path} missing or empty")
        return float("nan")
    try:
        v = float(t)
    except ValueError:
        raise error(f"{file}: {prefix}{path}: malformed number {t!r}") from None
    if not np.isfinite(v):
        raise error(f"{file}: {prefix}{path}: non-finite value {t!r} (NaN/inf)")
    return v
